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
// Then, on the CPU, the KV cache's share of a decode step: tokens/s with the
// cache in fp32 and in bf16 (dropk-serve --kv-cache bf16) side by side, every
// slot at 16 cached positions and at 900 (at most block_size - 25), 1 and 4
// rows a step, with fp32 weights and with bf16 ones.
//
// Then batched decode in the engine (no HTTP) at 1, 4, 16 and 64 rows per
// step, against OpenBLAS sgemm running the same step's products alone (what
// an engine without batch invariance would build on), in the same run; on
// the GPU, the engine's tokens/s and milliseconds per step alone (how the
// step's cost grows with its rows). The single-stream figures and the
// batched table set two variants side by side: on the CPU the engine with fp32 weights and with
// bf16 weights (dropk-serve --weights bf16), on the GPU decode steps as CUDA graphs and as separate
// kernel launches (--cuda-graphs false).
//
// Last, the host path alone: the same HTTP serving over an engine that
// returns fixed logits at once, at 1 and 64 streams, with each decode
// step's token draws on one host thread against --threads of them, and the
// cost of one draw. What the host adds to every token, whatever the engine
// (bench/GPU_NOTES.md, "Serving on the GPU"). --only host runs this part
// alone (it needs no GPU and little time with any model).
//
// --context N starts the single-stream decode after a prompt of N tokens
// (default 4), to see what attention over a long context costs. --only
// engine prints the engine tables alone (bench/vs_pytorch.sh's serving
// case sets them beside PyTorch's decode of the same shape).
//
// Usage: serve_bench [--device cpu|cuda] [--model small|gpt2] [--gpt2-dir DIR]
//                    [--threads N] [--max-tokens N] [--requests-per-client N]
//                    [--context N] [--only all|host|engine]
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
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>

#include "bench_flags.h"
#include "model/generate.h"
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

// An engine that computes nothing: each step hands back rows of fixed
// random logits at once. Serving through it measures what the host adds to
// every token whatever the engine (the scheduler, drawing the token from
// the logits, the completions job and HTTP): the ceiling it sets.
class FixedLogitsEngine final : public dropk::InferenceEngine {
 public:
  FixedLogitsEngine(const dropk::GptConfig& config, int max_slots)
      : config_(config),
        max_slots_(max_slots),
        lengths_(max_slots, 0),
        logits_(static_cast<size_t>(max_slots) * config.vocab_size) {
    // GPT-2's logits at initialisation spread about this wide; the draws'
    // cost (a selection over the row) depends on the spread little.
    std::mt19937 gen(1);
    std::normal_distribution<float> normal(0.0f, 0.55f);
    for (float& v : logits_) v = normal(gen);
  }
  const dropk::GptConfig& config() const override { return config_; }
  int max_slots() const override { return max_slots_; }
  void Reset(int slot) override { lengths_[slot] = 0; }
  int Length(int slot) const override { return lengths_[slot]; }
  const float* Prefill(int slot, std::span<const int32_t> tokens) override {
    lengths_[slot] += static_cast<int>(tokens.size());
    return logits_.data() + static_cast<size_t>(slot) * config_.vocab_size;
  }
  const float* PrefillMany(std::span<const int> slots,
                           std::span<const std::span<const int32_t>> prompts) override {
    for (size_t i = 0; i < slots.size(); ++i) {
      lengths_[slots[i]] += static_cast<int>(prompts[i].size());
    }
    return logits_.data();
  }
  const float* Decode(std::span<const int> slots, std::span<const int32_t>) override {
    for (const int s : slots) ++lengths_[s];
    return logits_.data();
  }

 private:
  const dropk::GptConfig config_;
  const int max_slots_;
  std::vector<int> lengths_;
  std::vector<float> logits_;  // (max_slots, V)
};

