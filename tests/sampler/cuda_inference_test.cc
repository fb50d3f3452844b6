// The CUDA inference engine: its logits against the CPU engine's, its batch
// invariance bit for bit on the GPU, and its refusals. Without a GPU (or in a
// build without CUDA) the GPU tests skip with the engine's own one-line
// reason, and the refusal test checks that line instead.
#include <cmath>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/inference.h"
#include "model/param_layout.h"
#include "support/relative_error.h"
#include "test_util.h"

namespace dropk {
namespace {

InferenceOptions CudaOptions(int max_slots) {
  InferenceOptions o;
  o.device = Device::kCuda;
  o.max_slots = max_slots;
  return o;
}

// Prefills slots 0-7 (prompts of 1 to 4 tokens) in both engines, then
// decodes steps of 1, 3 and 8 rows in each, expecting the same bits from
// both every time. Fatal on the first difference.
void CompareGraphsWithLaunches(InferenceEngine& graphs, InferenceEngine& launches) {
  const int V = graphs.config().vocab_size;
  for (int slot = 0; slot < 8; ++slot) {
    const std::vector<int32_t> prompt(1 + slot % 4, static_cast<int32_t>(3 + slot));
    const float* la = graphs.Prefill(slot, prompt);
    const std::vector<float> want(la, la + V);
    const float* lb = launches.Prefill(slot, prompt);
    ASSERT_EQ(std::memcmp(want.data(), lb, V * sizeof(float)), 0) << "prefill of slot " << slot;
  }
  int step = 0;
  for (int rows : {1, 3, 8, 3, 1, 8, 3}) {
    std::vector<int> slots(rows);
    std::vector<int32_t> tokens(rows);
    for (int r = 0; r < rows; ++r) {
      slots[r] = (r * 3 + step) % 8;  // distinct: 3 is prime to 8
      tokens[r] = static_cast<int32_t>((step * 11 + r * 5 + 1) % V);
    }
    const float* la = graphs.Decode(slots, tokens);
    const std::vector<float> want(la, la + slots.size() * V);
    const float* lb = launches.Decode(slots, tokens);
    ASSERT_EQ(std::memcmp(want.data(), lb, want.size() * sizeof(float)), 0)
        << "decode step " << step << " of " << slots.size() << " rows";
    ++step;
  }
}

// The engine on the GPU, or the reason there is none (for GTEST_SKIP).
absl::StatusOr<std::unique_ptr<InferenceEngine>> CudaEngine(const GptConfig& config,
                                                            const std::vector<float>& params,
                                                            int max_slots) {
  return MakeInferenceEngine(config, params, CudaOptions(max_slots));
}

using test_util::RelativeError;

// Without a GPU the engine is refused at creation with one line that names
// the device; nothing crashes and nothing is half-built.
TEST(CudaInferenceTest, RefusedWithOneLineWhereThereIsNoGpu) {
  const GptConfig config = testing::TinyConfig(61, 32);
  const std::vector<float> params = testing::RandomParams(config, 7);
  auto engine = CudaEngine(config, params, 4);
  if (engine.ok()) GTEST_SKIP() << "a GPU is present, so there is no refusal to check";
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition) << engine.status();
  const std::string message(engine.status().message());
  EXPECT_NE(message.find("device cuda"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(CudaInferenceTest, BadOrdinalIsRefused) {
  const GptConfig config = testing::TinyConfig(61, 32);
  const std::vector<float> params = testing::RandomParams(config, 7);
  auto probe = CudaEngine(config, params, 1);
  if (!probe.ok()) GTEST_SKIP() << "needs a GPU: " << probe.status().message();
  InferenceOptions o = CudaOptions(1);
  o.cuda_device = 4096;
  auto engine = MakeInferenceEngine(config, params, o);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument) << engine.status();
}

// A --max-batch whose KV caches cannot fit (2 layers x 8192 positions x 32
// channels x 2 is 4 MiB a slot: a million slots want 4 TiB) is refused
// before anything is allocated, with one line naming the parts and what to
// lower; the GPU stays usable for an engine that fits.
TEST(CudaInferenceTest, MaxBatchPastTheGpuMemoryIsRefusedNamingTheParts) {
  const GptConfig config{61, 8192, /*n_layer=*/2, /*n_head=*/2, /*n_embd=*/32};
  const std::vector<float> params(ParamLayout(config).num_params(), 0.01f);
  auto probe = CudaEngine(config, params, 1);
  if (!probe.ok()) GTEST_SKIP() << "needs a GPU: " << probe.status().message();
  probe->reset();
  auto huge = CudaEngine(config, params, 1000000);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  const std::string message(huge.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  for (const char* part : {"1000000 slots", "KV caches", "GiB free", "lower --max-batch"}) {
    EXPECT_NE(message.find(part), std::string::npos) << part << " in: " << message;
  }
  auto fits = CudaEngine(config, params, 2);
  ASSERT_TRUE(fits.ok()) << fits.status();
  const std::vector<int32_t> prompt = {1, 2, 3};
  const float* logits = (*fits)->Prefill(0, prompt);
  EXPECT_TRUE(std::isfinite(logits[0]));
}

// Prefill, then 40 decode steps: the GPU's logits stay within fp32 rounding
// of the CPU engine's (other summation orders, expf).
TEST(CudaInferenceTest, LogitsMatchTheCpuEngine) {
  const GptConfig config = testing::TinyConfig(61, 64);
  const std::vector<float> params = testing::RandomParams(config, 11);
  auto gpu = CudaEngine(config, params, 4);
  if (!gpu.ok()) GTEST_SKIP() << "needs a GPU: " << gpu.status().message();
  auto cpu = MakeInferenceEngine(config, params, {.max_slots = 4, .num_threads = 1});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const int V = config.vocab_size, slot = 3;
  const std::vector<int32_t> prompt = {3, 14, 15, 9, 26, 5, 35};
  std::vector<float> want(V), got(V);
  std::memcpy(want.data(), (*cpu)->Prefill(slot, prompt), V * sizeof(float));
  std::memcpy(got.data(), (*gpu)->Prefill(slot, prompt), V * sizeof(float));
  EXPECT_LT(RelativeError(got, want), 1e-5) << "prefill";
  for (int step = 0; step < 40; ++step) {
    const int32_t next = (step * 7 + 3) % V;
    std::memcpy(want.data(), (*cpu)->Decode({&slot, 1}, {&next, 1}), V * sizeof(float));
    std::memcpy(got.data(), (*gpu)->Decode({&slot, 1}, {&next, 1}), V * sizeof(float));
    ASSERT_LT(RelativeError(got, want), 1e-5) << "decode step " << step;
  }
  EXPECT_EQ((*gpu)->Length(slot), static_cast<int>(prompt.size()) + 40);
}

// The same sequence gives bitwise-identical logits on the GPU alone and
// among 15 others (other slots, prompts and lengths, rows reordered).
TEST(CudaInferenceTest, DecodeIsBatchInvariantBitForBit) {
  const GptConfig config = testing::TinyConfig(61, 64);
  const std::vector<float> params = testing::RandomParams(config, 9);
  auto alone = CudaEngine(config, params, 16);
  if (!alone.ok()) GTEST_SKIP() << "needs a GPU: " << alone.status().message();
  auto crowd = CudaEngine(config, params, 16);
  ASSERT_TRUE(crowd.ok()) << crowd.status();
  testing::ExpectDecodeBatchInvariant(**alone, **crowd);
}

// Several prompts prefilled in one step on the GPU (the scheduler's joins,
// InferenceEngine::PrefillMany) give each prompt the bits of its prefill
// alone, and the caches the next decode step needs.
TEST(CudaInferenceTest, PrefillManyGivesEachPromptItsOwnBits) {
  const GptConfig config = testing::TinyConfig(61, 64);
  const std::vector<float> params = testing::RandomParams(config, 13);
  auto alone = CudaEngine(config, params, 8);
  if (!alone.ok()) GTEST_SKIP() << "needs a GPU: " << alone.status().message();
  auto together = CudaEngine(config, params, 8);
  ASSERT_TRUE(together.ok()) << together.status();
  testing::ExpectPrefillManyGivesEachPromptItsOwnBits(**alone, **together);
}

// Decode steps replayed as CUDA graphs give the bits of the same steps
// launched kernel by kernel: row counts 1, 3 and 8, each seen again after
// others (a graph replayed with another plan), over prompts of several
// lengths (prefill, which launches, between them). A failed capture would
// fall back to launches and still give the bits, so the engine's stderr
// must not say that one failed: else this compared launches with launches.
TEST(CudaInferenceTest, GraphsGiveTheBitsOfSeparateLaunches) {
  const GptConfig config = testing::TinyConfig(61, 64);
  const std::vector<float> params = testing::RandomParams(config, 13);
  InferenceOptions graphs = CudaOptions(8), launches = CudaOptions(8);
  graphs.cuda_graphs = true;
  launches.cuda_graphs = false;
  auto a = MakeInferenceEngine(config, params, graphs);
  if (!a.ok()) GTEST_SKIP() << "needs a GPU: " << a.status().message();
  auto b = MakeInferenceEngine(config, params, launches);
  ASSERT_TRUE(b.ok()) << b.status();
  ::testing::internal::CaptureStderr();
  CompareGraphsWithLaunches(**a, **b);
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(said.find("CUDA graph capture"), std::string::npos) << said;
}

}  // namespace
}  // namespace dropk
