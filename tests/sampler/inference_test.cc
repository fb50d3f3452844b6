// The KV-cache engine against the full re-forward, and its batch invariance.
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "model/gpt.h"
#include "model/inference.h"
#include "support/relative_error.h"
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
  testing::ExpectDecodeBatchInvariant(**alone, **crowd);
}

// Widths that are no multiple of the 16 summing lanes of attention's dots or
// of a panel's 48 columns (40 channels, 20 per head) and a crowd of 15, no
// multiple of the row tiles: every output also takes the tails and the
// smaller tiles of the products, and must still match the same sequence
// decoded alone.
TEST(InferenceTest, DecodeIsBatchInvariantAtRaggedWidths) {
  GptConfig config = testing::TinyConfig(61, 64);
  config.n_embd = 40;
  const std::vector<float> params = testing::RandomParams(config, 11);
  auto alone = MakeInferenceEngine(config, params, {.max_slots = 16, .num_threads = 1});
  auto crowd = MakeInferenceEngine(config, params, {.max_slots = 16, .num_threads = 2});
  ASSERT_TRUE(alone.ok() && crowd.ok());
  testing::ExpectDecodeBatchInvariant(**alone, **crowd, /*crowd_size=*/15);
}

// Several prompts prefilled in one step give each one's logits bit for bit
// as prefilled alone, and leave each slot's cache as a prefill alone does
// (the next decode step agrees too).
TEST(InferenceTest, PrefillManyGivesEachPromptItsOwnBits) {
  const GptConfig config = testing::TinyConfig(61, 64);
  const std::vector<float> params = testing::RandomParams(config, 13);
  auto alone = MakeInferenceEngine(config, params, {.max_slots = 8, .num_threads = 1});
  auto together = MakeInferenceEngine(config, params, {.max_slots = 8, .num_threads = 2});
  ASSERT_TRUE(alone.ok() && together.ok());
  testing::ExpectPrefillManyGivesEachPromptItsOwnBits(**alone, **together);
  EXPECT_EQ((*together)->MaxStepTokens(), 64);  // max(8 slots, block_size 64)
}

// The largest relative error of `got`'s logits against `want`'s (engines
// over the same parameters) through a prefill of `prompt` into `slot` and 20
// decode steps after it; the prefill's logits must differ in some bit.
double LargestErrorThroughDecode(InferenceEngine& want_engine, InferenceEngine& got_engine,
                                 const std::vector<int32_t>& prompt, int slot) {
  const int V = want_engine.config().vocab_size;
  std::vector<float> want(V), got(V);
  std::memcpy(want.data(), want_engine.Prefill(slot, prompt), V * sizeof(float));
  std::memcpy(got.data(), got_engine.Prefill(slot, prompt), V * sizeof(float));
  double largest = test_util::RelativeError(got, want);
  EXPECT_NE(std::memcmp(got.data(), want.data(), V * sizeof(float)), 0);
  for (int step = 0; step < 20; ++step) {
    const int32_t next = (step * 5 + 2) % V;
    std::memcpy(want.data(), want_engine.Decode({&slot, 1}, {&next, 1}), V * sizeof(float));
    std::memcpy(got.data(), got_engine.Decode({&slot, 1}, {&next, 1}), V * sizeof(float));
    largest = std::max(largest, test_util::RelativeError(got, want));
  }
  return largest;
}

// bf16 weights: the logits stay near fp32's through prefill and 20 decode
// steps (each weight is off by at most 2^-9 of itself), are not fp32's
// (the weights really are rounded), and keep batch invariance bit for bit.
TEST(InferenceTest, Bf16WeightsStayNearFp32AndBatchInvariant) {
  const GptConfig config = testing::TinyConfig(61, 64);
  const std::vector<float> params = testing::RandomParams(config, 17);
  const InferenceOptions bf16{.max_slots = 16, .num_threads = 1, .weights = EngineWeights::kBf16};
  auto fp32 = MakeInferenceEngine(config, params, {.max_slots = 16, .num_threads = 1});
  auto rounded = MakeInferenceEngine(config, params, bf16);
  ASSERT_TRUE(fp32.ok() && rounded.ok());
  const double largest =
      LargestErrorThroughDecode(**fp32, **rounded, {3, 14, 15, 9, 26, 5}, /*slot=*/5);
  EXPECT_LT(largest, 2e-2);
  EXPECT_GT(largest, 1e-5);

  InferenceOptions two_threads = bf16;
  two_threads.num_threads = 2;
  auto alone = MakeInferenceEngine(config, params, bf16);
  auto crowd = MakeInferenceEngine(config, params, two_threads);
  ASSERT_TRUE(alone.ok() && crowd.ok());
  testing::ExpectDecodeBatchInvariant(**alone, **crowd);
}

// Only the CPU engine holds bf16 weights; the CUDA engine's refusal names
// them (whether or not this machine has a GPU, or the build CUDA).
TEST(InferenceTest, Bf16WeightsOnCudaAreRefusedByName) {
  const GptConfig config = testing::TinyConfig(61, 32);
  const std::vector<float> params = testing::RandomParams(config, 1);
  const auto engine = MakeInferenceEngine(
      config, params, {.device = Device::kCuda, .weights = EngineWeights::kBf16});
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument) << engine.status();
  EXPECT_NE(engine.status().message().find("weights bf16"), std::string::npos) << engine.status();
}

