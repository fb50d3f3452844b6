// GPU training: throughput of the GPT-2 124M shape, and a short run that
// must track the CPU's losses. Built in every build; without a GPU it says
// so in one line and exits 2.
//
//   --mode=throughput  GPT-2 124M (12 layers, 12 heads, 768 wide, context
//                      1024, vocab 50257 padded to 50304), batch --batch, at
//                      each precision in --precisions (and, with
//                      --attention=materialised,flash, each attention
//                      kind: "bf16_flash" is bf16 through the flash
//                      attention kernels) and dropout 0 and 0.1:
//                      one line per run with the median step time, tokens/s
//                      and MFU against --peak_tflops (default: the H100/H200
//                      SXM datasheet's dense bf16 rate, as llm.c counts MFU).
//                      A step is what dropk-train does per optimizer step:
//                      zero grads, forward, backward, global norm, AdamW.
//                      With --profile, each run is followed by --steps more
//                      steps timed op by op (ProfiledKernels: a device wait
//                      after every op, so those steps are slower and are not
//                      in the figures above) and the per-op table.
//   --mode=track       nanoGPT's shakespeare_char shape (4 layers, 4 heads,
//                      128 wide, context 64, batch 12) on Tiny Shakespeare,
//                      --steps steps with dropout 0.1 on the CPU and on the
//                      GPU at each precision from the same initial weights,
//                      batches and masks; prints the losses every 20 steps
//                      and the largest difference, and exits 1 when a
//                      precision's exceeds its bound (fp32 0.02, tf32 0.05,
//                      bf16 0.1).
//
// Figures are for the machine they ran on; bench/torch_gpt2_bench.py gives
// PyTorch's on the same GPU for the ratio.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <optional>

#include "bench_flags.h"

#include "model/gpt.h"
#include "model/kernels.h"
#include "model/profiled_kernels.h"
#include "trainer/optimizer.h"

