// A GPU that fails during a generation (the engine throws DeviceError, as
// the CUDA engine does on a sticky CUDA error): the request gets a 503 JSON
// naming the error, /healthz and /readyz turn 503 with the cause, later
// requests are refused the same way, and dropk-serve (RunServe) stops with
// the error so that it exits 1 and is restarted. An engine stands in for the
// GPU, so no GPU is needed.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "base/device_error.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sampler/completions.h"
#include "sampler/http_api.h"
#include "sampler/scheduler.h"
#include "sampler/serve.h"
#include "support/completion_collector.h"
#include "support/tiny_smoke_run.h"
#include "test_util.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

namespace http = boost::beast::http;
using json = nlohmann::json;

constexpr char kCause[] = "cudaErrorIllegalAddress (an illegal memory access was encountered)";

// Forwards to a real engine until `fail_decode` (1-based) decode steps have
// run, then throws DeviceError from that one and from every call after it,
// as a CUDA context does after a sticky error. The failing step first waits
// for `gate`, so a test can queue more work behind it.
class GpuFailingEngine final : public InferenceEngine {
 public:
  GpuFailingEngine(std::unique_ptr<InferenceEngine> inner, int fail_decode,
                   std::atomic<int>* calls_after_failure, std::shared_future<void> gate)
      : inner_(std::move(inner)),
        fail_decode_(fail_decode),
        calls_after_failure_(calls_after_failure),
        gate_(std::move(gate)) {}
  const GptConfig& config() const override { return inner_->config(); }
  int max_slots() const override { return inner_->max_slots(); }
  void Reset(int slot) override { inner_->Reset(slot); }
  int Length(int slot) const override { return inner_->Length(slot); }
  const float* Prefill(int slot, std::span<const int32_t> tokens) override {
    ThrowIfBroken();
    return inner_->Prefill(slot, tokens);
  }
  const float* PrefillMany(std::span<const int> slots,
                           std::span<const std::span<const int32_t>> prompts) override {
    ThrowIfBroken();
    return inner_->PrefillMany(slots, prompts);
  }
  const float* Decode(std::span<const int> slots, std::span<const int32_t> tokens) override {
    ThrowIfBroken();
    if (++decodes_ == fail_decode_) {
      gate_.wait();
      broken_ = true;
      throw DeviceError("cuda inference engine: CachedAttention", kCause);
    }
    return inner_->Decode(slots, tokens);
  }

 private:
  void ThrowIfBroken() {
    if (!broken_) return;
    ++*calls_after_failure_;
    throw DeviceError("cuda inference engine: uploading the step's rows", kCause);
  }
  std::unique_ptr<InferenceEngine> inner_;
  const int fail_decode_;
  std::atomic<int>* calls_after_failure_;
  std::shared_future<void> gate_;
  int decodes_ = 0;
  bool broken_ = false;
};

std::shared_future<void> OpenGate() {
  std::promise<void> open;
  open.set_value();
  return open.get_future().share();
}

// SchedulerOptions whose engines fail at their fail_decode-th decode step
// (once `gate` is ready).
SchedulerOptions FailingGpuOptions(int fail_decode, std::atomic<int>* calls_after_failure,
                                   std::shared_future<void> gate = OpenGate()) {
  SchedulerOptions options{.max_batch = 4, .num_threads = 1};
  options.make_engine =
      [=](const GptConfig& config, std::span<const float> params,
          const InferenceOptions& io) -> absl::StatusOr<std::unique_ptr<InferenceEngine>> {
    absl::StatusOr<std::unique_ptr<InferenceEngine>> inner =
        MakeInferenceEngine(config, params, io);
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<InferenceEngine>(
        new GpuFailingEngine(*std::move(inner), fail_decode, calls_after_failure, gate));
  };
  return options;
}

using Collector = testing::CompletionCollector;