// A bf16 KV cache: the logits stay near fp32's through prefill and 20 decode
// steps (each cached key and value is off by at most 2^-9 of itself), are
// not fp32's (the cache really is rounded), and keep batch invariance bit
// for bit, with bf16 weights too.
TEST(InferenceTest, Bf16KvCacheStaysNearFp32AndBatchInvariant) {
  const GptConfig config = testing::TinyConfig(61, 64);
  const std::vector<float> params = testing::RandomParams(config, 19);
  const InferenceOptions bf16{.max_slots = 16, .num_threads = 1, .kv_cache = EngineKvCache::kBf16};
  auto fp32 = MakeInferenceEngine(config, params, {.max_slots = 16, .num_threads = 1});
  auto rounded = MakeInferenceEngine(config, params, bf16);
  ASSERT_TRUE(fp32.ok() && rounded.ok());
  const double largest =
      LargestErrorThroughDecode(**fp32, **rounded, {3, 14, 15, 9, 26, 5, 35, 8}, /*slot=*/3);
  EXPECT_LT(largest, 1e-2);
  EXPECT_GT(largest, 1e-5);

  for (const EngineWeights weights : {EngineWeights::kFp32, EngineWeights::kBf16}) {
    SCOPED_TRACE(EngineWeightsName(weights));
    InferenceOptions one_thread = bf16;
    one_thread.weights = weights;
    InferenceOptions two_threads = one_thread;
    two_threads.num_threads = 2;
    auto alone = MakeInferenceEngine(config, params, one_thread);
    auto crowd = MakeInferenceEngine(config, params, two_threads);
    ASSERT_TRUE(alone.ok() && crowd.ok());
    testing::ExpectDecodeBatchInvariant(**alone, **crowd);
    auto prefill_alone = MakeInferenceEngine(config, params, one_thread);
    auto prefill_together = MakeInferenceEngine(config, params, two_threads);
    ASSERT_TRUE(prefill_alone.ok() && prefill_together.ok());
    testing::ExpectPrefillManyGivesEachPromptItsOwnBits(**prefill_alone, **prefill_together);
  }
}

// Head sizes that are no multiple of the 16 lanes a bf16 head is packed in
// (12: all of it past the last 16; 20: one 16 and a tail of 4) keep batch
// invariance with a bf16 cache too.
TEST(InferenceTest, Bf16KvCacheIsBatchInvariantAtOddHeadSizes) {
  for (const auto& [n_embd, n_head] : {std::pair{24, 2}, std::pair{40, 2}}) {
    SCOPED_TRACE(n_embd / n_head);
    GptConfig config = testing::TinyConfig(61, 64);
    config.n_embd = n_embd;
    config.n_head = n_head;
    const std::vector<float> params = testing::RandomParams(config, 23);
    const InferenceOptions one{.max_slots = 16, .num_threads = 1, .kv_cache = EngineKvCache::kBf16};
    InferenceOptions two = one;
    two.num_threads = 2;
    auto alone = MakeInferenceEngine(config, params, one);
    auto crowd = MakeInferenceEngine(config, params, two);
    ASSERT_TRUE(alone.ok() && crowd.ok());
    testing::ExpectDecodeBatchInvariant(**alone, **crowd, /*crowd_size=*/15);
  }
}

// Only the CPU engine holds a bf16 KV cache; the CUDA engine's refusal names
// it (whether or not this machine has a GPU, or the build CUDA).
TEST(InferenceTest, Bf16KvCacheOnCudaIsRefusedByName) {
  const GptConfig config = testing::TinyConfig(61, 32);
  const std::vector<float> params = testing::RandomParams(config, 1);
  const auto engine = MakeInferenceEngine(
      config, params, {.device = Device::kCuda, .kv_cache = EngineKvCache::kBf16});
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument) << engine.status();
  EXPECT_NE(engine.status().message().find("kv_cache bf16"), std::string::npos) << engine.status();
}

TEST(InferenceTest, RejectsBadShapes) {
  const GptConfig config = testing::TinyConfig(61, 32);
  std::vector<float> params(10);
  EXPECT_FALSE(MakeInferenceEngine(config, params, {}).ok());
  const std::vector<float> good = testing::RandomParams(config, 1);
  EXPECT_FALSE(MakeInferenceEngine(config, good, {.max_slots = 0}).ok());
  // A thread count past any machine's is refused, not an OpenMP team that
  // crashes the process (dropk study topk --threads 100000 did).
  for (const int threads : {-1, InferenceOptions::kMaxThreads + 1, 100000}) {
    const auto engine = MakeInferenceEngine(config, good, {.num_threads = threads});
    ASSERT_FALSE(engine.ok()) << threads;
    EXPECT_NE(engine.status().message().find("num_threads"), std::string::npos);
  }
  EXPECT_TRUE(MakeInferenceEngine(config, good, {.num_threads = 2}).ok());
}

}  // namespace
}  // namespace dropk
