// Sampling-service benchmark: dropk-serve's HTTP path on loopback with the
// "small" model (6 layers, 6 heads, 384 channels, context 256, vocab 256;
// random weights: speed does not depend on them).
//
// Prints, for 1, 4, 16 and 64 concurrent streamed requests: generated
// tokens/s (aggregate), request latency p50/p99 and time-to-first-token
// p50/p99; the 16-vs-1 throughput ratio (what continuous batching buys); and
// single-stream decode tokens/s of the engine against what reading all
// weights once per token would allow at the bandwidth a summing loop
// measures in the same run (an estimate: the engine's reads can beat it).
//
// With --device cuda the engine runs on the GPU (the bandwidth estimate, a
// host figure, is then not printed). --model gpt2 serves the GPT-2 124M shape
// instead (12 layers, 12 heads, 768 channels, context 1024, GPT-2's 50,257
// tokens from --gpt2-dir, default data/gpt2), the shape issue 10 measures.
//
// Then batched decode in the engine (no HTTP) at 1, 4, 16 and 64 rows per
// step, against OpenBLAS sgemm running the same step's products alone (what
// an engine without batch invariance would build on), in the same run.
//
// --context N starts the single-stream decode after a prompt of N tokens
// (default 4), to see what attention over a long context costs.
//
// Usage: serve_bench [--device cpu|cuda] [--model small|gpt2] [--gpt2-dir DIR]
//                    [--threads N] [--max-tokens N] [--requests-per-client N]
//                    [--context N]
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>

#include "model/gpt.h"
#include "model/gpt2_vocab_files.h"
#include "model/inference.h"
#include "model/kernels.h"
#include "model/tokenizer.h"
#include "sampler/http_server.h"
#include "sampler/scheduler.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

// The whole file, or "" when it cannot be read (the tokenizer then names it).
std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

// Read bandwidth: sum a 512 MiB buffer a few times (the decode step's access
// pattern: stream every weight once), best of the passes, all threads. Each
// thread keeps 64 running sums, which vectorise into independent chains: one
// sum is one chain of dependent adds, which measured a third of the memory's
// speed here and made decode look faster than memory.
double MeasureReadBandwidth(int threads) {
  constexpr size_t kLanes = 64;
  const size_t n = (512u << 20) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  double best = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const auto t0 = Clock::now();
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      float sums[kLanes] = {};
#pragma omp for schedule(static)
      for (size_t block = 0; block < n / kLanes; ++block) {
        const float* p = buf.data() + block * kLanes;
        for (size_t j = 0; j < kLanes; ++j) sums[j] += p[j];
      }
      for (const float v : sums) total += v;
    }
    const double s = Seconds(Clock::now() - t0);
    if (total == 42.0f) std::printf(" ");  // keep the loop
    best = std::max(best, n * sizeof(float) / s);
  }
  return best;
}

// Seconds per decode step of the model's products alone, done the way an
// engine without batch invariance would: one OpenBLAS sgemm per weight matrix
// over all R rows (threads may split reductions), best of a few steps on one
// thread and on `threads`. The
// floor a plain-BLAS engine stands on, to set the batch-invariant engine's
// row kernels against in the same run.
double SgemmProductsSeconds(const dropk::GptConfig& config, int R, int threads) {
  const int C = config.n_embd, V = config.vocab_size;
  // (input width, output width) of each product in one decode step.
  std::vector<std::pair<int, int>> shapes;
  for (int l = 0; l < config.n_layer; ++l) {
    shapes.insert(shapes.end(), {{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}});
  }
  shapes.push_back({C, V});
  size_t most_w = 0;
  for (const auto& [in, out] : shapes) most_w = std::max(most_w, static_cast<size_t>(in) * out);
  std::vector<float> w(most_w * 2, 0.01f), x(static_cast<size_t>(R) * 4 * C, 1.0f),
      y(static_cast<size_t>(R) * std::max(4 * C, V));
  // The better of one thread and all of them: OpenBLAS's threads lose on
  // the few-row products of a decode step (here 1-row products ran 40x
  // slower on 2 threads than on 1), and a user would pick the faster.
  double best = 1e30;
  for (int rep = 0; rep < 10; ++rep) {
    openblas_set_num_threads(rep % 2 == 0 ? 1 : threads);
    const auto t0 = Clock::now();
    size_t k = 0;
    for (const auto& [in, out] : shapes) {
      // Alternate two weight buffers so each product reads its weights from
      // memory, as a step over a model larger than the caches does.
      const float* wk = w.data() + (k++ % 2) * most_w;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, out, in, 1.0f, x.data(), in, wk, in,
                  0.0f, y.data(), out);
    }
    best = std::min(best, Seconds(Clock::now() - t0));
  }
  return best;
}

struct RequestTiming {
  double latency = 0, ttft = 0;
  bool ok = false;
};

