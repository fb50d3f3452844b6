// The KV-cache engine against the full re-forward, and its batch invariance.
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "model/gpt.h"
#include "model/inference.h"
#include "test_util.h"

namespace dropk {
namespace {

TEST(InferenceTest, KvCacheDecodeMatchesFullForward) {
  const GptConfig config = testing::TinyConfig(61, 32);
  const std::vector<float> params = testing::RandomParams(config, 7);
  auto kernels = MakeKernels(Device::kCpu, 2);
  ASSERT_TRUE(kernels.ok());
  auto gpt = Gpt::Create(config, 1, kernels->get());
  ASSERT_TRUE(gpt.ok());
  (*kernels)->CopyToDevice((*gpt)->params(), params.data(), params.size() * sizeof(float));
  auto engine = MakeInferenceEngine(config, params, {.max_slots = 4, .num_threads = 2});
  ASSERT_TRUE(engine.ok()) << engine.status();

  std::vector<int32_t> context = {3, 14, 15, 9, 26};
  const float* logits = (*engine)->Prefill(2, context);
  std::vector<float> want(config.vocab_size);
  for (int step = 0; step < 20; ++step) {
    (*gpt)->Forward(context.data(), nullptr, 1, static_cast<int>(context.size()), nullptr);
    (*gpt)->LogitsToHost(0, static_cast<int>(context.size()) - 1, want.data());
    for (int v = 0; v < config.vocab_size; ++v) {
      ASSERT_NEAR(logits[v], want[v], 1e-5f * std::max(1.0f, std::abs(want[v])))
          << "step " << step << " vocab " << v;
    }
    const int32_t next = (step * 7 + 3) % config.vocab_size;
    context.push_back(next);
    const int slot = 2;
    logits = (*engine)->Decode(std::span<const int>(&slot, 1), std::span<const int32_t>(&next, 1));
  }
  EXPECT_EQ((*engine)->Length(2), static_cast<int>(context.size()));
}

// The same sequence gives bitwise-identical logits alone and among 15 others
// (different slots, prompts and lengths), and with another thread count.
TEST(InferenceTest, DecodeIsBatchInvariantBitForBit) {
  const GptConfig config = testing::TinyConfig(61, 64);
  const std::vector<float> params = testing::RandomParams(config, 9);
  auto alone = MakeInferenceEngine(config, params, {.max_slots = 16, .num_threads = 1});
  auto crowd = MakeInferenceEngine(config, params, {.max_slots = 16, .num_threads = 2});
  ASSERT_TRUE(alone.ok() && crowd.ok());
  const std::vector<int32_t> prompt = {5, 6, 7, 8};
  const int V = config.vocab_size;
  std::vector<float> a(V), b(V);
  std::memcpy(a.data(), (*alone)->Prefill(0, prompt), V * sizeof(float));
  // In the crowd, our sequence sits in slot 11; others have other prompts.
  for (int s = 0; s < 16; ++s) {
    if (s == 11) continue;
    std::vector<int32_t> p(1 + s % 5, static_cast<int32_t>((s * 13) % V));
    (*crowd)->Prefill(s, p);
  }
  std::memcpy(b.data(), (*crowd)->Prefill(11, prompt), V * sizeof(float));
  ASSERT_EQ(0, std::memcmp(a.data(), b.data(), V * sizeof(float)));
  std::vector<int> slots(16);
  std::vector<int32_t> tokens(16);
  for (int step = 0; step < 30; ++step) {
    const int32_t next = (step * 11 + 1) % V;
    const int zero = 0;
    std::memcpy(
        a.data(),
        (*alone)->Decode(std::span<const int>(&zero, 1), std::span<const int32_t>(&next, 1)),
        V * sizeof(float));
    // Rows in a different order each step; our row at a moving index.
    for (int i = 0; i < 16; ++i) {
      slots[i] = (i + step) % 16;
      tokens[i] = slots[i] == 11 ? next : (step + slots[i]) % V;
    }
    const float* rows = (*crowd)->Decode(slots, tokens);
    const int row = static_cast<int>(std::find(slots.begin(), slots.end(), 11) - slots.begin());
    ASSERT_EQ(0, std::memcmp(a.data(), rows + static_cast<size_t>(row) * V, V * sizeof(float)))
        << "step " << step;
  }
}

TEST(InferenceTest, RejectsBadShapes) {
  const GptConfig config = testing::TinyConfig(61, 32);
  std::vector<float> params(10);
  EXPECT_FALSE(MakeInferenceEngine(config, params, {}).ok());
  const std::vector<float> good = testing::RandomParams(config, 1);
  EXPECT_FALSE(MakeInferenceEngine(config, good, {.max_slots = 0}).ok());
}

}  // namespace
}  // namespace dropk