struct Api {
  explicit Api(SchedulerOptions options) {
    scheduler = Scheduler::Create(options, &metrics).value();
    EXPECT_TRUE(scheduler->SetModel(testing::TestSnapshot(3, 64)).ok());
    api = std::make_unique<HttpApi>(HttpApiOptions{}, scheduler.get(), &metrics);
  }
  RouteResult Route(http::verb method, const std::string& target,
                    std::shared_ptr<CompletionListener> listener, const std::string& body = "") {
    HttpRequest req{method, target, 11};
    req.set(http::field::host, "127.0.0.1:8080");  // as every HTTP/1.1 client sends
    req.body() = body;
    req.prepare_payload();
    return api->Route(req, listener);
  }
  // The status and parsed body of a GET.
  std::pair<int, json> Get(const std::string& target) {
    RouteResult r = Route(http::verb::get, target, std::make_shared<Collector>());
    EXPECT_EQ(r.job, nullptr);
    return {static_cast<int>(r.response.result_int()), json::parse(r.response.body())};
  }
  ServiceMetrics metrics;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<HttpApi> api;
};

const std::string kRequest = R"({"prompt":"To be","max_tokens":8,"seed":7})";

void ExpectDeviceFailedError(const json& body) {
  ASSERT_TRUE(body.contains("error")) << body;
  EXPECT_EQ(body["error"]["code"], "device_failed") << body;
  EXPECT_EQ(body["error"]["type"], "service_unavailable") << body;
  const std::string message = body["error"]["message"];
  EXPECT_NE(message.find("the GPU failed: cuda inference engine: CachedAttention: "),
            std::string::npos)
      << message;
  EXPECT_NE(message.find(kCause), std::string::npos) << message;
}

TEST(DeviceFailureTest, RequestGets503AndHealthzTurns503NamingTheCause) {
  std::atomic<int> calls_after_failure{0};
  Api api(FailingGpuOptions(/*fail_decode=*/3, &calls_after_failure));
  EXPECT_EQ(api.Get("/healthz").first, 200);
  EXPECT_EQ(api.Get("/readyz").first, 200);
  EXPECT_EQ(api.scheduler->DeviceFailure(), "");

  auto collector = std::make_shared<Collector>();
  RouteResult started = api.Route(http::verb::post, "/v1/completions", collector, kRequest);
  ASSERT_NE(started.job, nullptr);
  CompletionResult result = collector->Wait();
  ASSERT_TRUE(std::holds_alternative<ApiError>(result)) << std::get<std::string>(result);
  const ApiError& error = std::get<ApiError>(result);
  EXPECT_EQ(error.status, 503);
  ExpectDeviceFailedError(json::parse(ErrorBody(error)));

  EXPECT_EQ(api.scheduler->DeviceFailure(),
            std::string("the GPU failed: cuda inference engine: CachedAttention: ") + kCause);
  for (const char* probe : {"/healthz", "/readyz"}) {
    const auto [status, body] = api.Get(probe);
    EXPECT_EQ(status, 503) << probe;
    ExpectDeviceFailedError(body);
  }
  // A later request is refused at once, naming the cause; the broken
  // engine is not called again.
  RouteResult refused =
      api.Route(http::verb::post, "/v1/completions", std::make_shared<Collector>(), kRequest);
  EXPECT_EQ(refused.job, nullptr);
  EXPECT_EQ(refused.response.result_int(), 503u);
  ExpectDeviceFailedError(json::parse(refused.response.body()));
  EXPECT_EQ(calls_after_failure.load(), 0);
}

TEST(DeviceFailureTest, AStreamEndsWithAnErrorEventThenDone) {
  std::atomic<int> calls_after_failure{0};
  Api api(FailingGpuOptions(/*fail_decode=*/3, &calls_after_failure));
  auto collector = std::make_shared<Collector>();
  const std::string body = R"({"prompt":"To be","max_tokens":8,"seed":7,"stream":true})";
  RouteResult started = api.Route(http::verb::post, "/v1/completions", collector, body);
  ASSERT_NE(started.job, nullptr);
  ASSERT_TRUE(std::holds_alternative<std::string>(collector->Wait()));
  const std::vector<std::string> events = collector->events();
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "data: [DONE]\n\n");
  const std::string& error_event = events[events.size() - 2];
  ASSERT_EQ(error_event.rfind("data: ", 0), 0u) << error_event;
  ExpectDeviceFailedError(json::parse(error_event.substr(6)));
  const json last_chunk = json::parse(events[events.size() - 3].substr(6));
  EXPECT_EQ(last_chunk["choices"][0]["finish_reason"], "cancelled") << last_chunk;
}