RequestTiming StreamOne(int port, int max_tokens, uint64_t seed) {
  RequestTiming t;
  try {
    net::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    http::request<http::string_body> req{http::verb::post, "/v1/completions", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() =
        "{\"prompt\":\"The quick brown fox\",\"max_tokens\":" + std::to_string(max_tokens) +
        ",\"top_k\":40,\"seed\":" + std::to_string(seed) + ",\"stream\":true}";
    req.prepare_payload();
    const auto t0 = Clock::now();
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read_header(stream, buffer, parser);
    bool first = false;
    while (!parser.is_done()) {
      http::read_some(stream, buffer, parser);
      if (!first && parser.get().body().find("data: {") != std::string::npos) {
        first = true;
        t.ttft = Seconds(Clock::now() - t0);
      }
    }
    t.latency = Seconds(Clock::now() - t0);
    t.ok = parser.get().result_int() == 200 &&
           parser.get().body().find("data: [DONE]") != std::string::npos;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "request failed: %s\n", e.what());
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, max_tokens = 64, per_client = 2, context = 4;
  dropk::Device device = dropk::Device::kCpu;
  std::string model = "small", gpt2_dir = "data/gpt2";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model = argv[i + 1];
    if (!std::strcmp(argv[i], "--gpt2-dir")) gpt2_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--device")) {
      if (std::strcmp(argv[i + 1], "cpu") && std::strcmp(argv[i + 1], "cuda")) {
        std::fprintf(stderr, "serve_bench: --device %s: expected cpu or cuda\n", argv[i + 1]);
        return 2;
      }
      if (!std::strcmp(argv[i + 1], "cuda")) device = dropk::Device::kCuda;
    }
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--max-tokens")) max_tokens = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--requests-per-client")) per_client = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--context")) context = std::atoi(argv[i + 1]);
  }
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (model != "small" && model != "gpt2") {
    std::fprintf(stderr, "serve_bench: --model %s: expected small or gpt2\n", model.c_str());
    return 2;
  }
  // The service's tokenizer: bytes for the small model, GPT-2's BPE for its shape.
  absl::StatusOr<dropk::TextTokenizer> tok =
      dropk::TextTokenizer::FromCorpus(dropk::Tokenizer::BYTE, "x");
  if (model == "gpt2") {
    absl::StatusOr<dropk::Tokenizer> proto = dropk::Gpt2TokenizerFromFiles(
        ReadFileOrEmpty(gpt2_dir + "/encoder.json"), ReadFileOrEmpty(gpt2_dir + "/vocab.bpe"));
    if (!proto.ok()) {
      std::fprintf(stderr, "serve_bench: --gpt2-dir %s: %s\n", gpt2_dir.c_str(),
                   std::string(proto.status().message()).c_str());
      return 1;
    }
    tok = dropk::TextTokenizer::FromProto(*proto);
  }
  const dropk::GptConfig config = model == "gpt2" ? dropk::GptConfig{50257, 1024, 12, 12, 768}
                                                  : dropk::GptConfig{256, 256, 6, 6, 384};
  auto kernels = dropk::MakeKernels(dropk::Device::kCpu, threads);
  auto gpt = dropk::Gpt::Create(config, 1, kernels->get());
  (*gpt)->InitWeights(1);
  std::vector<float> params((*gpt)->num_params());
  (*kernels)->CopyToHost(params.data(), (*gpt)->params(), params.size() * sizeof(float));
  const double weight_bytes = params.size() * sizeof(float);
  std::printf(
      "serve_bench: %s model, %zu params (%.1f MB fp32), engine on %s, %d compute threads, "
      "%d tokens per request\n",
      model.c_str(), params.size(), weight_bytes / 1e6,
      device == dropk::Device::kCuda ? "cuda" : "cpu", threads, max_tokens);

  // Single-stream decode against the bandwidth estimate.
  const bool on_gpu = device == dropk::Device::kCuda;
  const double bandwidth = on_gpu ? 0.0 : MeasureReadBandwidth(threads);
  {
    auto engine = dropk::MakeInferenceEngine(
        config, params, {.device = device, .max_slots = 1, .num_threads = threads});
    if (!engine.ok()) {
      std::fprintf(stderr, "serve_bench: %s\n", std::string(engine.status().message()).c_str());
      return 1;
    }
    if (context < 1 || context >= config.block_size) {
      std::fprintf(stderr, "serve_bench: --context %d: expected 1 to %d\n", context,
                   config.block_size - 1);
      return 2;
    }
    std::vector<int32_t> prompt(context);
    for (int i = 0; i < context; ++i) prompt[i] = 1 + i % 200;
    (*engine)->Prefill(0, prompt);
    const int slot = 0;
    int32_t next = 5;
    const int steps = std::min(200, config.block_size - context);
    const auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i) {
      const float* l =
          (*engine)->Decode(std::span<const int>(&slot, 1), std::span<const int32_t>(&next, 1));
      next = static_cast<int32_t>(std::max_element(l, l + config.vocab_size) - l);
    }
    const double tps = steps / Seconds(Clock::now() - t0);
    if (on_gpu)
      std::printf("single-stream decode (engine on the GPU, no HTTP): %.1f tokens/s\n", tps);
    const double bound = bandwidth / weight_bytes;  // tokens/s at the loop's speed
    if (!on_gpu)
      std::printf(
          "single-stream decode (engine, no HTTP, from position %d): %.1f tokens/s; memory read "
          "bandwidth %.2f GB/s (a summing loop) -> %.1f tokens/s at that speed (weights read once "
          "per token); %.0f%% of it (an estimate, not a ceiling: the engine's tiled reads can go "
          "faster than the loop)\n",
          context, tps, bandwidth / 1e9, bound, 100.0 * tps / bound);
  }

  // Batched decode: R sequences one token each per step, the engine's row
  // kernels against sgemm doing the step's products alone, in the same run.
  if (!on_gpu) {
    std::printf("%-11s %16s %22s %14s\n", "batch rows", "engine tokens/s",
                "sgemm products tok/s", "engine/sgemm");
    for (int R : {1, 4, 16, 64}) {
      auto engine = dropk::MakeInferenceEngine(
          config, params, {.device = device, .max_slots = R, .num_threads = threads});
      if (!engine.ok()) return 1;
      std::vector<int> slots(R);
      std::vector<int32_t> tokens(R);
      for (int r = 0; r < R; ++r) {
        slots[r] = r;
        tokens[r] = 1 + r % 200;
        (*engine)->Prefill(r, std::vector<int32_t>{tokens[r], 7, 9, 11});
      }
      const int steps = std::min(R <= 4 ? 40 : 16, config.block_size - 8);
      (*engine)->Decode(slots, tokens);  // warm-up
      const auto t0 = Clock::now();
      for (int i = 0; i < steps; ++i) (*engine)->Decode(slots, tokens);
      const double engine_tps = static_cast<double>(R) * steps / Seconds(Clock::now() - t0);
      const double sgemm_tps = R / SgemmProductsSeconds(config, R, threads);
      std::printf("%-11d %16.1f %22.1f %13.2fx\n", R, engine_tps, sgemm_tps,
                  engine_tps / sgemm_tps);
    }
  }

  dropk::ServiceMetrics metrics;
  auto scheduler = dropk::Scheduler::Create(
      {.device = device, .max_batch = 64, .max_queue = 1024, .num_threads = threads}, &metrics);
  auto snap = dropk::MakeSnapshot(config, *tok, params, 0, "bench-" + model, "");
  if (!(*scheduler)->SetModel(*snap).ok()) return 1;
  auto server = dropk::HttpServer::Start({.port = 0, .io_threads = 2}, scheduler->get(), &metrics);
  if (!server.ok()) return 1;
  const int port = (*server)->port();

  std::printf("%-11s %10s %10s %10s %10s %10s %9s\n", "concurrency", "tokens/s", "lat_p50",
              "lat_p99", "ttft_p50", "ttft_p99", "requests");
  double tps1 = 0, tps16 = 0;
  for (int conc : {1, 4, 16, 64}) {
    std::vector<RequestTiming> timings;
    std::mutex mu;
    const auto t0 = Clock::now();
    std::vector<std::thread> clients;
    for (int c = 0; c < conc; ++c) {
      clients.emplace_back([&, c] {
        for (int r = 0; r < per_client; ++r) {
          RequestTiming t = StreamOne(port, max_tokens, c * 1000 + r);
          std::lock_guard<std::mutex> lock(mu);
          timings.push_back(t);
        }
      });
    }
    for (auto& t : clients) t.join();
    const double wall = Seconds(Clock::now() - t0);
    std::vector<double> lat, ttft;
    int ok = 0;
    for (const auto& t : timings) {
      if (!t.ok) continue;
      ++ok;
      lat.push_back(t.latency);
      ttft.push_back(t.ttft);
    }
    const double tps = static_cast<double>(ok) * max_tokens / wall;
    if (conc == 1) tps1 = tps;
    if (conc == 16) tps16 = tps;
    std::printf("%-11d %10.1f %9.3fs %9.3fs %9.3fs %9.3fs %5d/%-3zu\n", conc, tps,
                Percentile(lat, 0.5), Percentile(lat, 0.99), Percentile(ttft, 0.5),
                Percentile(ttft, 0.99), ok, timings.size());
  }
  std::printf("aggregate throughput ratio 16 vs 1 concurrent: %.2fx\n", tps16 / tps1);
  (*scheduler)->Shutdown(std::chrono::milliseconds(1000));
  (*server)->Stop(std::chrono::milliseconds(1000));
  return 0;
}
