// The checkpoint directory (or the run's last checkpoint) deleted from
// outside while training runs: the next save recreates what it needs and
// training goes on, as before, but now rank 0 says so in one warning line
// naming the directory, the checkpoint that is gone and the step it saves.
// Before, nothing said that the run's earlier checkpoints were lost.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <sstream>
#include <string>

#include "support/shakespeare_data.h"
#include "support/temp_dir.h"
#include "support/tiny_smoke_run.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

// A log that runs `action` once, as soon as a line holding `trigger` has
// been written (the training loop flushes each checkpoint's line before it
// trains on), and keeps every line.
class TriggeringLog : public std::stringbuf {
 public:
  TriggeringLog(std::string trigger, std::function<void()> action)
      : trigger_(std::move(trigger)), action_(std::move(action)) {}

 protected:
  int sync() override {
    if (action_ && str().find(trigger_) != std::string::npos) {
      std::function<void()> once = std::move(action_);
      action_ = nullptr;
      once();
    }
    return 0;
  }

 private:
  std::string trigger_;
  std::function<void()> action_;
};

// How often `needle` occurs in `text`.
int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

class CheckpointDirGoneTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(test_util::PrepareShakespeareData(tmp_.Path("data")).ok()); }

  // Four steps, a save after each, deleting `victim` once step 2's save is
  // logged. Returns the log.
  std::string TrainDeletingAfterStep2(bool async, const std::string& victim) {
    TrainConfig c = test_util::TinySmokeEveryStepConfig(tmp_.Path("data"), tmp_.Path("run"), 4);
    c.set_async_checkpoints(async);
    TriggeringLog buffer("checkpoint: step 2 -> ", [victim] {
      std::error_code ec;
      std::filesystem::remove_all(victim, ec);
    });
    std::ostream log(&buffer);
    absl::StatusOr<TrainSummary> summary = RunTraining(c, *comm_, log);
    EXPECT_TRUE(summary.ok()) << summary.status() << "\n" << buffer.str();
    return buffer.str();
  }

  std::string Checkpoints() { return tmp_.Path("run") + "/checkpoints"; }

  test_util::ScopedTempDir tmp_{"checkpoint_dir_gone"};
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
};

TEST_F(CheckpointDirGoneTest, DeletedDirectoryIsNamedOnceAndTrainingGoesOn) {
  const std::string log = TrainDeletingAfterStep2(/*async=*/false, Checkpoints());
  const std::string warning = "warning: checkpoint_dir " + Checkpoints() +
                              ": step-00000002, committed by this run, is gone, with "
                              "checkpoint_dir itself (deleted from outside?); saving "
                              "step-00000003 anyway";
  EXPECT_EQ(Count(log, warning), 1) << log;
  EXPECT_EQ(Count(log, "committed by this run"), 1) << log;  // not again at step 4
  EXPECT_TRUE(std::filesystem::is_directory(Checkpoints() + "/step-00000004")) << log;
}

TEST_F(CheckpointDirGoneTest, DeletedCheckpointIsNamedInAnAsyncRun) {
  const std::string log = TrainDeletingAfterStep2(/*async=*/true, Checkpoints() + "/step-00000002");
  const std::string warning = "warning: checkpoint_dir " + Checkpoints() +
                              ": step-00000002, committed by this run, is gone (deleted from "
                              "outside?); saving step-0000000";
  EXPECT_EQ(Count(log, warning), 1) << log;
  EXPECT_EQ(Count(log, "committed by this run"), 1) << log;
  EXPECT_TRUE(std::filesystem::is_directory(Checkpoints() + "/step-00000004")) << log;
}

// The checkpoint a run resumed from, deleted before its first save: the
// writer knew only the checkpoints this run committed, so nothing was said.
// It is named now, as one this run committed would be.
TEST_F(CheckpointDirGoneTest, TheCheckpointResumedFromIsNamedWhenDeletedBeforeTheFirstSave) {
  for (const bool async : {false, true}) {
    const std::string run = tmp_.Path(async ? "run_async" : "run_sync");
    std::ostringstream first;
    TrainConfig c = test_util::TinySmokeEveryStepConfig(tmp_.Path("data"), run, 2);
    c.set_async_checkpoints(async);
    ASSERT_TRUE(RunTraining(c, *comm_, first).ok()) << first.str();
    const std::string resumed_from = run + "/checkpoints/step-00000002";
    TriggeringLog buffer("resumed from " + resumed_from, [resumed_from] {
      std::error_code ec;
      std::filesystem::remove_all(resumed_from, ec);
    });
    std::ostream log(&buffer);
    c = test_util::TinySmokeEveryStepConfig(tmp_.Path("data"), run, 4);
    c.set_async_checkpoints(async);
    c.set_resume("latest");
    absl::StatusOr<TrainSummary> summary = RunTraining(c, *comm_, log);
    ASSERT_TRUE(summary.ok()) << summary.status() << "\n" << buffer.str();
    const std::string warning = "warning: checkpoint_dir " + run +
                                "/checkpoints: step-00000002, which this run resumed from, is gone "
                                "(deleted from outside?); saving step-00000003 anyway";
    EXPECT_EQ(Count(buffer.str(), warning), 1) << "async " << async << "\n" << buffer.str();
    EXPECT_EQ(Count(buffer.str(), "is gone"), 1) << buffer.str();  // not again at step 4
  }
}

// Retention deleting the run's older checkpoints is no deletion from outside.
TEST_F(CheckpointDirGoneTest, RetentionAloneWarnsOfNothing) {
  TrainConfig c = test_util::TinySmokeEveryStepConfig(tmp_.Path("data"), tmp_.Path("run"), 4);
  c.set_keep_last(1);
  std::ostringstream log;
  ASSERT_TRUE(RunTraining(c, *comm_, log).ok()) << log.str();
  EXPECT_EQ(log.str().find("committed by this run"), std::string::npos) << log.str();
}

}  // namespace
}  // namespace dropk