// Requests waiting in the queue when the GPU fails get the same 503 and the
// engine is not called for them.
TEST(DeviceFailureTest, WaitingRequestsFailTooWithoutTouchingTheGpu) {
  std::atomic<int> calls_after_failure{0};
  std::promise<void> gate;
  SchedulerOptions options =
      FailingGpuOptions(/*fail_decode=*/2, &calls_after_failure, gate.get_future().share());
  options.max_batch = 1;  // one runs, the others wait
  Api api(options);
  std::vector<std::shared_ptr<Collector>> collectors;
  for (int i = 0; i < 4; ++i) {
    collectors.push_back(std::make_shared<Collector>());
    RouteResult r = api.Route(http::verb::post, "/v1/completions", collectors.back(), kRequest);
    EXPECT_NE(r.job, nullptr) << r.response.body();  // EXPECT: the gate must open below
  }
  gate.set_value();  // the first request's second decode step fails now
  for (auto& c : collectors) {
    CompletionResult result = c->Wait();
    ASSERT_TRUE(std::holds_alternative<ApiError>(result));
    ExpectDeviceFailedError(json::parse(ErrorBody(std::get<ApiError>(result))));
  }
  EXPECT_EQ(calls_after_failure.load(), 0);
}

// dropk-serve as a whole: the request is answered with the 503, then the
// service stops with the error (so that dropk-serve exits 1) instead of
// serving on with a broken GPU or aborting.
TEST(DeviceFailureTest, RunServeAnswersThenStopsWithTheError) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("dropk_serve_device_failure_" + std::to_string(getpid()));
  fs::remove_all(dir);
  {
    const absl::Status trained = test_util::TrainTinySmokeRun(dir);
    ASSERT_TRUE(trained.ok()) << trained;
  }

  std::atomic<int> calls_after_failure{0};
  ServeOptions options;
  options.checkpoints_dir = (dir / "run" / "checkpoints").string();
  options.port_file = (dir / "port").string();
  options.http.address = "127.0.0.1";
  options.http.port = 0;
  options.scheduler = FailingGpuOptions(/*fail_decode=*/3, &calls_after_failure);
  std::promise<absl::Status> result;
  std::future<absl::Status> served = result.get_future();
  std::thread serve([&options, &result] { result.set_value(RunServe(options)); });
  // However the test ends, RunServe ends: a SIGTERM to its thread (which
  // waits for one) drains it when it did not stop by itself.
  absl::Cleanup stop = [&] {
    if (served.valid() &&  // not yet taken by get()
        served.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      pthread_kill(serve.native_handle(), SIGTERM);
    }
    serve.join();
  };
  int port = 0;
  for (int i = 0; i < 600 && port == 0; ++i) {
    std::ifstream in(options.port_file);
    if (!(in >> port)) {
      port = 0;
      ASSERT_NE(served.wait_for(std::chrono::milliseconds(50)), std::future_status::ready)
          << served.get();
    }
  }
  ASSERT_NE(port, 0) << "dropk-serve never listened";
  EXPECT_EQ(testing::Curl(port, "GET", "/healthz").code, 200);

  const testing::HttpResult answer = testing::Curl(port, "POST", "/v1/completions", kRequest);
  EXPECT_EQ(answer.code, 503) << answer.body;
  ExpectDeviceFailedError(json::parse(answer.body));

  ASSERT_EQ(served.wait_for(std::chrono::seconds(30)), std::future_status::ready)
      << "dropk-serve kept running after its GPU failed";
  const absl::Status status = served.get();
  EXPECT_TRUE(absl::IsInternal(status)) << status;
  EXPECT_EQ(status.message(),
            std::string("the GPU failed: cuda inference engine: CachedAttention: ") + kCause);
  EXPECT_EQ(calls_after_failure.load(), 0);
  std::move(stop).Invoke();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dropk