// Streams per_client requests from each of `conc` clients at once for each
// concurrency, prints a row per concurrency and returns the tokens/s.
std::vector<double> ServeTable(int port, const std::vector<int>& concurrencies, int max_tokens,
                               int per_client) {
  std::printf("%-11s %10s %10s %10s %10s %10s %9s\n", "concurrency", "tokens/s", "lat_p50",
              "lat_p99", "ttft_p50", "ttft_p99", "requests");
  std::vector<double> out;
  for (int conc : concurrencies) {
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
    out.push_back(tps);
    std::printf("%-11d %10.1f %9.3fs %9.3fs %9.3fs %9.3fs %5d/%-3zu\n", conc, tps,
                Percentile(lat, 0.5), Percentile(lat, 0.99), Percentile(ttft, 0.5),
                Percentile(ttft, 0.99), ok, timings.size());
  }
  return out;
}

// Microseconds the host takes to draw one token from a row of V logits as
// the scheduler does for the bench's requests (top_k 40, then the
// log-softmax of the drawn token), on one thread.
double DrawMicros(int V) {
  std::vector<float> logits(V), scratch(V);
  std::vector<int32_t> ids(V);
  std::mt19937 gen(2);
  std::normal_distribution<float> normal(0.0f, 0.55f);
  for (float& v : logits) v = normal(gen);
  const dropk::SamplingOptions options{.top_k = 40, .seed = 7};
  constexpr int kDraws = 200;
  int64_t keep = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < kDraws; ++i) {
    keep += dropk::SampleToken(logits, options, i, scratch, ids);
    keep += static_cast<int64_t>(dropk::LogSumExp(logits));
  }
  const double us = Seconds(Clock::now() - t0) * 1e6 / kDraws;
  if (keep == 42) std::printf(" ");  // keep the loop
  return us;
}

// KvCacheTable's timing: alternating rounds of steps per engine, after one
// untimed step.
constexpr int kKvRounds = 3, kKvRoundSteps = 8;
constexpr int kKvSteps = 1 + kKvRounds * kKvRoundSteps;  // decode steps each engine runs

