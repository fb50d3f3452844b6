// Causal attention forward and backward on the CPU, alone: milliseconds per
// call and GFLOP/s (causal flops: the half of each T x T product at or below
// the diagonal) at one shape, with attention dropout off and on, beside the
// sgemm rate of the same products done as plain full T x T sgemm calls per
// head in the same run (the work attention would do without its fusions).
// It shows how far attention is from the matrix-product rate; the training
// profile (dropk-train-throughput-bench --profile) shows its share of a step.
// Usage: dropk-attention-bench [--threads N] [--B 8] [--T 256] [--C 384]
// [--NH 6] [--repeats 20].
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <omp.h>
#include <CLI/CLI.hpp>

#include "bench_flags.h"
#include "model/dropout.h"
#include "model/kernels.h"

namespace dropk {
namespace {

using Clock = std::chrono::steady_clock;

// Median of `repeats` timings of fn, in milliseconds.
template <typename Fn>
double MedianMs(int repeats, Fn fn) {
  fn();  // warm-up: first-touch pages, thread team
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    const Clock::time_point t0 = Clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

int Run(int argc, char** argv) {
  CLI::App app{"dropk causal attention benchmark (CPU)"};
  int threads = 0, B = 8, T = 256, C = 384, NH = 6, repeats = 20;
  app.add_option("--threads", threads, "threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  app.add_option("--B", B, "batch")->check(CLI::PositiveNumber);
  app.add_option("--T", T, "sequence length")->check(CLI::PositiveNumber);
  app.add_option("--C", C, "channels")->check(CLI::PositiveNumber);
  app.add_option("--NH", NH, "heads (must divide C)")->check(CLI::PositiveNumber);
  app.add_option("--repeats", repeats, "timed calls per figure")->check(CLI::PositiveNumber);
  if (std::optional<int> code = ParseBenchFlags(app, argc, argv, "dropk-attention-bench")) {
    return *code;
  }
  if (C % NH != 0) {
    std::fprintf(stderr, "dropk-attention-bench: --NH %d does not divide --C %d\n", NH, C);
    return kExitUsage;
  }
  absl::StatusOr<std::unique_ptr<Kernels>> made = MakeKernels(Device::kCpu, threads);
  if (!made.ok()) {
    std::fprintf(stderr, "dropk-attention-bench: %s\n", made.status().ToString().c_str());
    return kExitFailure;
  }
  Kernels& k = **made;
  const size_t n = static_cast<size_t>(B) * T;
  std::vector<float> qkv(n * 3 * C), out(n * C), dout(n * C), dqkv(n * 3 * C),
      probs(k.AttentionSavedFloats(B, T, C, NH));
  for (size_t i = 0; i < qkv.size(); ++i)
    qkv[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  for (size_t i = 0; i < dout.size(); ++i)
    dout[i] = static_cast<float>((i * 40503u) % 1000) / 1000.0f - 0.5f;

  const int hs = C / NH;
  // Causal flops: forward q·k^T and p·v over T(T+1)/2 entries per head;
  // backward four such products.
  const double causal = static_cast<double>(B) * NH * T * (T + 1) / 2.0 * hs * 2.0;
  std::printf("%s | B=%d T=%d C=%d NH=%d (head size %d), median of %d calls\n",
              k.Describe().c_str(), B, T, C, NH, hs, repeats);
  std::printf("%-32s %10s %12s\n", "call", "ms", "GFLOP/s");
  for (float p : {0.0f, 0.1f}) {
    DropoutPlan plan;
    plan.seed = 1337;
    plan.step = 3;
    plan.rates.attention_probs = p;
    const DropoutPlan* dropout = p > 0.0f ? &plan : nullptr;
    const double fwd = MedianMs(repeats, [&] {
      k.AttentionForward(out.data(), probs.data(), qkv.data(), B, T, C, NH, 0, dropout);
      k.Synchronize();
    });
    const double bwd = MedianMs(repeats, [&] {
      k.AttentionBackward(dqkv.data(), dout.data(), qkv.data(), out.data(), probs.data(), B, T, C,
                          NH, 0, dropout);
      k.Synchronize();
    });
    std::printf("forward,  dropout %.1f            %10.3f %12.1f\n", p, fwd,
                2 * causal / fwd / 1e6);
    std::printf("backward, dropout %.1f            %10.3f %12.1f\n", p, bwd,
                4 * causal / bwd / 1e6);
  }
  // The baseline: the forward's two products as full T x T sgemm per head,
  // one head per task, as attention's own tasks run them.
  std::vector<float> att(static_cast<size_t>(threads > 0 ? threads : 64) * T * T);
  const double full = MedianMs(repeats, [&] {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < NH; ++h) {
        const float* q = qkv.data() + static_cast<size_t>(b) * T * 3 * C + h * hs;
        float* s = att.data() + static_cast<size_t>(omp_get_thread_num()) * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, q, 3 * C, q + C, 3 * C,
                    0.0f, s, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, s, T, q + 2 * C,
                    3 * C, 0.0f, out.data() + static_cast<size_t>(b) * T * C + h * hs, C);
      }
    }
  });
  std::printf("full T x T sgemm pair per head  %10.3f %12.1f   (full flops: %.1f GFLOP/s)\n", full,
              2 * causal / full / 1e6,
              2.0 * B * NH * T * static_cast<double>(T) * hs * 2.0 / full / 1e6);
  return kExitOk;
}

}  // namespace
}  // namespace dropk

int main(int argc, char** argv) { return dropk::Run(argc, argv); }
