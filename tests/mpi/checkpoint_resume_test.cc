// Checkpoints written by N ranks: exact resume (DESIGN invariant 3) on the
// same world size, and resuming on a different one.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "mpi_test_env.h"
#include "support/forwarding_env.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

class CheckpointResumeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::filesystem::path(MakeSharedRunRoot("dropk_mpi_resume"));
  }
  static void TearDownTestSuite() {
    RemoveSharedRunRoot(*root_);
    delete root_;
  }

  static TrainConfig Tiny(const std::string& run, int max_iters) {
    TrainConfig c = DefaultTrainConfig();
    c.set_data_dir((*root_ / "data").string());
    c.set_out_dir((*root_ / run).string());
    c.set_n_layer(2);
    c.set_n_head(2);
    c.set_n_embd(32);
    c.set_block_size(32);
    c.set_batch_size(2);
    c.set_max_iters(max_iters);
    c.set_warmup_iters(2);
    c.set_lr_decay_iters(8);  // the schedule does not depend on max_iters
    c.set_learning_rate(3e-3f);
    c.set_eval_interval(1000);
    c.set_eval_iters(2);
    c.set_log_interval(1);
    c.set_sample_tokens(0);
    c.set_num_threads(1);
    c.set_dropout(0.1f);
    EXPECT_TRUE(ValidateTrainConfig(c).ok());
    return c;
  }

  // Trains per `c`, EXPECTing success; its log goes to *log_out when given.
  static TrainSummary Train(const TrainConfig& c, Communicator& comm,
                            std::string* log_out = nullptr) {
    std::ostringstream log;
    absl::StatusOr<TrainSummary> s = RunTraining(c, comm, log);
    EXPECT_TRUE(s.ok()) << s.status() << "\n" << log.str();
    if (log_out != nullptr) *log_out = log.str();
    return s.ok() ? *std::move(s) : TrainSummary{};
  }

  static std::string MetricsAfter(const std::string& out_dir) {
    std::ifstream in(out_dir + "/metrics.jsonl");
    std::string line, losses;
    // Keep step and train_loss only: times differ between runs.
    while (std::getline(in, line)) {
      const size_t lr = line.find(",\"lr\"");
      losses += line.substr(0, lr) + "\n";
    }
    return losses;
  }

  static std::filesystem::path* root_;
};
std::filesystem::path* CheckpointResumeTest::root_ = nullptr;

TEST_F(CheckpointResumeTest, StopAndResumeIsBitwiseTheSameAsStraightWithDropoutOn) {
  const TrainSummary straight = Train(Tiny("straight", 8), World());
  Train(Tiny("split", 4), World());  // saves a checkpoint at step 4 (the end)
  TrainConfig resumed = Tiny("split", 8);
  resumed.set_resume("latest");
  const TrainSummary second = Train(resumed, World());
  EXPECT_EQ(second.resumed_from, (*root_ / "split/checkpoints/step-00000004").string());
  EXPECT_EQ(straight.final_params, second.final_params) << "parameters differ after resume";
  EXPECT_EQ(straight.last_train_loss, second.last_train_loss);
  if (World().Rank() == 0) {
    EXPECT_EQ(MetricsAfter((*root_ / "straight").string()),
              MetricsAfter((*root_ / "split").string()))
        << "the loss lines of the resumed run differ from the straight run's";
  }
  // Every rank reads back the same parameters from the N-rank checkpoint.
  absl::StatusOr<CheckpointData> data =
      ReadCheckpoint((*root_ / "split/checkpoints/step-00000008").string());
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->world_size, World().Size());
  EXPECT_EQ(data->params, second.final_params);
}

