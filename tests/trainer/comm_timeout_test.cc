#include "trainer/comm_timeout.h"

#include <gtest/gtest.h>

namespace dropk {
namespace {

using std::chrono::milliseconds;

TEST(CommTimeoutTest, AConfiguredTimeoutWins) {
  EXPECT_EQ(CommTimeout(7.5, 0), milliseconds(7500));
  EXPECT_EQ(CommTimeout(7.5, 100), milliseconds(7500));
}

TEST(CommTimeoutTest, AutoWaitsLongUntilAStepIsMeasured) {
  EXPECT_EQ(CommTimeout(0, 0), milliseconds(300000));
}

TEST(CommTimeoutTest, AutoFollowsTheSlowestStepAboveAFloor) {
  EXPECT_EQ(CommTimeout(0, 0.05), milliseconds(30000));  // fast steps: the floor
  EXPECT_EQ(CommTimeout(0, 4), milliseconds(80000));     // 20 x 4 s
}

}  // namespace
}  // namespace dropk
