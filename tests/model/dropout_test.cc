// Dropout masks: rate, scaling, purity (DESIGN invariant 1), and the two
// stream policies' addressing.
#include "model/dropout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "model/kernels.h"

namespace dropk {
namespace {

std::vector<float> Scales(uint64_t seed, uint32_t stream, uint32_t site, uint32_t step, uint64_t e0,
                          int64_t n, float p) {
  std::vector<float> s(n);
  DropoutScales(seed, stream, site, step, e0, n, p, s.data());
  return s;
}

TEST(DropoutTest, KeepRateWithinFourStandardDeviations) {
  const int64_t n = 1 << 22;
  for (float p : {0.1f, 0.5f, 0.9f}) {
    const std::vector<float> s = Scales(42, 0, 3, 7, 0, n, p);
    int64_t kept = 0;
    for (float v : s) kept += v != 0.0f;
    const double expected = (1.0 - p) * n;
    const double sd = std::sqrt(n * p * (1.0 - p));
    EXPECT_LT(std::abs(kept - expected), 4 * sd) << "p=" << p << " kept=" << kept;
  }
}

TEST(DropoutTest, KeptValuesScaledExactlyByInverseKeepProbability) {
  const float p = 0.3f;
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 1).value();
  const int B = 2, T = 8, C = 64;
  std::vector<float> x(B * T * C), zero(B * T * C, 0.0f), out(B * T * C);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.25f + 0.01f * static_cast<float>(i % 97);
  DropoutPlan plan;
  plan.seed = 5;
  plan.step = 11;
  plan.rates.mlp_output = p;
  k->ResidualDropoutForward(out.data(), zero.data(), x.data(), B, T, C, DropoutKind::kMlpOutput, 1,
                            &plan);
  int dropped = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (out[i] == 0.0f) {
      ++dropped;
    } else {
      EXPECT_EQ(out[i], x[i] * (1.0f / (1.0f - p))) << i;
    }
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, static_cast<int>(x.size()));
}

TEST(DropoutTest, SameKeySameMaskAndAnyChangedWordChangesIt) {
  const int64_t n = 4099;  // not a multiple of 4
  const std::vector<float> base = Scales(1, 2, 3, 4, 0, n, 0.5f);
  EXPECT_EQ(base, Scales(1, 2, 3, 4, 0, n, 0.5f));
  EXPECT_NE(base, Scales(9, 2, 3, 4, 0, n, 0.5f)) << "seed";
  EXPECT_NE(base, Scales(1, 3, 3, 4, 0, n, 0.5f)) << "stream";
  EXPECT_NE(base, Scales(1, 2, 4, 4, 0, n, 0.5f)) << "site";
  EXPECT_NE(base, Scales(1, 2, 3, 5, 0, n, 0.5f)) << "step";
}

TEST(DropoutTest, ScalesAreAPureFunctionOfTheElementIndex) {
  // Any sub-range, aligned or not, reproduces the same per-element decisions.
  const std::vector<float> whole = Scales(7, 0, 1, 2, 0, 1000, 0.4f);
  for (uint64_t start : {1u, 2u, 3u, 4u, 5u, 517u}) {
    const std::vector<float> part = Scales(7, 0, 1, 2, start, 1000 - start, 0.4f);
    for (size_t i = 0; i < part.size(); ++i) ASSERT_EQ(part[i], whole[start + i]) << start;
  }
  // And each agrees with the single-element definition.
  const uint64_t threshold = DropoutKeepThreshold(0.4f);
  for (uint64_t e = 0; e < 1000; ++e) {
    ASSERT_EQ(whole[e] != 0.0f, DropoutKeep(7, 0, 1, 2, e, threshold)) << e;
  }
}

TEST(DropoutTest, ScalesAgreeWithTheDefinitionAtEveryOffsetAndLength) {
  // DropoutScales draws Philox blocks in batches: runs that start, end or
  // both inside a batch, runs shorter than one block, and runs across the
  // wrap of the 32-bit block counter (element 2^34) all keep each element's
  // own decision.
  // Every start within a group of 16 elements (the vector stores' width),
  // and nothing is written outside the run: guards on both sides stay.
  const float p = 0.3f;
  const uint64_t threshold = DropoutKeepThreshold(p);
  constexpr int kGuard = 32;
  constexpr float kUntouched = -7.0f;
  for (uint64_t base : {uint64_t{0}, (uint64_t{1} << 34) - 150}) {
    for (uint64_t start = base; start < base + 17; ++start) {
      for (int64_t n : {0, 1, 2, 3, 5, 15, 16, 17, 63, 64, 65, 127, 128, 129, 300}) {
        std::vector<float> guarded(n + 2 * kGuard, kUntouched);
        DropoutScales(13, 4, 6, 8, start, n, p, guarded.data() + kGuard);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(guarded[kGuard + i] != 0.0f, DropoutKeep(13, 4, 6, 8, start + i, threshold))
              << "start " << start << " n " << n << " i " << i;
        }
        for (int g = 0; g < kGuard; ++g) {
          ASSERT_EQ(guarded[g], kUntouched) << "before the run: start " << start << " n " << n;
          ASSERT_EQ(guarded[kGuard + n + g], kUntouched)
              << "after the run: start " << start << " n " << n;
        }
      }
    }
  }
}

TEST(DropoutTest, ZeroRateIsTheIdentity) {
  for (float s : Scales(3, 1, 1, 1, 0, 10000, 0.0f)) ASSERT_EQ(s, 1.0f);
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 1).value();
  const int B = 1, T = 4, C = 8;
  std::vector<float> x(B * T * C), out(B * T * C);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) - 3.5f;
  DropoutPlan plan;  // all rates 0
  plan.seed = 1;
  k->DropoutBackward(out.data(), x.data(), B, T, C, DropoutKind::kEmbedding, 0, &plan);
  EXPECT_EQ(out, x);
}

TEST(DropoutTest, PerSampleMasksDoNotDependOnBatchPosition) {
  // Sample 1 of a micro-batch starting at global sample 4 draws the same mask
  // as sample 0 of a micro-batch starting at global sample 5.
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 1).value();
  const int T = 4, C = 16;
  std::vector<float> ones(2 * T * C, 1.0f), out2(2 * T * C), out1(T * C);
  DropoutPlan plan;
  plan.seed = 3;
  plan.step = 9;
  plan.per_sample = true;
  plan.rates.attention_output = 0.5f;
  plan.stream_base = 4;
  k->DropoutBackward(out2.data(), ones.data(), 2, T, C, DropoutKind::kAttentionOutput, 0, &plan);
  plan.stream_base = 5;
  k->DropoutBackward(out1.data(), ones.data(), 1, T, C, DropoutKind::kAttentionOutput, 0, &plan);
  EXPECT_EQ(std::vector<float>(out2.begin() + T * C, out2.end()), out1);

  // Per-rank addressing instead spans the whole micro-batch with one stream.
  plan.per_sample = false;
  plan.stream_base = 0;
  k->DropoutBackward(out2.data(), ones.data(), 2, T, C, DropoutKind::kAttentionOutput, 0, &plan);
  const std::vector<float> direct =
      Scales(3, 0, DropoutSiteId(DropoutKind::kAttentionOutput, 0), 9, 0, 2 * T * C, 0.5f);
  EXPECT_EQ(out2, direct);
}

}  // namespace
}  // namespace dropk