TEST_F(CheckpointResumeTest, ResumingOnOneRankContinuesAsAnUninterruptedOneRankRun) {
  const int n = World().Size();
  if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
  // N ranks x batch 2 with per-sample dropout; the global batch is 2N.
  TrainConfig first = Tiny("n_ranks", 4);
  first.set_dropout_stream(TrainConfig::PER_SAMPLE);
  Train(first, World());
  if (World().Rank() != 0) return;
  // Continue on one rank with the same global batch ...
  std::unique_ptr<Communicator> single = MakeSingleProcessCommunicator();
  TrainConfig resumed = Tiny("one_rank_resumed", 8);
  resumed.set_dropout_stream(TrainConfig::PER_SAMPLE);
  resumed.set_batch_size(2 * n);
  resumed.set_resume((*root_ / "n_ranks/checkpoints").string());
  std::string log;
  const TrainSummary continued = Train(resumed, *single, &log);
  EXPECT_NE(log.find(absl::StrCat("dropk-train: resume: written by ", n,
                                  " rank(s), now 1; optimizer state re-sliced")),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("global batch"), std::string::npos) << log;
  // ... and compare with one rank from the start.
  TrainConfig straight = Tiny("one_rank_straight", 8);
  straight.set_dropout_stream(TrainConfig::PER_SAMPLE);
  straight.set_batch_size(2 * n);
  const TrainSummary reference = Train(straight, *single);
  ASSERT_EQ(continued.final_params.size(), reference.final_params.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < reference.final_params.size(); ++i) {
    const double d = continued.final_params[i] - reference.final_params[i];
    diff += d * d;
    norm += static_cast<double>(reference.final_params[i]) * reference.final_params[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-5);
  EXPECT_NEAR(continued.last_train_loss, reference.last_train_loss,
              1e-5 * reference.last_train_loss);
}

// batch_size is per rank: resuming an N-rank run on one rank with the same
// batch_size trains on 1/N of the tokens per step. Only "written by N
// rank(s), now 1" said so; a warning now names both global batches and the
// flags that keep the checkpoint's.
TEST_F(CheckpointResumeTest, ResumingOnFewerRanksNamesTheGlobalBatchChange) {
  const int n = World().Size();
  if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
  Train(Tiny("fewer_ranks", 2), World());  // N ranks x batch_size=2 x block_size=32
  if (World().Rank() != 0) return;
  std::unique_ptr<Communicator> single = MakeSingleProcessCommunicator();
  TrainConfig resumed = Tiny("fewer_ranks", 3);
  resumed.set_resume("latest");
  std::string log;
  Train(resumed, *single, &log);
  // Tiny's dropout 0.1 with per_rank masks: those of the resumed run differ.
  EXPECT_NE(log.find(absl::StrCat("dropk-train: resume: written by ", n,
                                  " rank(s), now 1; optimizer state re-sliced; per_rank dropout "
                                  "masks differ from the original run's\n")),
            std::string::npos)
      << log;
  EXPECT_NE(log.find(absl::StrCat(
                "dropk-train: warning: resume: the global batch changes from ", 64 * n,
                " tokens per step (", n,
                " rank(s) x batch_size=2 x gradient_accumulation_steps=1 x block_size=32) to 64 "
                "(1 rank(s) x batch_size=2 x gradient_accumulation_steps=1 x block_size=32); to "
                "keep ",
                64 * n, " on 1 rank(s), pass --batch_size=", 2 * n,
                " or --gradient_accumulation_steps=", n, "\n")),
            std::string::npos)
      << log;
}

// Without dropout no mask is drawn, so none can differ: a resume on another
// number of ranks said "per_rank dropout masks differ from the original
// run's" whenever dropout_stream was per_rank, the default, dropout 0
// included (nanoGPT's CPU recipe, configs/shakespeare_char_cpu.textproto).
TEST_F(CheckpointResumeTest, ResumingWithoutDropoutOnFewerRanksSaysNothingOfMasks) {
  const int n = World().Size();
  if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
  TrainConfig first = Tiny("no_dropout", 2);
  first.set_dropout(0.0f);
  Train(first, World());
  if (World().Rank() != 0) return;
  std::unique_ptr<Communicator> single = MakeSingleProcessCommunicator();
  TrainConfig resumed = Tiny("no_dropout", 3);
  resumed.set_dropout(0.0f);
  resumed.set_resume("latest");
  std::string log;
  Train(resumed, *single, &log);
  EXPECT_NE(log.find(absl::StrCat("dropk-train: resume: written by ", n,
                                  " rank(s), now 1; optimizer state re-sliced\n")),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("masks differ"), std::string::npos) << log;
}

// Fails every read under one checkpoint directory, as a read error on one
// host's file system does.
class UnreadableCheckpointEnv : public ForwardingEnv {
 public:
  UnreadableCheckpointEnv(std::string dir) : ForwardingEnv(Env::Default()), dir_(dir) {}
  absl::Status ReadFileRange(const std::string& path, uint64_t offset, size_t n,
                             void* out) override {
    if (path.rfind(dir_ + "/", 0) == 0) return absl::DataLossError(path + ": read: I/O error");
    return base_->ReadFileRange(path, offset, n, out);
  }

 private:
  std::string dir_;
};

// The newest checkpoint unreadable on the last rank alone: that rank
// skipped it and resumed from the one before, the others from the newest,
// and the job trained on mismatched parameters and ended apart (the
// ranks that were done left the others in a collective until its
// timeout). Every rank now refuses, naming each rank's step.
TEST_F(CheckpointResumeTest, RanksThatResumeFromDifferentCheckpointsAreRefused) {
  const int n = World().Size();
  if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
  TrainConfig first = Tiny("resumed_apart", 4);
  first.set_save_every(2);
  Train(first, World());
  TrainConfig resumed = Tiny("resumed_apart", 8);
  resumed.set_resume("latest");
  resumed.set_comm_timeout_s(10);  // the old code's stranded collective ends soon
  UnreadableCheckpointEnv env((*root_ / "resumed_apart/checkpoints/step-00000004").string());
  TrainingSeams seams;
  if (World().Rank() == n - 1) seams.checkpoint_env = &env;
  std::ostringstream log;
  const absl::StatusOr<TrainSummary> s = RunTraining(resumed, World(), log, seams);
  ASSERT_FALSE(s.ok()) << log.str();
  EXPECT_TRUE(absl::IsFailedPrecondition(s.status())) << s.status();
  EXPECT_NE(s.status().message().find("the ranks resumed from different checkpoints (rank 0 at "
                                      "step 4, "),
            std::string::npos)
      << s.status();
  EXPECT_NE(s.status().message().find(absl::StrCat("rank ", n - 1, " at step 2)")),
            std::string::npos)
      << s.status();
  if (World().Rank() == n - 1) {
    EXPECT_NE(s.status().message().find("step-00000002 after skipping "), std::string::npos)
        << s.status();
    EXPECT_NE(s.status().message().find("read: I/O error"), std::string::npos) << s.status();
  }
}

}  // namespace
}  // namespace dropk