namespace dropk {
namespace {

using Clock = std::chrono::steady_clock;

absl::StatusOr<MatmulPrecision> ParsePrecision(const std::string& name) {
  if (name == "fp32") return MatmulPrecision::kFp32;
  if (name == "tf32") return MatmulPrecision::kTf32;
  if (name == "bf16") return MatmulPrecision::kBf16;
  return absl::InvalidArgumentError("unknown precision '" + name + "' (fp32, tf32, bf16)");
}

// One optimizer step as the trainer takes it; returns the loss.
float TrainStep(Gpt* gpt, AdamWOptimizer* opt, const int32_t* x, const int32_t* y, int B, int T,
                const DropoutPlan* plan, float lr) {
  gpt->ZeroGrad();
  const float loss = gpt->Forward(x, y, B, T, plan);
  gpt->Backward(1.0f);
  const double norm = std::sqrt(gpt->kernels()->SumSquares(gpt->grads(), gpt->num_params()));
  opt->Step(lr, ClipScale(norm, 1.0f));
  return loss;
}

// One configuration of the CUDA kernels that the bench runs, and its label
// ("tf32", "bf16_flash", "bf16_flash_tc").
struct Variant {
  MatmulPrecision precision;
  bool flash_attention;
  bool flash_bf16_tensor_cores;
  std::string label;
};

// --precisions x --attention; the flash kernels only where they apply (not
// fp32), the bf16 tensor-core ones (flash_bf16_tensor_cores) at bf16 only.
std::vector<Variant> Variants(const std::vector<MatmulPrecision>& precisions,
                              const std::vector<std::string>& attention) {
  std::vector<Variant> variants;
  for (MatmulPrecision precision : precisions) {
    for (const std::string& kind : attention) {
      const bool tensor_cores = kind == "flash_bf16_tensor_cores";
      const bool flash = kind == "flash" || tensor_cores;
      if (flash && precision == MatmulPrecision::kFp32) continue;
      if (tensor_cores && precision != MatmulPrecision::kBf16) continue;
      variants.push_back({precision, flash, tensor_cores,
                          std::string(MatmulPrecisionName(precision)) + (tensor_cores ? "_flash_tc"
                                                                         : flash      ? "_flash"
                                                                                      : "")});
    }
  }
  return variants;
}

int Throughput(const std::vector<Variant>& variants, int B, int steps, double peak_tflops,
               bool profile) {
  const GptConfig shape{50304, 1024, 12, 12, 768};
  const int T = shape.block_size;
  std::vector<int32_t> x(static_cast<size_t>(B) * T), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<int32_t>((i * 2654435761u) % 50257);
    y[i] = static_cast<int32_t>((i * 40503u + 7) % 50257);
  }
  for (const Variant& variant : variants) {
    KernelOptions options;
    options.precision = variant.precision;
    options.flash_attention = variant.flash_attention;
    options.flash_bf16_tensor_cores = variant.flash_bf16_tensor_cores;
    absl::StatusOr<std::unique_ptr<Kernels>> k = MakeKernels(Device::kCuda, options);
    if (!k.ok()) {
      std::fprintf(stderr, "gpu bench: %s\n", std::string(k.status().message()).c_str());
      return 2;
    }
    ProfiledKernels* profiler = nullptr;
    if (profile) {
      auto profiled = std::make_unique<ProfiledKernels>(*std::move(k));
      profiler = profiled.get();
      profiler->set_paused(true);
      k = std::unique_ptr<Kernels>(std::move(profiled));
    }
    std::unique_ptr<Gpt> gpt = Gpt::Create(shape, B, k->get()).value();
    gpt->InitWeights(1337);
    AdamWOptimizer opt(gpt.get(), {0.9f, 0.95f, 1e-8f, 0.1f});
    for (float dropout : {0.0f, 0.1f}) {
      DropoutPlan plan;
      plan.seed = 1;
      plan.rates = {dropout, dropout, dropout, dropout};
      const DropoutPlan* p = dropout > 0 ? &plan : nullptr;
      for (int s = 0; s < 3; ++s) {  // warm-up: plans, scratch, clocks
        plan.step = static_cast<uint32_t>(s);
        TrainStep(gpt.get(), &opt, x.data(), y.data(), B, T, p, 1e-4f);
      }
      std::vector<double> times;
      float loss = 0;
      for (int s = 0; s < steps; ++s) {
        plan.step = static_cast<uint32_t>(3 + s);
        const Clock::time_point t0 = Clock::now();
        loss = TrainStep(gpt.get(), &opt, x.data(), y.data(), B, T, p, 1e-4f);
        (*k)->Synchronize();  // the optimizer step too
        times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      std::sort(times.begin(), times.end());
      const double median = times[times.size() / 2];
      const double tflops = gpt->TrainingFlops(B, T) / median / 1e12;
      std::printf(
          "dropk %-4s dropout %.1f | GPT-2 124M B=%d T=%d | step %7.1f ms (median of %d) | "
          "%9.0f tokens/s | %6.1f TFLOP/s | MFU %5.1f%% | loss %.3f\n",
          variant.label.c_str(), dropout, B, T, median * 1e3, steps,
          static_cast<double>(B) * T / median, tflops, 100.0 * tflops / peak_tflops, loss);
      if (profiler != nullptr) {
        profiler->Reset();
        profiler->set_paused(false);
        const Clock::time_point t0 = Clock::now();
        for (int s = 0; s < steps; ++s) {
          plan.step = static_cast<uint32_t>(3 + steps + s);
          TrainStep(gpt.get(), &opt, x.data(), y.data(), B, T, p, 1e-4f);
        }
        (*k)->Synchronize();
        const double total = std::chrono::duration<double>(Clock::now() - t0).count();
        profiler->set_paused(true);
        std::printf("profile %s dropout %.1f (%d steps, a device wait after each op):\n%s",
                    variant.label.c_str(), dropout, steps, profiler->Report(steps, total).c_str());
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

// Tiny Shakespeare as character ids (sorted distinct bytes).
absl::StatusOr<std::vector<int32_t>> ReadCorpus(const std::string& path, int* vocab) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot read corpus " + path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::set<unsigned char> chars(text.begin(), text.end());
  std::map<unsigned char, int32_t> id;
  for (unsigned char c : chars) id.emplace(c, static_cast<int32_t>(id.size()));
  std::vector<int32_t> tokens;
  tokens.reserve(text.size());
  for (unsigned char c : text) tokens.push_back(id[c]);
  *vocab = static_cast<int>(id.size());
  return tokens;
}

int Track(const std::vector<Variant>& variants, int steps, const std::string& corpus, int threads) {
  int vocab = 0;
  absl::StatusOr<std::vector<int32_t>> data = ReadCorpus(corpus, &vocab);
  if (!data.ok()) {
    std::fprintf(stderr, "gpu bench: %s\n", std::string(data.status().message()).c_str());
    return 2;
  }
  const GptConfig shape{vocab, 64, 4, 4, 128};
  const int B = 12, T = 64;
  // The batches of every step, fixed up front, so every device sees the same.
  std::mt19937_64 gen(1337);
  std::uniform_int_distribution<size_t> start(0, data->size() - T - 2);
  std::vector<std::vector<int32_t>> xs(steps), ys(steps);
  for (int s = 0; s < steps; ++s) {
    for (int b = 0; b < B; ++b) {
      const size_t o = start(gen);
      xs[s].insert(xs[s].end(), data->begin() + o, data->begin() + o + T);
      ys[s].insert(ys[s].end(), data->begin() + o + 1, data->begin() + o + T + 1);
    }
  }
  auto run = [&](Kernels* k) {
    std::unique_ptr<Gpt> gpt = Gpt::Create(shape, B, k).value();
    gpt->InitWeights(1337);
    AdamWOptimizer opt(gpt.get(), {0.9f, 0.99f, 1e-8f, 0.1f});
    DropoutPlan plan;
    plan.seed = 7;
    plan.rates = {0.1f, 0.1f, 0.1f, 0.1f};
    std::vector<float> losses;
    for (int s = 0; s < steps; ++s) {
      plan.step = static_cast<uint32_t>(s);
      const float lr = 1e-3f * std::min(1.0f, (s + 1) / 20.0f);
      losses.push_back(TrainStep(gpt.get(), &opt, xs[s].data(), ys[s].data(), B, T, &plan, lr));
    }
    return losses;
  };
  std::unique_ptr<Kernels> cpu = MakeKernels(Device::kCpu, threads).value();
  const std::vector<float> reference = run(cpu.get());
  int status = 0;
  for (const Variant& variant : variants) {
    const MatmulPrecision precision = variant.precision;
    KernelOptions options;
    options.precision = precision;
    options.flash_attention = variant.flash_attention;
    options.flash_bf16_tensor_cores = variant.flash_bf16_tensor_cores;
    absl::StatusOr<std::unique_ptr<Kernels>> gpu = MakeKernels(Device::kCuda, options);
    if (!gpu.ok()) {
      std::fprintf(stderr, "gpu bench: %s\n", std::string(gpu.status().message()).c_str());
      return 2;
    }
    const std::vector<float> losses = run(gpu->get());
    double worst = 0;
    for (int s = 0; s < steps; ++s) {
      // A NaN loss on either side counts as an infinite difference: std::max
      // would keep `worst` (every comparison with NaN is false) and pass it.
      const double diff = std::abs(static_cast<double>(losses[s]) - reference[s]);
      worst = std::isnan(diff) ? INFINITY : std::max(worst, diff);
      if (s % 20 == 0 || s == steps - 1) {
        std::printf("track %-4s step %4d | cpu loss %.4f | gpu loss %.4f\n", variant.label.c_str(),
                    s, reference[s], losses[s]);
      }
    }
    const double bound = precision == MatmulPrecision::kFp32   ? 0.02
                         : precision == MatmulPrecision::kTf32 ? 0.05
                                                               : 0.1;
    const bool ok = worst <= bound;
    std::printf("track %-4s %d steps, dropout 0.1: max |gpu - cpu| loss %.4f (bound %.2f) %s\n",
                variant.label.c_str(), steps, worst, bound, ok ? "PASS" : "FAIL");
    std::fflush(stdout);
    if (!ok) status = 1;
  }
  return status;
}

}  // namespace
}  // namespace dropk

int main(int argc, char** argv) {
  CLI::App app("dropk GPU training benchmark and CPU-tracking check");
  std::string mode = "throughput";
  std::vector<std::string> precision_names = {"fp32", "tf32", "bf16"};
  int batch = 16, steps = 10, threads = 0;
  double peak_tflops = 989.4;
  std::string corpus = "data/tinyshakespeare.txt";
  app.add_option("--mode", mode, "throughput | track")
      ->check(CLI::IsMember({"throughput", "track"}));
  app.add_option("--precisions", precision_names, "fp32 tf32 bf16")->delimiter(',');
  // "materialised" as the config field attention_kernels spells it; the
  // American spelling is taken too.
  std::vector<std::string> attention = {"materialised"};
  app.add_option("--attention", attention,
                 "materialised, flash (the flash kernels, tf32 and bf16 only) and/or "
                 "flash_bf16_tensor_cores (bf16 only)")
      ->delimiter(',')
      ->check(CLI::IsMember({"materialised", "materialized", "flash", "flash_bf16_tensor_cores"}));
  app.add_option("--batch", batch, "sequences per step (throughput)")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps (throughput) or steps (track)")
      ->check(CLI::PositiveNumber);
  app.add_option("--peak_tflops", peak_tflops, "the rate MFU divides by")
      ->check(CLI::PositiveNumber);
  app.add_option("--corpus", corpus, "text for --mode=track");
  bool profile = false;
  app.add_flag("--profile", profile,
               "throughput: after each run, time as many steps op by op and print the table");
  app.add_option("--threads", threads, "CPU threads for the track reference (0 = all)")
      ->check(CLI::NonNegativeNumber);
  if (std::optional<int> code = dropk::ParseBenchFlags(app, argc, argv, "dropk-gpu-train-bench")) {
    return *code;
  }
  std::vector<dropk::MatmulPrecision> precisions;
  for (const std::string& name : precision_names) {
    absl::StatusOr<dropk::MatmulPrecision> p = dropk::ParsePrecision(name);
    if (!p.ok()) {
      std::fprintf(stderr, "gpu bench: --precisions: %s\n",
                   std::string(p.status().message()).c_str());
      return 2;
    }
    precisions.push_back(*p);
  }
  // No GPU: say so once, before any work.
  if (absl::StatusOr<std::unique_ptr<dropk::Kernels>> gpu =
          dropk::MakeKernels(dropk::Device::kCuda, dropk::KernelOptions{});
      !gpu.ok()) {
    std::fprintf(stderr, "gpu bench: %s\n", std::string(gpu.status().message()).c_str());
    return 2;
  }
  const std::vector<dropk::Variant> variants = dropk::Variants(precisions, attention);
  if (mode == "track") return dropk::Track(variants, steps, corpus, threads);
  return dropk::Throughput(variants, batch, steps, peak_tflops, profile);
}
