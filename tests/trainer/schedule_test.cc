// The learning-rate schedule and gradient clipping.
#include "trainer/schedule.h"

#include <gtest/gtest.h>

#include "trainer/config.h"
#include "trainer/optimizer.h"

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

}  // namespace
}  // namespace dropk
