#include "trainer/comm_timeout.h"

#include <gtest/gtest.h>

#include <sstream>

#include "support/temp_dir.h"
#include "support/thread_communicator.h"
#include "support/tiny_smoke_run.h"
#include "trainer/trainer.h"

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

// A collective that outlasts a configured comm_timeout_s names the setting:
// the message blamed a stuck rank only, though a rank that is just slower
// (a long evaluation, a slow disk) ends the job the same way. Rank 1 never
// joins here, so rank 0's first collective times out.
TEST(CommTimeoutTest, AConfiguredTimeoutThatRunsOutIsNamed) {
  test_util::ScopedTempDir tmp("comm_timeout");
  ASSERT_TRUE(test_util::PrepareShakespeareData(tmp.Path("data")).ok());
  TrainConfig config = test_util::TinySmokeEveryStepConfig(tmp.Path("data"), tmp.Path("run"), 2);
  config.set_comm_timeout_s(0.5);
  absl::Status rank0;
  test_util::RunRanks(2, [&](Communicator& comm) {
    if (comm.Rank() != 0) return;
    std::ostringstream log;
    rank0 = RunTraining(config, comm, log).status();
  });
  EXPECT_TRUE(absl::IsDeadlineExceeded(rank0)) << rank0;
  EXPECT_NE(rank0.message().find("; that limit is comm_timeout_s=0.5: raise it, or set 0 (auto)"),
            std::string::npos)
      << rank0;
}

}  // namespace
}  // namespace dropk
