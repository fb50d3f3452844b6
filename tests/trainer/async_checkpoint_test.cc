// Asynchronous checkpoints in the training loop (async_checkpoints, the
// default): resuming from one is bit-exact (DESIGN invariant 3), the files
// equal a synchronous save's, and each save logs its training pause and its
// background write time. A fresh start beside another run's checkpoints is
// refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <string>

#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "support/shakespeare_data.h"
#include "support/subprocess.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

using test_util::ReadFile;

class AsyncCheckpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::path(::testing::TempDir()) /
                        ("dropk_async_ckpt_" + std::to_string(getpid())));
    fs::remove_all(*dir_);
    ASSERT_TRUE(test_util::PrepareShakespeareData((*dir_ / "data").string()).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  // save_every 10; the schedule ends at step 40 whatever max_iters is, so a
  // run stopped at 20 and resumed matches a straight one.
  TrainConfig Config(const std::string& run, int max_iters, bool async) {
    TrainConfig c = DefaultTrainConfig();
    EXPECT_TRUE(MergeTrainConfigFile(DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto", &c).ok());
    c.set_data_dir((*dir_ / "data").string());
    c.set_out_dir((*dir_ / run).string());
    c.set_max_iters(max_iters);
    c.set_warmup_iters(5);
    c.set_lr_decay_iters(40);
    c.set_eval_interval(1000);
    c.set_eval_iters(2);
    c.set_log_interval(10);
    c.set_sample_tokens(0);
    c.set_num_threads(1);
    c.set_save_every(10);
    c.set_async_checkpoints(async);
    EXPECT_TRUE(ValidateTrainConfig(c).ok());
    return c;
  }

  TrainSummary Train(const TrainConfig& c, std::string* log_text = nullptr) {
    std::ostringstream log;
    absl::StatusOr<TrainSummary> s = RunTraining(c, *comm_, log);
    EXPECT_TRUE(s.ok()) << s.status() << "\n" << log.str();
    if (log_text != nullptr) *log_text = log.str();
    return s.ok() ? *std::move(s) : TrainSummary{};
  }

  static fs::path* dir_;
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
};
fs::path* AsyncCheckpointTest::dir_ = nullptr;

TEST_F(AsyncCheckpointTest, ResumeFromAnAsyncCheckpointIsBitExact) {
  std::string straight_log;
  const TrainSummary straight = Train(Config("straight", 40, true), &straight_log);
  ASSERT_EQ(straight.steps, 40);
  // One line per save, each with its pause and its background time.
  for (int step : {10, 20, 30, 40}) {
    const std::string line = "checkpoint: step " + std::to_string(step) + " -> ";
    const size_t at = straight_log.find(line);
    ASSERT_NE(at, std::string::npos) << straight_log;
    const std::string rest = straight_log.substr(at, straight_log.find('\n', at) - at);
    EXPECT_NE(rest.find("training paused"), std::string::npos) << rest;
    EXPECT_NE(rest.find("written in background in"), std::string::npos) << rest;
  }
  // The final save is committed before RunTraining returns.
  EXPECT_EQ(ReadFile((*dir_ / "straight/checkpoints/LATEST").string()), "step-00000040\n");

  const TrainSummary first = Train(Config("resumed", 20, true));
  ASSERT_EQ(first.steps, 20);
  TrainConfig again = Config("resumed", 40, true);
  again.set_resume("latest");
  const TrainSummary second = Train(again);
  EXPECT_EQ(second.resumed_from, (*dir_ / "resumed/checkpoints/step-00000020").string());
  ASSERT_EQ(second.steps, 40);
  ASSERT_EQ(second.final_params.size(), straight.final_params.size());
  EXPECT_TRUE(second.final_params == straight.final_params)
      << "resuming from the async checkpoint at step 20 diverged from the straight run";
  EXPECT_EQ(second.last_train_loss, straight.last_train_loss);
}

// Resuming a checkpoint past max_iters ran no step and no evaluation and
// reported "done" with the checkpoint's step count.
TEST_F(AsyncCheckpointTest, ResumingPastMaxItersIsRefusedNamingTheStep) {
  ASSERT_EQ(Train(Config("past", 20, true)).steps, 20);
  TrainConfig lower = Config("past", 10, true);
  lower.set_resume("latest");
  std::ostringstream log;
  absl::StatusOr<TrainSummary> s = RunTraining(lower, *comm_, log);
  ASSERT_FALSE(s.ok()) << log.str();
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("step-00000020 is at step 20, past max_iters=10"),
            std::string::npos)
      << s.status();
  // At max_iters itself there is nothing to train: no evaluation, no
  // metrics row (TrainCliTest.ResumingAtMaxItersSaysNothingToTrain).
  TrainConfig same = Config("past", 20, true);
  same.set_resume("latest");
  const TrainSummary done = Train(same);
  EXPECT_EQ(done.steps, 20);
  EXPECT_TRUE(done.nothing_to_train);
  EXPECT_FALSE(done.val_loss.has_value());
}

TEST_F(AsyncCheckpointTest, AsyncAndSyncRunsWriteTheSameCheckpointFiles) {
  std::string sync_log;
  Train(Config("sync", 20, false), &sync_log);
  EXPECT_NE(sync_log.find("for a synchronous save"), std::string::npos) << sync_log;
  Train(Config("async", 20, true));
  for (const char* step : {"step-00000010", "step-00000020"}) {
    const fs::path a = *dir_ / "sync/checkpoints" / step, b = *dir_ / "async/checkpoints" / step;
    for (const std::string& file : {std::string(kModelDataFileName), OptimizerDataFileName(0, 1)}) {
      const std::string x = ReadFile((a / file).string()), y = ReadFile((b / file).string());
      EXPECT_FALSE(x.empty()) << a / file;
      EXPECT_TRUE(x == y) << step << "/" << file << " differs";
    }
    EXPECT_TRUE(VerifyCheckpoint(b.string()).ok());
  }
}

TEST_F(AsyncCheckpointTest, FreshStartBesideAnotherRunsCheckpointsIsRefused) {
  Train(Config("taken", 20, true));
  const std::string latest = (*dir_ / "taken/checkpoints/LATEST").string();
  ASSERT_EQ(ReadFile(latest), "step-00000020\n");

  std::ostringstream log;
  absl::StatusOr<TrainSummary> fresh = RunTraining(Config("taken", 20, true), *comm_, log);
  ASSERT_FALSE(fresh.ok()) << log.str();
  // A usage error (exit 2): the same command fails again until it changes.
  EXPECT_TRUE(absl::IsInvalidArgument(fresh.status())) << fresh.status();
  // Steps 10 and 20 were saved: the newest is named, with a count of the rest.
  EXPECT_NE(fresh.status().message().find("step-00000020 and 1 more)"), std::string::npos)
      << fresh.status();
  EXPECT_NE(fresh.status().message().find((*dir_ / "taken/checkpoints").string()),
            std::string::npos)
      << fresh.status();
  EXPECT_NE(fresh.status().message().find("--resume=latest"), std::string::npos)
      << fresh.status();
  // Nothing of the first run was touched: LATEST and both checkpoints stand.
  EXPECT_EQ(ReadFile(latest), "step-00000020\n");
  EXPECT_TRUE(VerifyCheckpoint((*dir_ / "taken/checkpoints/step-00000010").string()).ok());
  EXPECT_TRUE(VerifyCheckpoint((*dir_ / "taken/checkpoints/step-00000020").string()).ok());

  TrainConfig resumed = Config("taken", 30, true);
  resumed.set_resume("latest");
  EXPECT_EQ(Train(resumed).steps, 30);
}

}  // namespace
}  // namespace dropk
