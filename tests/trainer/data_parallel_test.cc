// How steps are split across ranks and micro-batches: samples and dropout
// plans.
#include "trainer/data_parallel.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>

#include "trainer/config.h"

namespace dropk {
namespace {

TEST(DataParallelTest, RanksAndMicroBatchesCoverTheGlobalBatchOnce) {
  for (int world : {1, 2, 3, 4}) {
    for (int accum : {1, 2, 3}) {
      const int B = 5;
      std::set<uint64_t> samples;
      for (int micro = 0; micro < accum; ++micro) {
        for (int rank = 0; rank < world; ++rank) {
          for (int b = 0; b < B; ++b) samples.insert(FirstSampleOf(micro, rank, world, B) + b);
        }
      }
      ASSERT_EQ(samples.size(), static_cast<size_t>(world * accum * B));
      EXPECT_EQ(*samples.rbegin(), static_cast<uint64_t>(world * accum * B - 1));
    }
  }
  // N ranks x 1 micro-batch read what 1 rank x N micro-batches reads.
  for (int r = 0; r < 4; ++r) EXPECT_EQ(FirstSampleOf(0, r, 4, 8), FirstSampleOf(r, 0, 1, 8));
}

TEST(DataParallelTest, PerRankPlansDifferByRankAndMicroBatch) {
  TrainConfig c = DefaultTrainConfig();
  c.set_dropout(0.1f);
  c.set_gradient_accumulation_steps(2);
  c.set_dropout_stream(TrainConfig::PER_RANK);
  const DropoutPlan r0 = DropoutPlanFor(c, 7, 1, 0, 2), r1 = DropoutPlanFor(c, 7, 1, 1, 2);
  EXPECT_EQ(r0.stream_base, 0u);
  EXPECT_EQ(r1.stream_base, 1u);
  EXPECT_EQ(r0.step, 15u) << "micro-batches since the start: 7 * 2 + 1";
  EXPECT_FALSE(r0.per_sample);
  EXPECT_FLOAT_EQ(r0.rates.attention_probs, 0.1f);
}

// The largest run validation allows, 2^32 micro-batches, numbers its last
// micro-batch 2^32 - 1: every PER_RANK plan of it has its own step.
TEST(DataParallelTest, TheLargestValidRunFillsTheDropoutCounterExactly) {
  TrainConfig c = DefaultTrainConfig();
  c.set_dropout(0.1f);
  c.set_max_iters(65'536);
  c.set_gradient_accumulation_steps(65'536);
  ASSERT_TRUE(ValidateTrainConfig(c).ok()) << ValidateTrainConfig(c);
  EXPECT_EQ(DropoutPlanFor(c, c.max_iters() - 1, 65'535, 0, 1).step, UINT32_MAX);
}

// A counter past 32 bits wrapped silently (2^32 read as step 0, repeating
// the first micro-batch's masks); validation keeps runs below it, and a
// caller that goes past it is a broken invariant.
TEST(DataParallelDeathTest, APerRankStepPastTheCounterIsACheckFailure) {
  TrainConfig c = DefaultTrainConfig();
  c.set_dropout(0.1f);
  c.set_gradient_accumulation_steps(65'536);
  EXPECT_DEATH(DropoutPlanFor(c, 65'536, 0, 0, 1), "does not fit 32 bits");
}

// PER_SAMPLE dropout 0.1 with 65,536 micro-batches of 1,024 samples per
// rank: 64 ranks give exactly 2^32 samples a step.
TrainConfig PerSampleConfigOf64KSamplesPerRank() {
  TrainConfig c = DefaultTrainConfig();
  c.set_dropout(0.1f);
  c.set_dropout_stream(TrainConfig::PER_SAMPLE);
  c.set_gradient_accumulation_steps(65'536);
  c.set_batch_size(1024);
  return c;
}

// PER_SAMPLE masks number a global batch's samples with 32 bits: a step of
// more samples is refused at start, naming the product, where before the
// stream numbers wrapped silently and later samples reused earlier masks.
TEST(DataParallelTest, PerSampleStreamsMustFitInThirtyTwoBits) {
  TrainConfig c = PerSampleConfigOf64KSamplesPerRank();
  // 64 x 65,536 x 1,024 = 2^32 samples: the last is stream 2^32 - 1.
  EXPECT_TRUE(CheckSampleStreamsFit(c, 64).ok());
  EXPECT_EQ(DropoutPlanFor(c, 0, 65'535, 63, 64).stream_base + 1023u, UINT32_MAX);
  const absl::Status too_many = CheckSampleStreamsFit(c, 65);
  EXPECT_TRUE(absl::IsInvalidArgument(too_many)) << too_many;
  EXPECT_NE(too_many.message().find("65 ranks x gradient_accumulation_steps=65536 x "
                                    "batch_size=1024"),
            std::string::npos)
      << too_many;
  EXPECT_NE(too_many.message().find("dropout_stream: per_sample"), std::string::npos);
  // Without dropout, or with PER_RANK masks, no stream numbers samples.
  c.set_dropout(0.0f);
  EXPECT_TRUE(CheckSampleStreamsFit(c, 65).ok());
  c.set_dropout(0.1f);
  c.set_dropout_stream(TrainConfig::PER_RANK);
  EXPECT_TRUE(CheckSampleStreamsFit(c, 65).ok());
}

// A caller past the checked bound is a broken invariant, not a silent wrap.
TEST(DataParallelDeathTest, APerSampleStreamPastThirtyTwoBitsIsACheckFailure) {
  TrainConfig c = PerSampleConfigOf64KSamplesPerRank();
  EXPECT_DEATH(DropoutPlanFor(c, 0, 65'535, 64, 65), "does not fit 32 bits");
}

TEST(DataParallelTest, PerSamplePlansDoNotDependOnTheSplit) {
  TrainConfig two_ranks = DefaultTrainConfig();
  two_ranks.set_dropout(0.2f);
  two_ranks.set_dropout_stream(TrainConfig::PER_SAMPLE);
  TrainConfig one_rank = two_ranks;
  one_rank.set_gradient_accumulation_steps(2);
  for (int r = 0; r < 2; ++r) {
    const DropoutPlan a = DropoutPlanFor(two_ranks, 5, 0, r, 2);
    const DropoutPlan b = DropoutPlanFor(one_rank, 5, r, 0, 1);
    EXPECT_EQ(a.stream_base, b.stream_base);
    EXPECT_EQ(a.step, b.step);
    EXPECT_TRUE(a.per_sample);
  }
}

}  // namespace
}  // namespace dropk
