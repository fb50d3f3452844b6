// Data-parallel training under mpirun: N ranks x micro-batch b equal 1 rank
// x N micro-batches of b through gradient accumulation (dropout 0, and
// per_sample dropout on); per_rank masks differ between ranks and repeat on
// rerun; parameters agree on every rank after every step.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>
#include <vector>

#include "comm/consistency.h"
#include "model/kernels.h"
#include "mpi_test_env.h"
#include "trainer/config.h"
#include "trainer/data_parallel.h"
#include "trainer/prepare_data.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

class TrainingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::filesystem::path(MakeSharedRunRoot("dropk_mpi_training"));
  }
  static void TearDownTestSuite() {
    RemoveSharedRunRoot(*root_);
    delete root_;
  }

  static TrainConfig Tiny(const std::string& run) {
    TrainConfig c = DefaultTrainConfig();
    c.set_data_dir((*root_ / "data").string());
    c.set_out_dir((*root_ / run).string());
    c.set_n_layer(2);
    c.set_n_head(2);
    c.set_n_embd(32);
    c.set_block_size(32);
    c.set_batch_size(4);
    c.set_max_iters(6);
    c.set_warmup_iters(2);
    c.set_lr_decay_iters(6);
    c.set_learning_rate(3e-3f);
    c.set_eval_interval(1000);
    c.set_eval_iters(2);
    c.set_log_interval(1000);
    c.set_sample_tokens(0);
    c.set_num_threads(1);
    c.set_consistency_check_every(1);  // invariant 2 checked after every step
    c.set_bucket_cap_mb(0.02f);        // several buckets even for a tiny model
    EXPECT_TRUE(ValidateTrainConfig(c).ok());
    return c;
  }

  // ||a - b|| / ||b||.
  static double RelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
      norm += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(diff / norm);
  }

  void ExpectEqualToAccumulation(TrainConfig config) {
    std::ostringstream log;
    absl::StatusOr<TrainSummary> distributed = RunTraining(config, World(), log);
    ASSERT_TRUE(distributed.ok()) << distributed.status();
    if (World().Rank() != 0) return;
    TrainConfig reference = config;
    reference.set_gradient_accumulation_steps(World().Size() *
                                              config.gradient_accumulation_steps());
    // The same held-out samples: N ranks evaluate eval_iters batches of N x b.
    reference.set_eval_iters(World().Size() * config.eval_iters());
    reference.set_out_dir(config.out_dir() + "_reference");
    std::unique_ptr<Communicator> single = MakeSingleProcessCommunicator();
    absl::StatusOr<TrainSummary> one = RunTraining(reference, *single, log);
    ASSERT_TRUE(one.ok()) << one.status();
    ASSERT_EQ(distributed->final_params.size(), one->final_params.size());
    EXPECT_LT(RelativeDifference(distributed->final_params, one->final_params), 1e-5);
    EXPECT_NEAR(distributed->last_train_loss, one->last_train_loss, 1e-5 * one->last_train_loss);
    ASSERT_TRUE(distributed->val_loss && one->val_loss);
    EXPECT_NEAR(*distributed->val_loss, *one->val_loss, 1e-5 * *one->val_loss);
  }

  static std::filesystem::path* root_;
};
std::filesystem::path* TrainingTest::root_ = nullptr;

TEST_F(TrainingTest, NoDropoutEqualsOneRankWithGradientAccumulation) {
  ExpectEqualToAccumulation(Tiny("no_dropout"));
}

TEST_F(TrainingTest, PerSampleDropoutEqualsOneRankWithGradientAccumulation) {
  TrainConfig c = Tiny("per_sample");
  c.set_dropout(0.1f);
  c.set_dropout_stream(TrainConfig::PER_SAMPLE);
  ExpectEqualToAccumulation(c);
}

TEST_F(TrainingTest, OverlapOffGivesTheSameParameters) {
  TrainConfig c = Tiny("overlap_on");
  c.set_dropout(0.1f);
  std::ostringstream log;
  absl::StatusOr<TrainSummary> on = RunTraining(c, World(), log);
  ASSERT_TRUE(on.ok()) << on.status();
  c.set_overlap_comm(false);
  c.set_out_dir(c.out_dir() + "_off");
  absl::StatusOr<TrainSummary> off = RunTraining(c, World(), log);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(on->final_params, off->final_params) << "bitwise";
}

TEST_F(TrainingTest, PerRankMasksDifferAcrossRanksAndRepeatOnRerun) {
  TrainConfig c = Tiny("per_rank");
  c.set_dropout(0.2f);
  c.set_dropout_stream(TrainConfig::PER_RANK);
  // The masks themselves: each rank's embedding mask at the same step.
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 1).value();
  const int B = 4, T = 32, C = 32;
  std::vector<float> ones(B * T * C, 1.0f), mask(B * T * C);
  const DropoutPlan plan = DropoutPlanFor(c, 3, 0, World().Rank(), World().Size());
  k->DropoutBackward(mask.data(), ones.data(), B, T, C, DropoutKind::kEmbedding, 0, &plan);
  const int64_t digest = static_cast<int64_t>(Digest(mask.data(), mask.size() * 4));
  std::vector<int64_t> all(World().Size());
  int64_t mine = digest;
  ASSERT_TRUE(
      World().AllGather(HostBuffer(&mine, 1), HostBuffer(all.data(), all.size()))->Wait().ok());
  for (int a = 0; a < World().Size(); ++a) {
    for (int b = a + 1; b < World().Size(); ++b) EXPECT_NE(all[a], all[b]) << a << " vs " << b;
  }
  // A repeated run draws the same masks: bitwise the same result.
  std::ostringstream log;
  absl::StatusOr<TrainSummary> first = RunTraining(c, World(), log);
  ASSERT_TRUE(first.ok()) << first.status();
  c.set_out_dir(c.out_dir() + "_again");
  absl::StatusOr<TrainSummary> again = RunTraining(c, World(), log);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(first->final_params, again->final_params);
  EXPECT_EQ(first->last_train_loss, again->last_train_loss);
}

// Hosts holding their own copies of the data (an MPMD launch, a node-local
// disk) may have prepared them with another --shard-tokens: other files,
// another dataset id, the same tokens. Ranks then agree and train as on one
// copy, bit for bit; they used to be refused as reading other data.
TEST_F(TrainingTest, RanksReadingTheSameTokensInOtherShardsTrainAsOnOneCopy) {
  const std::filesystem::path copy =
      *root_ / ("data_in_shards_rank" + std::to_string(World().Rank()));
  PrepareOptions options;
  options.inputs = {DROPK_SOURCE_DIR "/data/tinyshakespeare.txt"};
  options.out_dir = copy.string();
  options.shard_tokens = 200'000 + 100'000 * World().Rank();  // another split on every rank
  ASSERT_TRUE(PrepareData(options).ok());

  TrainConfig c = Tiny("one_copy");
  std::ostringstream log;
  absl::StatusOr<TrainSummary> one_copy = RunTraining(c, World(), log);
  ASSERT_TRUE(one_copy.ok()) << one_copy.status();
  c.set_data_dir(copy.string());
  c.set_out_dir(c.out_dir() + "_own_copies");
  absl::StatusOr<TrainSummary> own_copies = RunTraining(c, World(), log);
  ASSERT_TRUE(own_copies.ok()) << own_copies.status();
  EXPECT_EQ(own_copies->final_params, one_copy->final_params) << "bitwise";
}

}  // namespace
}  // namespace dropk
