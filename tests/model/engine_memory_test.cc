// The CUDA inference engine's memory budget (model/cuda/engine_memory.h):
// plain arithmetic, checked here against figures worked out by hand.
#include "cuda/engine_memory.h"

#include <gtest/gtest.h>

namespace dropk::cuda {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

GptConfig Gpt2Small() {
  GptConfig c;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_embd = 768;
  c.block_size = 1024;
  c.vocab_size = 50304;
  return c;
}

TEST(EngineMemoryTest, ArraysAreRoundedToCudaMallocsGranule) {
  EXPECT_EQ(DeviceArrayBytes(1, 4), 2 * kMiB);
  EXPECT_EQ(DeviceArrayBytes(0, 4), 2 * kMiB);  // an empty array still takes one granule
  EXPECT_EQ(DeviceArrayBytes(kMiB / 2, 4), 2 * kMiB);
  EXPECT_EQ(DeviceArrayBytes(kMiB / 2 + 1, 4), 4 * kMiB);
}

TEST(EngineMemoryTest, Gpt2SmallAt64SlotsByHand) {
  const GptConfig c = Gpt2Small();
  const size_t params = 124475904;
  const EngineMemory m = EngineMemoryFor(c, params, 64, /*graphs=*/true);
  // 497,903,616 bytes of fp32 weights, rounded up to 2 MiB: 238 granules.
  EXPECT_EQ(m.weights, 238 * 2 * kMiB);
  // Keys and values: 2 x 12 layers x 64 slots x 1024 positions x 768 x 4 bytes.
  EXPECT_EQ(m.kv_caches, size_t{2} * 12 * 64 * 1024 * 768 * 4);
  // 1024 rows (a whole window of prefill): 4 arrays of 3 MiB, 9 MiB, 12 MiB,
  // and two 4 KiB arrays of row statistics, 2 MiB each.
  EXPECT_EQ(m.activations, 4 * 4 * kMiB + 10 * kMiB + 12 * kMiB + 2 * 2 * kMiB);
  // 64 rows of 50304 logits (12.28 MiB -> 14) and the plan (16 KiB -> 2).
  EXPECT_EQ(m.logits, 14 * kMiB + 2 * kMiB);
  // 64 graphs of 2 + 8 * 12 + 4 = 102 nodes.
  EXPECT_EQ(m.graphs, size_t{64} * 102 * EngineMemory::kGraphNodeBytes);
  EXPECT_EQ(m.headroom, EngineMemory::kRuntimeHeadroom);
  EXPECT_EQ(m.total(), m.weights + m.kv_caches + m.activations + m.logits + m.graphs + m.headroom);
}

TEST(EngineMemoryTest, GraphsCountOnlyWhenOnAndGrowWithSlots) {
  const GptConfig c = Gpt2Small();
  EXPECT_EQ(EngineMemoryFor(c, 1000, 16, /*graphs=*/false).graphs, 0u);
  const size_t at16 = EngineMemoryFor(c, 1000, 16, true).graphs;
  const size_t at32 = EngineMemoryFor(c, 1000, 32, true).graphs;
  EXPECT_GT(at16, 0u);
  EXPECT_EQ(at32, 2 * at16);
}

TEST(EngineMemoryTest, DescribeNamesEveryPart) {
  const std::string text = EngineMemoryFor(Gpt2Small(), 1000, 8, true).Describe();
  for (const char* part :
       {"weights", "KV caches", "activations and logits", "CUDA graphs", "runtime headroom"}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << " missing from: " << text;
  }
}

}  // namespace
}  // namespace dropk::cuda
