// Training throughput of the CPU GPT: tokens/s, achieved GFLOP/s and MFU
// against the sgemm peak of the same machine measured in the same run.
//
// One "step" is what dropk-train does per optimizer step with
// gradient_accumulation_steps = 1: zero grads, forward, backward with the
// gradient allreduce in buckets (overlapped unless --overlap=false), global
// gradient norm, AdamW. Tokens are synthetic (throughput does not depend on
// the text). Under mpirun every rank runs the step and rank 0 prints the
// job's figures: tokens/s of all ranks, MFU against the sum of the ranks'
// sgemm peaks (measured concurrently), and the communication time per step,
// exposed (the optimizer waited for it) and total.
// Usage: [mpirun -np N] dropk-train-throughput-bench [--steps N] [--threads N]
// [--config shakespeare|small|all] [--overlap true|false] [--profile]
// [--precision fp32|bf16].
// bench/run_train_bench.sh and bench/run_ddp_bench.sh run the comparisons.
#include <cblas.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <optional>

#include "bench_flags.h"

#include "base/exit_codes.h"
#include "comm/communicator.h"
#include "comm/gradient_bucketer.h"
#include "comm/mpi_communicator.h"
#include "model/gpt.h"
#include "model/kernels.h"
#include "model/profiled_kernels.h"
#include "trainer/optimizer.h"
#include "trainer/trainer.h"

extern "C" char* openblas_get_corename(void);

