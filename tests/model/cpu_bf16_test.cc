// The CPU's precision bf16 (oneDNN matmuls with bf16 inputs, fp32
// accumulation): each projection against the fp32 kernels within bf16's
// rounding, a few GPT training steps tracking fp32's losses, and runs
// reproducible bit for bit at one thread count. Skipped, visibly, in a build
// without oneDNN or on a machine where oneDNN cannot run bf16.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "model/gpt.h"
#include "model/kernels.h"

namespace dropk {
namespace {

using Vec = std::vector<float>;

Vec Random(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Vec v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::unique_ptr<Kernels> Bf16KernelsOrSkip(int threads) {
  KernelOptions options;
  options.num_threads = threads;
  options.precision = MatmulPrecision::kBf16;
  absl::StatusOr<std::unique_ptr<Kernels>> k = MakeKernels(Device::kCpu, options);
  if (!k.ok()) return nullptr;
  return *std::move(k);
}

#define SKIP_WITHOUT_BF16(k)                                                            \
  if ((k) == nullptr) {                                                                 \
    GTEST_SKIP() << "cpu bf16 unavailable: "                                            \
                 << MakeKernels(Device::kCpu, {1, MatmulPrecision::kBf16, 0}).status(); \
  }

// Largest |a - b| relative to the largest |b|.
double MaxRelativeDifference(const Vec& a, const Vec& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

TEST(CpuBf16Test, ProjectionsMatchFp32WithinBf16Rounding) {
  std::unique_ptr<Kernels> bf16 = Bf16KernelsOrSkip(2);
  SKIP_WITHOUT_BF16(bf16);
  EXPECT_NE(bf16->Describe().find("bf16"), std::string::npos) << bf16->Describe();
  std::unique_ptr<Kernels> fp32 = MakeKernels(Device::kCpu, 2).value();
  constexpr int N = 70, C = 48, OC = 96;  // not multiples of any vector width
  const Vec inp = Random(N * C, 1), w = Random(OC * C, 2), bias = Random(OC, 3),
            dout = Random(N * OC, 4);
  struct Result {
    Vec out, dinp, dw, dbias;
  };
  auto run = [&](Kernels& k) {
    Result r{Vec(N * OC), Vec(N * C, 0.5f), Vec(OC * C, 0.25f), Vec(OC, 0.125f)};
    k.MatmulForward(r.out.data(), inp.data(), w.data(), bias.data(), N, C, OC);
    k.MatmulBackward(r.dinp.data(), r.dw.data(), r.dbias.data(), dout.data(), inp.data(), w.data(),
                     N, C, OC, /*accumulate_dinp=*/true);
    return r;
  };
  const Result want = run(*fp32), got = run(*bf16);
  // bf16 keeps 8 significant bits: each input is off by at most 2^-9
  // relative, so a dot product of C or N terms is off by about 2^-8 of the
  // largest term sums; 2e-2 of the largest output leaves a margin and is far
  // below what a wrong layout (a transposed operand) gives.
  EXPECT_LT(MaxRelativeDifference(got.out, want.out), 2e-2);
  EXPECT_LT(MaxRelativeDifference(got.dinp, want.dinp), 2e-2);
  EXPECT_LT(MaxRelativeDifference(got.dw, want.dw), 2e-2);
  // The bias gradient is a sum in fp32 in both modes.
  EXPECT_EQ(got.dbias, want.dbias);
  // Not simply fp32: the rounding to bf16 shows.
  EXPECT_NE(got.out, want.out);
}

// Trains a few steps at fp32 and at bf16 from the same weights on the same
// batch and returns the losses; `k` decides the precision.
std::vector<float> TrainSteps(Kernels* k, int steps, Vec* final_params) {
  const GptConfig config{/*vocab_size=*/65, /*block_size=*/32, /*n_layer=*/2, /*n_head=*/4,
                         /*n_embd=*/64};
  constexpr int kB = 4, kT = 32;
  std::vector<int32_t> tokens, targets;
  for (int i = 0; i < kB * kT; ++i) {
    tokens.push_back((i * 7 + 3) % config.vocab_size);
    targets.push_back((i * 5 + 1) % config.vocab_size);
  }
  std::unique_ptr<Gpt> gpt = Gpt::Create(config, kB, k).value();
  gpt->InitWeights(11);
  DeviceBuffer<float> m(k, gpt->num_params()), v(k, gpt->num_params());
  std::vector<float> losses;
  DropoutPlan plan;
  plan.seed = 3;
  plan.rates = {0.1f, 0.1f, 0.1f, 0.1f};
  for (int s = 0; s < steps; ++s) {
    plan.step = static_cast<uint32_t>(s);
    gpt->ZeroGrad();
    losses.push_back(gpt->Forward(tokens.data(), targets.data(), kB, kT, &plan));
    gpt->Backward(1.0f);
    AdamWArgs args;
    args.lr = 3e-3f;
    args.bias_correction1 = 1.0f - std::pow(0.9f, s + 1);
    args.bias_correction2 = 1.0f - std::pow(0.999f, s + 1);
    k->AdamW(gpt->params(), gpt->grads(), m.data(), v.data(), gpt->num_params(), args);
  }
  final_params->resize(gpt->num_params());
  k->CopyToHost(final_params->data(), gpt->params(), final_params->size() * sizeof(float));
  return losses;
}

TEST(CpuBf16Test, TrainingTracksFp32AndIsReproducible) {
  std::unique_ptr<Kernels> bf16 = Bf16KernelsOrSkip(2);
  SKIP_WITHOUT_BF16(bf16);
  std::unique_ptr<Kernels> fp32 = MakeKernels(Device::kCpu, 2).value();
  constexpr int kSteps = 20;
  Vec fp32_params, bf16_params, again_params;
  const std::vector<float> want = TrainSteps(fp32.get(), kSteps, &fp32_params);
  const std::vector<float> got = TrainSteps(bf16.get(), kSteps, &bf16_params);
  ASSERT_LT(want.back(), want.front() - 0.5f) << "the fp32 run must learn for this to mean much";
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(got[s], want[s], 0.02f + 0.01f * want[s]) << "step " << s;
  }
  // Same precision, same thread count: the same bits.
  std::unique_ptr<Kernels> bf16_again = Bf16KernelsOrSkip(2);
  const std::vector<float> again = TrainSteps(bf16_again.get(), kSteps, &again_params);
  EXPECT_EQ(again, got);
  EXPECT_EQ(again_params, bf16_params);
}

TEST(CpuBf16Test, Tf32IsRefusedOnTheCpuWithOneLine) {
  const absl::StatusOr<std::unique_ptr<Kernels>> k =
      MakeKernels(Device::kCpu, {1, MatmulPrecision::kTf32, 0});
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.status().message().find("tf32 needs the cuda device"), std::string::npos)
      << k.status();
}

}  // namespace
}  // namespace dropk
