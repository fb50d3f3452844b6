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

TEST(CommTimeoutTest, StaysWithinWhatADeadlineCanHold) {
  // 1e38 s converted to int64 milliseconds was undefined: INT64_MIN on x86.
  EXPECT_EQ(CommTimeout(1e38, 0), milliseconds(static_cast<int64_t>(kCommTimeoutMaxS * 1000)));
  EXPECT_EQ(CommTimeout(0, 1e30), milliseconds(static_cast<int64_t>(kCommTimeoutMaxS * 1000)));
  EXPECT_GT(std::chrono::steady_clock::now() + CommTimeout(1e38, 0),
            std::chrono::steady_clock::now());
}

TEST(CommTimeoutTest, ATinyConfiguredTimeoutIsNotZero) {
  EXPECT_EQ(CommTimeout(1e-6, 0), milliseconds(1));
}

}  // namespace
}  // namespace dropk