namespace dropk {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchConfig {
  std::string name;
  GptConfig shape;
  int batch_size;
  float dropout;
};

// Best sgemm GFLOP/s over a few square products large enough to reach peak.
double MeasureSgemmPeak(Kernels* /*kernels: sgemm is measured on the host BLAS*/) {
  const int n = 2048;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  double best = 0.0;
  for (int rep = 0; rep < 6; ++rep) {
    const Clock::time_point t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  return best;
}

// profiler: k itself when --profile is on (its totals cover the timed steps
// only and are printed after the figures), else null.
void RunOne(const BenchConfig& bc, Kernels* k, ProfiledKernels* profiler, Communicator& comm,
            bool overlap, double bucket_cap_mib, int steps, double peak_gflops) {
  std::unique_ptr<Gpt> gpt = Gpt::Create(bc.shape, bc.batch_size, k).value();
  gpt->InitWeights(1337);
  AdamWOptimizer opt(gpt.get(), {0.9f, 0.99f, 1e-8f, 0.1f});
  const int B = bc.batch_size, T = bc.shape.block_size;
  std::vector<int32_t> tokens(static_cast<size_t>(B) * T), targets(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = static_cast<int32_t>((i * 2654435761u) % bc.shape.vocab_size);
    targets[i] = static_cast<int32_t>((i * 40503u + 7) % bc.shape.vocab_size);
  }
  DropoutPlan plan;
  plan.seed = 1;
  plan.stream_base = static_cast<uint32_t>(comm.Rank());
  plan.rates = {bc.dropout, bc.dropout, bc.dropout, bc.dropout};
  std::vector<size_t> offsets;
  for (const ParamTensor& t : gpt->layout().tensors()) offsets.push_back(t.offset);
  GradientBucketer bucketer(
      &comm, gpt->grads(), gpt->num_params(), MemoryKind::kHost,
      PlanBuckets(offsets, gpt->num_params(), static_cast<size_t>(bucket_cap_mib * (1 << 20)), 4),
      overlap);
  const int world = comm.Size();
  auto step = [&](int s) {
    plan.step = static_cast<uint32_t>(s);
    gpt->ZeroGrad();
    gpt->Forward(tokens.data(), targets.data(), B, T, &plan);
    gpt->Backward(1.0f, world > 1 ? GradsReadyFn([&](size_t b, size_t e, DeviceEvent* ready) {
                    bucketer.OnGradsReady(b, e, ready);
                  })
                                  : GradsReadyFn());
    if (world > 1 && !bucketer.Wait().ok()) {
      std::fprintf(stderr, "bench: gradient allreduce failed\n");
      std::exit(1);
    }
    const double norm = std::sqrt(k->SumSquares(gpt->grads(), gpt->num_params()));
    opt.Step(1e-4f, ClipScale(norm, 1.0f));
  };
  const int warmup = 3;
  for (int s = 0; s < warmup; ++s) step(s);
  if (profiler != nullptr) profiler->Reset();
  std::vector<double> times;
  double exposed = 0, busy = 0;
  for (int s = 0; s < steps; ++s) {
    // Start every step together, so a step's time is the job's.
    if (!comm.Barrier()->Wait().ok()) std::exit(1);
    const Clock::time_point t0 = Clock::now();
    step(warmup + s);
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    exposed += bucketer.last_timing().exposed_s;
    busy += bucketer.last_timing().comm_s;
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double tokens_per_s = static_cast<double>(world) * B * T / median;
  const double gflops = world * gpt->TrainingFlops(B, T) / median / 1e9;
  if (comm.Rank() != 0) return;
  std::printf(
      "%-12s params %9zu | %d rank(s) x B=%d T=%d L=%d C=%d V=%d dropout %.2f | step %7.1f ms "
      "(median of %d) | %8.0f tokens/s | %6.1f GFLOP/s | MFU %5.1f%%",
      bc.name.c_str(), gpt->num_params(), world, B, T, bc.shape.n_layer, bc.shape.n_embd,
      bc.shape.vocab_size, bc.dropout, median * 1e3, steps, tokens_per_s, gflops,
      100.0 * gflops / peak_gflops);
  if (world > 1) {
    std::printf(" | %zu bucket(s), overlap %s: comm %.1f ms/step, exposed %.1f ms/step",
                bucketer.buckets().size(), overlap ? "on" : "off", 1e3 * busy / steps,
                1e3 * exposed / steps);
  }
  std::printf("\n");
  if (profiler != nullptr) {
    double total = 0;
    for (double t : times) total += t;
    std::printf("%s", profiler->Report(steps, total).c_str());
  }
}

}  // namespace
}  // namespace dropk

int main(int argc, char** argv) {
  CLI::App app("dropk training-throughput benchmark");
  int steps = 10, threads = 0;
  bool overlap = true, profile = false;
  double bucket_cap_mib = dropk::kDefaultBucketCapBytes / double(1 << 20);
  // The cap becomes a size_t byte count: finite, positive, at most 1 TiB
  // (CLI::PositiveNumber lets nan and 1e300 through).
  app.add_option("--bucket-cap-mib", bucket_cap_mib, "gradient bucket cap, MiB (at most 1048576)")
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            double v = 0;
            if (!CLI::detail::lexical_cast(value, v) || !std::isfinite(v) || !(v > 0) ||
                v > (1 << 20)) {
              return "must be a number in (0, 1048576]";
            }
            return "";
          },
          "(0, 1048576]"));
  std::string which = "all";
  app.add_option("--overlap", overlap, "overlap the gradient allreduce with backward");
  app.add_option("--steps", steps, "timed steps per config")->check(CLI::PositiveNumber);
  std::string precision = "fp32";
  app.add_option("--precision", precision, "fp32 | bf16 (bf16 matmul inputs through oneDNN)")
      ->check(CLI::IsMember({"fp32", "bf16"}, CLI::ignore_case));
  app.add_flag("--profile", profile, "print the time per kernel op per step after each config");
  app.add_option("--threads", threads, "threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  app.add_option("--config", which, "shakespeare | small | all")
      ->check(CLI::IsMember({"shakespeare", "small", "all"}));
  if (std::optional<int> code =
          dropk::ParseBenchFlags(app, argc, argv, "dropk-train-throughput-bench")) {
    return *code;
  }

  absl::StatusOr<std::unique_ptr<dropk::Communicator>> comm =
      dropk::LaunchedByMpi() ? dropk::MakeMpiCommunicator()
                             : absl::StatusOr<std::unique_ptr<dropk::Communicator>>(
                                   dropk::MakeSingleProcessCommunicator());
  if (!comm.ok()) {
    std::fprintf(stderr, "bench: %s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  dropk::KernelOptions options;
  options.num_threads = dropk::ThreadsPerRank(threads, dropk::LocalWorldSize());
  options.precision = (precision == "bf16" || precision == "BF16") ? dropk::MatmulPrecision::kBf16
                                                                   : dropk::MatmulPrecision::kFp32;
  auto kernels = dropk::MakeKernels(dropk::Device::kCpu, options);
  if (!kernels.ok()) {
    std::fprintf(stderr, "bench: %s\n", std::string(kernels.status().message()).c_str());
    return 1;
  }
  dropk::ProfiledKernels* profiler = nullptr;
  if (profile) {
    auto profiled = std::make_unique<dropk::ProfiledKernels>(*std::move(kernels));
    profiler = profiled.get();
    kernels = std::unique_ptr<dropk::Kernels>(std::move(profiled));
  }
  dropk::Kernels* k = kernels->get();
  // Every rank measures its sgemm peak at the same time; the job's peak is the sum.
  (void)(*comm)->Barrier()->Wait();
  double peak = dropk::MeasureSgemmPeak(k);
  const double rank_peak = peak;
  (void)(*comm)->AllReduce(dropk::HostBuffer(&peak, 1), dropk::ReduceOp::kSum)->Wait();
  if ((*comm)->Rank() == 0) {
    std::printf("%s | OpenBLAS core %s | sgemm peak (2048^3) %.1f GFLOP/s per rank, %.1f in all\n",
                k->Describe().c_str(), openblas_get_corename(), rank_peak, peak);
  }
  const std::vector<dropk::BenchConfig> configs = {
      {"shakespeare", {65, 64, 4, 4, 128}, 12, 0.0f},
      {"small", {256, 256, 6, 6, 384}, 8, 0.1f},
  };
  for (const auto& c : configs) {
    if (which == "all" || which == c.name)
      dropk::RunOne(c, k, profiler, **comm, overlap, bucket_cap_mib, steps, peak);
  }
  return 0;
}
