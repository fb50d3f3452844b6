// The learning-rate schedule, the batch loader and gradient clipping.
#include "trainer/schedule.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <vector>

#include "trainer/batch_loader.h"
#include "trainer/config.h"
#include "trainer/optimizer.h"
#include "trainer/token_file.h"

namespace dropk {
namespace {

TEST(ScheduleTest, WarmupThenCosineToMinLr) {
  TrainConfig c = DefaultTrainConfig();
  c.set_learning_rate(1e-3f);
  c.set_min_lr(1e-4f);
  c.set_warmup_iters(100);
  c.set_lr_decay_iters(2000);
  EXPECT_FLOAT_EQ(LearningRateAt(c, 0), 1e-3f * 1 / 101);
  EXPECT_FLOAT_EQ(LearningRateAt(c, 99), 1e-3f * 100 / 101);
  EXPECT_FLOAT_EQ(LearningRateAt(c, 100), 1e-3f);
  EXPECT_NEAR(LearningRateAt(c, 1050), 5.5e-4f, 1e-7f);  // halfway: mean of lr and min_lr
  EXPECT_FLOAT_EQ(LearningRateAt(c, 2000), 1e-4f);
  EXPECT_FLOAT_EQ(LearningRateAt(c, 5000), 1e-4f);
  for (int s = 101; s <= 2000; ++s) ASSERT_LE(LearningRateAt(c, s), LearningRateAt(c, s - 1));
}

TEST(ClipScaleTest, ClipsOnlyAboveTheLimit) {
  EXPECT_EQ(ClipScale(0.5, 1.0f), 1.0f);
  EXPECT_FLOAT_EQ(ClipScale(4.0, 1.0f), 0.25f);
  EXPECT_EQ(ClipScale(100.0, 0.0f), 1.0f) << "0 disables clipping";
}

class BatchLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::path(::testing::TempDir()) / "batch_loader_test.bin";
    std::vector<int32_t> tokens(1000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i % 50);
    ASSERT_TRUE(WriteTokenFile(path_.string(), tokens, 50).ok());
    file_ = std::make_unique<TokenFile>(TokenFile::Open(path_.string()).value());
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::filesystem::path path_;
  std::unique_ptr<TokenFile> file_;
};

TEST_F(BatchLoaderTest, BatchesArePureFunctionsOfSeedAndStepInRange) {
  const int T = 16;
  BatchLoader a(file_.get(), 7, T, kTrainBatches), b(file_.get(), 7, T, kTrainBatches);
  BatchLoader other_seed(file_.get(), 8, T, kTrainBatches), eval(file_.get(), 7, T, kEvalValBatches);
  int differ_seed = 0, differ_split = 0;
  for (uint64_t step = 0; step < 50; ++step) {
    for (uint64_t s = 0; s < 8; ++s) {
      const uint64_t off = a.SampleOffset(step, s);
      ASSERT_EQ(off, b.SampleOffset(step, s));
      ASSERT_LE(off + T + 1, file_->size());
      differ_seed += off != other_seed.SampleOffset(step, s);
      differ_split += off != eval.SampleOffset(step, s);
    }
  }
  EXPECT_GT(differ_seed, 350);
  EXPECT_GT(differ_split, 350);
}

TEST_F(BatchLoaderTest, TargetsAreInputsShiftedByOneAndSplitsCompose) {
  const int T = 8, B = 4;
  BatchLoader loader(file_.get(), 3, T, kTrainBatches);
  std::vector<int32_t> in(B * T), tg(B * T);
  loader.Fill(5, 0, B, in.data(), tg.data());
  for (int b = 0; b < B; ++b) {
    const uint64_t off = loader.SampleOffset(5, b);
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(in[b * T + t], (*file_)[off + t]);
      EXPECT_EQ(tg[b * T + t], (*file_)[off + t + 1]);
    }
  }
  // Two micro-batches of 2 read the same samples as one batch of 4.
  std::vector<int32_t> in2(B * T), tg2(B * T);
  loader.Fill(5, 0, 2, in2.data(), tg2.data());
  loader.Fill(5, 2, 2, in2.data() + 2 * T, tg2.data() + 2 * T);
  EXPECT_EQ(in, in2);
  EXPECT_EQ(tg, tg2);
}

}  // namespace
}  // namespace dropk
