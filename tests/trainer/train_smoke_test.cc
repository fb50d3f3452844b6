// End-to-end single-process training on the bundled corpus: the loss falls
// well below ln(vocab), runs are reproducible, metrics.jsonl is written.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/shakespeare_data.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

class TrainSmokeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Per process: ctest -j runs each test of this suite in its own process,
    // and one's TearDownTestSuite must not delete another's run.
    dir_ = new std::filesystem::path(std::filesystem::path(::testing::TempDir()) /
                                     ("dropk_train_smoke_" + std::to_string(getpid())));
    std::filesystem::remove_all(*dir_);
    ASSERT_TRUE(test_util::PrepareShakespeareData((*dir_ / "data").string()).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  TrainConfig TinyConfig(const std::string& run) {
    TrainConfig c = DefaultTrainConfig();
    EXPECT_TRUE(MergeTrainConfigFile(DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto", &c).ok());
    c.set_data_dir((*dir_ / "data").string());
    c.set_out_dir((*dir_ / run).string());
    c.set_max_iters(300);
    c.set_lr_decay_iters(300);
    c.set_eval_interval(150);
    c.set_sample_tokens(40);
    c.set_num_threads(2);
    EXPECT_TRUE(ValidateTrainConfig(c).ok());
    return c;
  }
  static std::filesystem::path* dir_;
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
};
std::filesystem::path* TrainSmokeTest::dir_ = nullptr;

TEST_F(TrainSmokeTest, LossFallsWellBelowUniformAndRunsAreReproducible) {
  std::ostringstream log1, log2;
  const TrainSummary a = RunTraining(TinyConfig("run_a"), *comm_, log1).value();
  const TrainSummary b = RunTraining(TinyConfig("run_b"), *comm_, log2).value();
  const double uniform = std::log(65.0);
  ASSERT_TRUE(a.val_loss.has_value());
  EXPECT_LT(*a.val_loss, 0.7 * uniform) << log1.str();
  EXPECT_EQ(a.steps, 300);
  // Same seed, same data, dropout on: bitwise the same losses and sample.
  EXPECT_EQ(a.last_train_loss, b.last_train_loss);
  EXPECT_EQ(*a.val_loss, *b.val_loss);
  EXPECT_EQ(a.sample, b.sample);
  EXPECT_EQ(a.sample.size(), 41u) << "prompt plus 40 characters";
}

TEST_F(TrainSmokeTest, MetricsJsonlHasOneObjectPerLoggedStep) {
  std::ostringstream log;
  TrainConfig c = TinyConfig("run_metrics");
  c.set_max_iters(40);
  c.set_log_interval(10);
  c.set_eval_interval(20);
  ASSERT_TRUE(RunTraining(c, *comm_, log).ok());
  std::ifstream in(c.out_dir() + "/metrics.jsonl");
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 5u);  // steps 0, 10, 20, 30, and the final evaluation at 40
  for (const auto& r : rows) {
    for (const char* key : {"step", "train_loss", "lr", "tokens_per_s", "elapsed_s"}) {
      EXPECT_TRUE(r.contains(key)) << key << " missing in " << r.dump();
    }
  }
  EXPECT_TRUE(rows[0].contains("val_loss"));
  EXPECT_FALSE(rows[1].contains("val_loss"));
  EXPECT_TRUE(rows[2].contains("val_loss"));
  EXPECT_EQ(rows[4]["step"], 40);
  EXPECT_NE(log.str().find("tok/s"), std::string::npos);
  EXPECT_NE(log.str().find("ETA"), std::string::npos);
}

// Reads OUT_DIR/metrics.jsonl, one object per line.
std::vector<nlohmann::json> ReadMetrics(const TrainConfig& c) {
  std::ifstream in(c.out_dir() + "/metrics.jsonl");
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

TEST_F(TrainSmokeTest, FinalRowReportsTheLastStepsOwnLoss) {
  // Run A logs every step; run B (same seed, same steps) logs every 4th, so
  // its last logged training step (4) is not its last training step (5).
  TrainConfig every_step = TinyConfig("run_loss_every_step");
  every_step.set_max_iters(6);
  every_step.set_eval_interval(100);
  every_step.set_eval_iters(1);
  every_step.set_sample_tokens(0);
  every_step.set_log_interval(1);
  TrainConfig sparse = every_step;
  sparse.set_out_dir((*dir_ / "run_loss_sparse").string());
  sparse.set_log_interval(4);
  std::ostringstream log_a, log_b;
  const TrainSummary a = RunTraining(every_step, *comm_, log_a).value();
  const TrainSummary b = RunTraining(sparse, *comm_, log_b).value();
  const std::vector<nlohmann::json> rows_a = ReadMetrics(every_step);
  const std::vector<nlohmann::json> rows_b = ReadMetrics(sparse);
  ASSERT_EQ(rows_a.size(), 7u);  // steps 0..5 and the final evaluation at 6
  ASSERT_EQ(rows_b.size(), 3u);  // steps 0, 4 and 6
  const float step4 = rows_a[4]["train_loss"], step5 = rows_a[5]["train_loss"];
  ASSERT_NE(step4, step5) << "the test needs the two steps' losses to differ";
  EXPECT_EQ(static_cast<float>(rows_b[1]["train_loss"]), step4);
  // Step 6 only evaluates; its row carries the loss of step 5, the last one
  // trained, not the last one logged.
  EXPECT_EQ(rows_b[2]["step"], 6);
  EXPECT_EQ(static_cast<float>(rows_b[2]["train_loss"]), step5) << log_b.str();
  EXPECT_EQ(static_cast<float>(rows_a[6]["train_loss"]), step5);
  EXPECT_EQ(b.last_train_loss, step5);
  EXPECT_EQ(a.last_train_loss, step5);
}

// Training itself checks that PER_SAMPLE stream numbers fit a global
// batch, before any step: one rank x 65,536 micro-batches x 65,537 samples
// is refused with the product named (exit 2), not run with repeated masks.
TEST_F(TrainSmokeTest, PerSampleStreamsPastThirtyTwoBitsAreRefusedAtStart) {
  TrainConfig c = TinyConfig("run_too_many_samples");
  c.set_dropout(0.1f);
  c.set_dropout_stream(TrainConfig::PER_SAMPLE);
  c.set_gradient_accumulation_steps(65'536);
  c.set_batch_size(65'537);
  // Small enough that, were the check missing, the run would end at once
  // (and this test fail) rather than train on 2^32 samples a step.
  c.set_block_size(2);
  c.set_max_iters(0);
  c.set_eval_iters(1);
  c.set_sample_tokens(0);
  std::ostringstream log;
  const absl::StatusOr<TrainSummary> run = RunTraining(c, *comm_, log);
  ASSERT_FALSE(run.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(run.status())) << run.status();
  EXPECT_NE(
      run.status().message().find("1 ranks x gradient_accumulation_steps=65536 x batch_size=65537"),
      std::string::npos)
      << run.status();
}

// max_iters 0 evaluates the initial parameters and trains no step: its one
// row has no training loss (it printed "loss 0.0000" and wrote train_loss 0).
TEST_F(TrainSmokeTest, MaxItersZeroReportsNoTrainingLoss) {
  TrainConfig c = TinyConfig("run_no_steps");
  c.set_max_iters(0);
  c.set_eval_iters(1);
  c.set_sample_tokens(0);
  std::ostringstream log;
  const absl::StatusOr<TrainSummary> summary = RunTraining(c, *comm_, log);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->steps, 0);
  const std::vector<nlohmann::json> rows = ReadMetrics(c);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["step"], 0);
  EXPECT_TRUE(rows[0].contains("val_loss")) << rows[0].dump();
  EXPECT_FALSE(rows[0].contains("train_loss")) << rows[0].dump();
  EXPECT_EQ(log.str().find("| loss "), std::string::npos) << log.str();
}

TEST_F(TrainSmokeTest, DataErrorsNameTheFile) {
  std::ostringstream log;
  TrainConfig c = TinyConfig("run_missing");
  c.set_data_dir((*dir_ / "nowhere").string());
  auto missing = RunTraining(c, *comm_, log);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nowhere"), std::string::npos) << missing.status();

  c = TinyConfig("run_big_block");
  c.set_block_size(200000);
  auto too_long = RunTraining(c, *comm_, log);
  ASSERT_FALSE(too_long.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(too_long.status()));
  EXPECT_NE(too_long.status().message().find("block_size=200000"), std::string::npos)
      << too_long.status();
}

// Data that is not there (not prepared yet, or a relative data_dir read from
// another directory) names the field and how to prepare it; it stays
// NotFound, a usage error (exit 2).
TEST_F(TrainSmokeTest, MissingDataNamesDataDirAndHowToPrepareIt) {
  const std::filesystem::path empty = *dir_ / "empty_data";
  std::filesystem::create_directories(empty);
  const absl::StatusOr<TrainingData> no_tokenizer = LoadTrainingData(empty.string());
  ASSERT_FALSE(no_tokenizer.ok());
  EXPECT_TRUE(absl::IsNotFound(no_tokenizer.status())) << no_tokenizer.status();
  const std::string no_tokenizer_message(no_tokenizer.status().message());
  EXPECT_EQ(no_tokenizer_message.rfind("data_dir=" + empty.string() + ": ", 0), 0u)
      << no_tokenizer_message;
  EXPECT_NE(no_tokenizer_message.find("tokenizer.pb"), std::string::npos) << no_tokenizer_message;
  EXPECT_NE(no_tokenizer_message.find("dropk data prepare"), std::string::npos)
      << no_tokenizer_message;

  const std::filesystem::path tokenizer_only = *dir_ / "tokenizer_only";
  std::filesystem::create_directories(tokenizer_only);
  std::filesystem::copy_file(*dir_ / "data" / "tokenizer.pb", tokenizer_only / "tokenizer.pb");
  const absl::StatusOr<TrainingData> no_train = LoadTrainingData(tokenizer_only.string());
  ASSERT_FALSE(no_train.ok());
  EXPECT_TRUE(absl::IsNotFound(no_train.status())) << no_train.status();
  const std::string no_train_message(no_train.status().message());
  EXPECT_EQ(no_train_message.rfind("data_dir=" + tokenizer_only.string() + ": ", 0), 0u)
      << no_train_message;
  EXPECT_NE(no_train_message.find("train.bin"), std::string::npos) << no_train_message;
  EXPECT_NE(no_train_message.find("dropk data prepare"), std::string::npos) << no_train_message;
}

// The corpus itself given as data_dir is a usage error (exit 2) that names
// the field and what it should name, not a bare "Not a directory".
TEST_F(TrainSmokeTest, FileAsDataDirNamesTheFieldAndWhatItNames) {
  const std::filesystem::path corpus = *dir_ / "corpus.txt";
  std::ofstream(corpus) << "To be, or not to be\n";
  const absl::StatusOr<TrainingData> data = LoadTrainingData(corpus.string());
  ASSERT_FALSE(data.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(data.status())) << data.status();
  const std::string message(data.status().message());
  EXPECT_EQ(message.rfind("data_dir=" + corpus.string() + ": not a directory", 0), 0u) << message;
  EXPECT_NE(message.find("dropk data prepare"), std::string::npos) << message;
}

// A checkpoint directory that cannot be written is refused before the first
// step, not at the end of the run, when the training would already be spent.
TEST_F(TrainSmokeTest, UnwritableCheckpointDirIsRefusedBeforeTraining) {
  const std::filesystem::path blocker = *dir_ / "a_file";
  std::ofstream(blocker) << "not a directory\n";
  TrainConfig c = TinyConfig("run_unwritable");
  c.set_checkpoint_dir((blocker / "checkpoints").string());
  std::ostringstream log;
  auto run = RunTraining(c, *comm_, log);
  ASSERT_FALSE(run.ok());
  // A file in the way is the user's to fix: InvalidArgument, exit 2.
  EXPECT_TRUE(absl::IsInvalidArgument(run.status())) << run.status();
  EXPECT_NE(run.status().message().find("checkpoint_dir=" + (blocker / "checkpoints").string()),
            std::string::npos)
      << run.status();
  EXPECT_EQ(log.str().find("| loss "), std::string::npos) << "it trained first:\n" << log.str();
}

// A directory named LATEST in the checkpoint directory failed the run at its
// first save ("rename to LATEST: Is a directory"), after the training.
TEST_F(TrainSmokeTest, ALatestThatIsADirectoryIsRefusedBeforeTraining) {
  TrainConfig c = TinyConfig("run_latest_dir");
  const std::filesystem::path latest = std::filesystem::path(c.out_dir()) / "checkpoints/LATEST";
  std::filesystem::create_directories(latest);
  std::ostringstream log;
  auto run = RunTraining(c, *comm_, log);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(run.status().message().find(latest.string() + " is a directory"), std::string::npos)
      << run.status();
  EXPECT_EQ(log.str().find("| loss "), std::string::npos) << "it trained first:\n" << log.str();
}

}  // namespace
}  // namespace dropk
