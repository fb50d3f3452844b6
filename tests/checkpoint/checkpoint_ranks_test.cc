// The writer with several ranks (threads standing in for processes, over a
// shared thread communicator of tests/support): each rank writes its optimizer slice in
// parallel, rank 0 commits only when every rank's part is durable, and the
// result reads back whole whatever world size wrote it. A failure on any one
// rank leaves LATEST untouched on every rank.
#include <gtest/gtest.h>
#include <unistd.h>

#include <barrier>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "comm/communicator.h"
#include "model/kernels.h"
#include "model/param_layout.h"
#include "support/fault_injection_env.h"
#include "support/thread_communicator.h"
#include "support/tiny_config.h"
#include "trainer/config.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

class CheckpointRanksTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) /
            ("dropk_ckpt_ranks_" + std::to_string(GetParam()) + "_" + std::to_string(getpid())))
               .string();
    fs::remove_all(dir_);
    config_ = test_util::TinyTrainConfig(/*n_layer=*/1, /*n_head=*/2, /*n_embd=*/8,
                                         /*block_size=*/4);
    tokenizer_.set_kind(Tokenizer::BYTE);
    n_ = ParamLayout(GptConfig{256, 4, 1, 2, 8}).num_params();
    std::mt19937 rng(11);
    std::normal_distribution<float> normal;
    for (auto* v : {&params_, &m_, &v_}) {
      v->resize(n_);
      for (float& x : *v) x = normal(rng);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Every rank saves `step`; rank `failing_rank` (-1: none) has its writes fail.
  std::vector<absl::StatusOr<std::string>> SaveOnAllRanks(int64_t step, int failing_rank) {
    const int world = GetParam();
    std::vector<absl::StatusOr<std::string>> results(world, absl::UnknownError("not run"));
    test_util::RunRanks(world, [&](Communicator& comm) {
      const int r = comm.Rank();
      std::unique_ptr<Kernels> kernels = *MakeKernels(Device::kCpu, 1);
      FaultInjectionEnv env(Env::Default());
      if (r == failing_rank) env.FailWritesAfter(2);
      // Every rank holds the full, identical state (plain data parallelism).
      DeviceBuffer<float> p(kernels.get(), n_), m(kernels.get(), n_), v(kernels.get(), n_);
      kernels->CopyToDevice(p.data(), params_.data(), n_ * 4);
      kernels->CopyToDevice(m.data(), m_.data(), n_ * 4);
      kernels->CopyToDevice(v.data(), v_.data(), n_ * 4);
      CheckpointWriter writer({.checkpoints_dir = dir_,
                               .keep_last = 3,
                               .keep_every = 0,
                               .buffer_bytes = 256,
                               .env = &env},
                              &comm);
      CheckpointState s;
      s.config = &config_;
      s.tokenizer = &tokenizer_;
      s.step = step;
      s.optimizer_step = step;
      s.kernels = kernels.get();
      s.params = p.data();
      s.adam_m = m.data();
      s.adam_v = v.data();
      s.num_params = n_;
      results[r] = writer.Save(s);
    });
    return results;
  }

  std::string dir_;
  TrainConfig config_;
  Tokenizer tokenizer_;
  size_t n_ = 0;
  std::vector<float> params_, m_, v_;
};

TEST_P(CheckpointRanksTest, EveryRankWritesItsSliceAndAnyReaderGetsTheWhole) {
  const int world = GetParam();
  for (const auto& r : SaveOnAllRanks(5, -1)) ASSERT_TRUE(r.ok()) << r.status();
  const std::string ckpt = dir_ + "/step-00000005";
  for (int r = 0; r < world; ++r)
    EXPECT_TRUE(fs::exists(ckpt + "/" + OptimizerDataFileName(r, world)));
  absl::StatusOr<CheckpointData> data = ReadCheckpoint(ckpt);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->world_size, world);
  EXPECT_EQ(data->params, params_);
  EXPECT_EQ(data->adam_m, m_);
  EXPECT_EQ(data->adam_v, v_);
}

TEST_P(CheckpointRanksTest, OneRankFailingLeavesLatestUnchangedOnAllRanks) {
  for (const auto& r : SaveOnAllRanks(1, -1)) ASSERT_TRUE(r.ok()) << r.status();
  const int failing = GetParam() - 1;
  const auto results = SaveOnAllRanks(2, failing);
  for (const auto& r : results) EXPECT_FALSE(r.ok());
  if (failing != 0) {
    // Rank 0 wrote its part fine and still did not commit.
    EXPECT_NE(results[0].status().message().find("1 rank(s) failed to write"), std::string::npos)
        << results[0].status();
  }
  std::ifstream latest(dir_ + "/LATEST");
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "step-00000001");
  EXPECT_FALSE(fs::exists(dir_ + "/step-00000002"));
  // Rank 0 removes the temporary directory (unless its own file system is
  // the one failing; the next save's retention removes it then).
  for (const auto& e : fs::directory_iterator(dir_)) {
    if (failing != 0) {
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CheckpointRanksTest, ::testing::Values(1, 2, 3));

// A save's collectives wait collective_timeout for the other ranks (the
// trainer raises it to comm_timeout_s when that is longer: rank 0 may take
// long to write a large model). The writer ignored it and always waited
// the communicator's default 5 minutes. Here rank 1 never saves.
TEST(CheckpointWriterTimeoutTest, ASaveWaitsForOtherRanksOnlyItsCollectiveTimeout) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("dropk_ckpt_timeout_" + std::to_string(getpid()));
  fs::remove_all(dir);
  const TrainConfig config = test_util::TinyTrainConfig(1, 2, 8, 4);
  Tokenizer tokenizer;
  tokenizer.set_kind(Tokenizer::BYTE);
  const size_t n = ParamLayout(GptConfig{256, 4, 1, 2, 8}).num_params();
  absl::Status rank0 = absl::UnknownError("not run");
  std::chrono::steady_clock::duration took{};
  test_util::RunRanks(2, [&](Communicator& comm) {
    if (comm.Rank() != 0) return;
    std::unique_ptr<Kernels> kernels = *MakeKernels(Device::kCpu, 1);
    DeviceBuffer<float> p(kernels.get(), n), m(kernels.get(), n), v(kernels.get(), n);
    CheckpointWriter writer(
        {.checkpoints_dir = dir.string(), .collective_timeout = std::chrono::milliseconds(300)},
        &comm);
    CheckpointState s;
    s.config = &config;
    s.tokenizer = &tokenizer;
    s.step = 1;
    s.kernels = kernels.get();
    s.params = p.data();
    s.adam_m = m.data();
    s.adam_v = v.data();
    s.num_params = n;
    const auto start = std::chrono::steady_clock::now();
    rank0 = writer.Save(s).status();
    took = std::chrono::steady_clock::now() - start;
  });
  EXPECT_FALSE(rank0.ok());
  EXPECT_LT(took, std::chrono::minutes(1)) << "waited the default, not collective_timeout";
  EXPECT_FALSE(fs::exists(dir / "LATEST"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dropk