// The KV cache's share of a decode step: for each context (positions
// already cached) and row count, the engine's decode tokens/s with the cache
// in fp32 and in bf16 (dropk-serve --kv-cache bf16), side by side, the
// weights as `weights` says. Both engines are prefilled alike, then timed in
// alternating rounds of kKvRoundSteps steps (the best round of each), so
// that a neighbour's load falls on both. Returns false when an engine cannot
// be made (the error printed).
bool KvCacheTable(const dropk::GptConfig& config, const std::vector<float>& params, int threads,
                  dropk::EngineWeights weights, const std::vector<int>& contexts,
                  const std::vector<int>& row_counts) {
  std::printf(
      "KV cache: decode tokens/s with the cache in fp32 and in bf16 (--kv-cache), %s weights, "
      "every slot at `context` cached positions; best of %d alternating rounds of %d steps\n",
      dropk::EngineWeightsName(weights), kKvRounds, kKvRoundSteps);
  std::printf("%-8s %5s %16s %16s %10s %24s\n", "context", "rows", "fp32 cache tok/s",
              "bf16 cache tok/s", "bf16/fp32", "cache read/step MB f/b");
  for (const int rows : row_counts) {
    for (const int context : contexts) {
      std::unique_ptr<dropk::InferenceEngine> engines[2];
      for (int i = 0; i < 2; ++i) {
        auto engine = dropk::MakeInferenceEngine(
            config, params,
            {.max_slots = rows,
             .num_threads = threads,
             .weights = weights,
             .kv_cache = i == 0 ? dropk::EngineKvCache::kFp32 : dropk::EngineKvCache::kBf16});
        if (!engine.ok()) {
          std::fprintf(stderr, "serve_bench: %s\n", std::string(engine.status().message()).c_str());
          return false;
        }
        engines[i] = *std::move(engine);
        std::vector<int32_t> prompt(context);
        for (int r = 0; r < rows; ++r) {
          for (int t = 0; t < context; ++t) prompt[t] = 1 + (t * 7 + r) % 200;
          engines[i]->Prefill(r, prompt);
        }
      }
      std::vector<int> slots(rows);
      std::vector<int32_t> tokens(rows);
      for (int r = 0; r < rows; ++r) {
        slots[r] = r;
        tokens[r] = 3 + r;
      }
      double best_seconds[2] = {1e30, 1e30};
      for (int i = 0; i < 2; ++i) engines[i]->Decode(slots, tokens);  // warm-up
      for (int round = 0; round < kKvRounds; ++round) {
        for (int i = 0; i < 2; ++i) {
          const auto t0 = Clock::now();
          for (int step = 0; step < kKvRoundSteps; ++step) engines[i]->Decode(slots, tokens);
          best_seconds[i] = std::min(best_seconds[i], Seconds(Clock::now() - t0));
        }
      }
      const double tps[2] = {rows * kKvRoundSteps / best_seconds[0],
                             rows * kKvRoundSteps / best_seconds[1]};
      // Keys and values of `context` positions, every layer, every row, in
      // fp32 (about what a step reads of them).
      const double cache_mb =
          2.0 * config.n_layer * config.n_embd * rows * context * sizeof(float) / 1e6;
      std::printf("%-8d %5d %16.1f %16.1f %9.2fx %15.1f / %-6.1f\n", context, rows, tps[0], tps[1],
                  tps[1] / tps[0], cache_mb, cache_mb / 2);
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, max_tokens = 64, per_client = 2, context = 4;
  std::string device_name = "cpu", model = "small", gpt2_dir = "data/gpt2", only = "all";
  CLI::App app{"dropk-serve-bench: the sampling service's speed (engine, HTTP, host path)"};
  app.add_option("--device", device_name, "where the engine runs")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--model", model, "small (6 x 384, vocab 256) or gpt2 (GPT-2 124M shape)")
      ->check(CLI::IsMember({"small", "gpt2"}));
  app.add_option("--gpt2-dir", gpt2_dir, "GPT-2's encoder.json and vocab.bpe (--model gpt2)");
  app.add_option("--threads", threads, "compute threads (0 = all cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-tokens", max_tokens, "tokens per HTTP request")->check(CLI::PositiveNumber);
  app.add_option("--requests-per-client", per_client, "requests each HTTP client sends")
      ->check(CLI::PositiveNumber);
  app.add_option("--context", context, "prompt length before the single-stream decode")
      ->check(CLI::PositiveNumber);
  app.add_option("--only", only, "all, host (the host path alone) or engine (the engine tables)")
      ->check(CLI::IsMember({"all", "host", "engine"}));
  if (std::optional<int> code = dropk::ParseBenchFlags(app, argc, argv, "dropk-serve-bench")) {
    return *code;
  }
  const dropk::Device device = device_name == "cuda" ? dropk::Device::kCuda : dropk::Device::kCpu;
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
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

  auto snap = dropk::MakeSnapshot(config, *tok, params, 0, "bench-" + model, "");
  if (!snap.ok()) {
    std::fprintf(stderr, "serve_bench: %s\n", std::string(snap.status().message()).c_str());
    return 1;
  }
  // A step that cannot go on says why, in one line.
  auto fail = [](const char* what, const absl::Status& status) {
    std::fprintf(stderr, "serve_bench: %s: %s\n", what, std::string(status.message()).c_str());
    return std::vector<double>();
  };
  // Serves the model (or, with fixed_logits, an engine that computes
  // nothing) over HTTP at each concurrency; tokens/s per concurrency.
  auto serve = [&](const std::vector<int>& concurrencies, int draw_threads, bool fixed_logits) {
    dropk::ServiceMetrics metrics;
    dropk::SchedulerOptions options{
        .device = device, .max_batch = 64, .max_queue = 1024, .num_threads = draw_threads};
    if (fixed_logits) {
      options.make_engine = [](const dropk::GptConfig& c, std::span<const float>,
                               const dropk::InferenceOptions& io)
          -> absl::StatusOr<std::unique_ptr<dropk::InferenceEngine>> {
        return std::make_unique<FixedLogitsEngine>(c, io.max_slots);
      };
    }
    auto scheduler = dropk::Scheduler::Create(options, &metrics);
    if (!scheduler.ok()) return fail("scheduler", scheduler.status());
    if (absl::Status s = (*scheduler)->SetModel(*snap); !s.ok()) return fail("model", s);
    auto server =
        dropk::HttpServer::Start({.port = 0, .io_threads = 2}, scheduler->get(), &metrics);
    if (!server.ok()) return fail("server", server.status());
    std::vector<double> tps = ServeTable((*server)->port(), concurrencies, max_tokens, per_client);
    (*scheduler)->Shutdown(std::chrono::milliseconds(1000));
    (*server)->Stop(std::chrono::milliseconds(1000));
    return tps;
  };

  // The host's share of each token, apart from the engine: one draw on one
  // thread, then the whole host path at 64 streams with the step's draws on
  // one thread against `threads` of them, in the same run.
  auto host_path = [&]() {
    std::printf(
        "host path (an engine that returns fixed logits at once: scheduler, token draws, "
        "completions job, HTTP); one draw (top_k 40 + log-softmax over %d logits) takes %.0f us "
        "on one thread\n",
        config.vocab_size, DrawMicros(config.vocab_size));
    std::printf("draws on 1 thread:\n");
    const std::vector<double> host1 = serve({1, 64}, 1, true);
    std::printf("draws on up to %d threads (at most one per core):\n", threads);
    const std::vector<double> hostn = serve({1, 64}, threads, true);
    if (host1.size() == 2 && hostn.size() == 2) {
      std::printf("host path at 64 streams, %d draw threads vs 1: %.2fx\n", threads,
                  hostn[1] / host1[1]);
    }
    return 0;
  };
  if (only == "host") return host_path();

  // Single-stream decode against the bandwidth estimate (on the GPU, with
  // the decode step as one CUDA graph, then launched kernel by kernel).
  const bool on_gpu = device == dropk::Device::kCuda;
  const double bandwidth = on_gpu ? 0.0 : MeasureReadBandwidth(threads);
  if (context < 1 || context > config.block_size - 2) {  // room for a warm-up and a timed step
    std::fprintf(stderr, "serve_bench: --context %d: expected 1 to %d\n", context,
                 config.block_size - 2);
    return 2;
  }
  // The variants each engine table compares in one run: on the GPU, decode
  // steps as CUDA graphs against kernel launches; on the CPU, fp32 weights
  // against bf16 ones.
  std::vector<dropk::InferenceOptions> variants(2);
  for (int i = 0; i < 2; ++i) {
    variants[i].device = device;
    variants[i].num_threads = threads;
    if (on_gpu) {
      variants[i].cuda_graphs = i == 0;
    } else {
      variants[i].weights = i == 0 ? dropk::EngineWeights::kFp32 : dropk::EngineWeights::kBf16;
    }
  }
  for (dropk::InferenceOptions options : variants) {
    options.max_slots = 1;
    auto engine = dropk::MakeInferenceEngine(config, params, options);
    if (!engine.ok()) {
      std::fprintf(stderr, "serve_bench: %s\n", std::string(engine.status().message()).c_str());
      return 1;
    }
    std::vector<int32_t> prompt(context);
    for (int i = 0; i < context; ++i) prompt[i] = 1 + i % 200;
    (*engine)->Prefill(0, prompt);
    const int slot = 0;
    int32_t next = 5;
    auto decode_one = [&] {
      const float* l =
          (*engine)->Decode(std::span<const int>(&slot, 1), std::span<const int32_t>(&next, 1));
      next = static_cast<int32_t>(std::max_element(l, l + config.vocab_size) - l);
    };
    // One step untimed: with CUDA graphs the first one-row step captures and
    // instantiates its graph, a one-time cost the steps after it do not pay.
    decode_one();
    const int steps = std::min(200, config.block_size - context - 1);
    const auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i) decode_one();
    const double tps = steps / Seconds(Clock::now() - t0);
    if (on_gpu) {
      std::printf("single-stream decode (engine on the GPU, no HTTP, %s): %.1f tokens/s\n",
                  options.cuda_graphs ? "CUDA graphs" : "kernel launches", tps);
      continue;
    }
    // Tokens/s at the loop's speed, the weights read once per token.
    const bool bf16 = options.weights == dropk::EngineWeights::kBf16;
    const double bound = bandwidth / (bf16 ? weight_bytes / 2 : weight_bytes);
    std::printf(
        "single-stream decode (engine, %s weights, no HTTP, from position %d): %.1f tokens/s; "
        "memory read bandwidth %.2f GB/s (a summing loop) -> %.1f tokens/s at that speed (%s "
        "weights read once per token); %.0f%% of it (an estimate, not a ceiling: the engine's "
        "tiled reads can go faster than the loop)\n",
        dropk::EngineWeightsName(options.weights), context, tps, bandwidth / 1e9, bound,
        dropk::EngineWeightsName(options.weights), 100.0 * tps / bound);
  }

  // The KV cache in fp32 against bf16, at a short and a long context (room
  // is left for the timed steps), on the CPU: the CUDA engine's cache is
  // fp32 alone. Printed before the batched table, whose rows
  // bench/vs_pytorch.sh reads to the end of the output.
  if (!on_gpu) {
    const int long_context = std::min(900, config.block_size - kKvSteps);
    for (const dropk::EngineWeights weights :
         {dropk::EngineWeights::kFp32, dropk::EngineWeights::kBf16}) {
      if (!KvCacheTable(config, params, threads, weights, {16, long_context}, {1, 4})) return 1;
    }
  }

  // Batched decode: R sequences one token each per step, the engine's row
  // kernels against sgemm doing the step's products alone, in the same run
  // (on the GPU, the engine alone, its steps as CUDA graphs and as separate
  // launches).
  {
    if (on_gpu) {
      std::printf("%-11s %16s %14s %22s %14s\n", "batch rows", "graphs tokens/s", "ms per step",
                  "launches tokens/s", "ms per step");
    } else {
      std::printf("%-11s %16s %22s %14s %16s %10s\n", "batch rows", "engine tokens/s",
                  "sgemm products tok/s", "engine/sgemm", "bf16 weights", "bf16/fp32");
    }
    for (int R : {1, 4, 16, 64}) {
      std::vector<double> engine_tps;  // per variant
      for (dropk::InferenceOptions options : variants) {
        options.max_slots = R;
        auto engine = dropk::MakeInferenceEngine(config, params, options);
        if (!engine.ok()) {
          std::fprintf(stderr, "serve_bench: engine: %s\n",
                       std::string(engine.status().message()).c_str());
          return 1;
        }
        std::vector<int> slots(R);
        std::vector<int32_t> tokens(R);
        for (int r = 0; r < R; ++r) {
          slots[r] = r;
          tokens[r] = 1 + r % 200;
          (*engine)->Prefill(r, std::vector<int32_t>{tokens[r], 7, 9, 11});
        }
        const int steps = std::min(R <= 4 ? 40 : 16, config.block_size - 8);
        (*engine)->Decode(slots, tokens);  // warm-up (and, with graphs, the capture)
        const auto t0 = Clock::now();
        for (int i = 0; i < steps; ++i) (*engine)->Decode(slots, tokens);
        engine_tps.push_back(static_cast<double>(R) * steps / Seconds(Clock::now() - t0));
      }
      if (on_gpu) {  // the step's cost against its rows: what batching buys on the GPU
        std::printf("%-11d %16.1f %14.3f %22.1f %14.3f\n", R, engine_tps[0],
                    1e3 * R / engine_tps[0], engine_tps[1], 1e3 * R / engine_tps[1]);
        continue;
      }
      const double sgemm_tps = R / SgemmProductsSeconds(config, R, threads);
      std::printf("%-11d %16.1f %22.1f %13.2fx %16.1f %9.2fx\n", R, engine_tps[0], sgemm_tps,
                  engine_tps[0] / sgemm_tps, engine_tps[1], engine_tps[1] / engine_tps[0]);
    }
  }

  if (only == "engine") return 0;

  const std::vector<double> tps = serve({1, 4, 16, 64}, threads, false);
  if (tps.size() != 4) return 1;
  std::printf("aggregate throughput ratio 16 vs 1 concurrent: %.2fx\n", tps[2] / tps[0]);

  return host_path();
}
