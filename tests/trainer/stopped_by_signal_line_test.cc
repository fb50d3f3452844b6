// The line dropk-train's rank 0 prints when a stop signal ended the run.
// After another rank failed, mpirun's SIGTERM to the others made rank 0 say
// "stopped by signal before the first step" as if a user had stopped the
// run; a SIGTERM in a job of several ranks now says what else it may be.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <string>
#include <vector>

#include "trainer/training_checkpoints.h"

namespace dropk {
namespace {

using ::testing::HasSubstr;

TEST(StoppedBySignalLineTest, OneRankOrAnotherSignalSaysOnlyWhatWasSaved) {
  EXPECT_EQ(StoppedBySignalLine(SIGTERM, 0, 1, "/runs/a", {}),
            "dropk-train: stopped by signal before the first step; nothing was saved");
  EXPECT_EQ(StoppedBySignalLine(SIGUSR1, 5, 4, "/runs/a", {}),
            "dropk-train: stopped by signal after step 5, checkpoint saved; resume with "
            "--resume=latest");
}

TEST(StoppedBySignalLineTest, ASigtermInAJobOfSeveralRanksMayBeMpirunEndingTheJob) {
  EXPECT_EQ(StoppedBySignalLine(SIGTERM, 0, 2, "/runs/a", {}),
            "dropk-train: stopped by signal before the first step; nothing was saved; the signal "
            "was a SIGTERM: from a user or a scheduler, or from mpirun ending the job after "
            "another rank failed (see that rank's report or /runs/a/failures/)");
}

TEST(StoppedBySignalLineTest, QuotesTheLastFailureRecordedDuringTheRun) {
  const std::vector<std::string> failures = {
      "2026-12-02T13:40:02.123Z host h0 pid 12: rank 2 of 3: out of memory",
      "2026-12-02T13:40:03.456Z host h1 pid 34: rank 1 of 3: allreduce timed out"};
  EXPECT_THAT(StoppedBySignalLine(SIGTERM, 7, 3, "/runs/a", failures),
              HasSubstr("after step 7, checkpoint saved; resume with --resume=latest; the signal "
                        "was a SIGTERM, and /runs/a/failures recorded a failure since this run "
                        "started (2026-12-02T13:40:03.456Z host h1 pid 34: rank 1 of 3: allreduce "
                        "timed out): mpirun may have sent it on ending the job after that "
                        "failure"));
}

}  // namespace
}  // namespace dropk
