// Sampling: greedy, top-k bounds, reproducibility per seed.
#include "model/generate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <set>
#include <vector>

namespace dropk {
namespace {

std::vector<float> Logits() { return {0.1f, 2.0f, -1.0f, 1.5f, 0.3f, 1.9f, -3.0f, 0.0f}; }

int32_t Draw(const std::vector<float>& logits, const SamplingOptions& o, uint64_t pos) {
  std::vector<float> scratch(logits.size());
  std::vector<int32_t> ids(logits.size());
  return SampleToken(logits, o, pos, scratch, ids);
}

TEST(SampleTokenTest, TemperatureZeroAndTopKOneAreGreedy) {
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  SamplingOptions top1;
  top1.top_k = 1;
  for (uint64_t pos = 0; pos < 100; ++pos) {
    EXPECT_EQ(Draw(Logits(), greedy, pos), 1);
    EXPECT_EQ(Draw(Logits(), top1, pos), 1);
  }
}

TEST(SampleTokenTest, TopKNeverLeavesTheKMostLikely) {
  SamplingOptions o;
  o.top_k = 3;  // ids 1, 5, 3
  o.seed = 11;
  std::set<int32_t> seen;
  for (uint64_t pos = 0; pos < 2000; ++pos) seen.insert(Draw(Logits(), o, pos));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3, 5}));
}

// Ties at the k-th place go to the lower id, so which candidates a seed
// draws from does not depend on the C++ library's selection algorithm.
TEST(SampleTokenTest, TopKBreaksTiesByTheLowerId) {
  const std::vector<float> logits(10, 0.5f);
  std::vector<float> scratch(logits.size());
  std::vector<int32_t> ids(logits.size());
  std::set<int32_t> drawn;
  for (uint64_t position = 0; position < 2000; ++position) {
    drawn.insert(SampleToken(logits, {.top_k = 3, .seed = 11}, position, scratch, ids));
  }
  EXPECT_EQ(drawn, (std::set<int32_t>{0, 1, 2}));
}

TEST(SampleTokenTest, TopPKeepsTheSmallestSufficientPrefix) {
  SamplingOptions o;
  o.top_p = 0.01f;  // only the single most likely token
  for (uint64_t pos = 0; pos < 200; ++pos) EXPECT_EQ(Draw(Logits(), o, pos), 1);
}

TEST(SampleTokenTest, SameSeedSameDrawsAndFrequenciesFollowSoftmax) {
  SamplingOptions o;
  o.seed = 5;
  std::vector<int> counts(8, 0);
  for (uint64_t pos = 0; pos < 20000; ++pos) {
    const int32_t id = Draw(Logits(), o, pos);
    ASSERT_EQ(id, Draw(Logits(), o, pos));
    ++counts[id];
  }
  // p(1) = e^2 / sum(e^l) = 0.271...; 4 standard deviations is about 0.0126.
  double z = 0;
  for (float l : Logits()) z += std::exp(l);
  EXPECT_NEAR(counts[1] / 20000.0, std::exp(2.0) / z, 0.0126);
  SamplingOptions other = o;
  other.seed = 6;
  int differ = 0;
  for (uint64_t pos = 0; pos < 200; ++pos)
    differ += Draw(Logits(), o, pos) != Draw(Logits(), other, pos);
  EXPECT_GT(differ, 50);
}

// A 1-layer model over 17 tokens, context 8, with seeded weights.
struct TinyModel {
  std::unique_ptr<Kernels> kernels = MakeKernels(Device::kCpu, 1).value();
  std::unique_ptr<Gpt> gpt = Gpt::Create({17, 8, 1, 2, 8}, 1, kernels.get()).value();
  TinyModel() { gpt->InitWeights(3); }
};

TEST(GenerateTest, ReproducibleAndValidated) {
  const TinyModel model;
  Gpt* gpt = model.gpt.get();
  SamplingOptions o;
  o.seed = 9;
  o.top_k = 5;
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> a = Generate(*gpt, prompt, 20, o).value();
  EXPECT_EQ(a.size(), 20u);  // longer than block_size: the context window slides
  EXPECT_EQ(a, Generate(*gpt, prompt, 20, o).value());
  for (int32_t id : a) EXPECT_LT(id, 17);
  EXPECT_FALSE(Generate(*gpt, {}, 5, o).ok());
  const std::vector<int32_t> bad = {1, 17};
  auto status = Generate(*gpt, bad, 5, o).status();
  EXPECT_NE(status.message().find("17"), std::string::npos) << status;
}

// dropk-train's closing sample ignored SIGTERM: Generate could not be
// stopped. A stopped generation returns a prefix of the full one.
TEST(GenerateTest, StopEndsWithAPrefix) {
  const TinyModel model;
  Gpt* gpt = model.gpt.get();
  SamplingOptions o;
  o.seed = 9;
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> full = Generate(*gpt, prompt, 20, o).value();
  int asked = 0;
  const std::vector<int32_t> part =
      Generate(*gpt, prompt, 20, o, [&asked] { return ++asked > 7; }).value();
  ASSERT_EQ(part.size(), 7u);
  EXPECT_TRUE(std::equal(part.begin(), part.end(), full.begin()));
  EXPECT_TRUE(Generate(*gpt, prompt, 20, o, [] { return true; }).value().empty());
}

}  // namespace
}  // namespace dropk
