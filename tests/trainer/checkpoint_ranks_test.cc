// The writer with several ranks (threads standing in for processes, over a
// small in-test communicator): each rank writes its optimizer slice in
// parallel, rank 0 commits only when every rank's part is durable, and the
// result reads back whole whatever world size wrote it. A failure on any one
// rank leaves LATEST untouched on every rank.
#include <gtest/gtest.h>
#include <unistd.h>

#include <barrier>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "model/kernels.h"
#include "model/param_layout.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/env.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

class DoneWork : public Work {
 public:
  explicit DoneWork(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait() override { return status_; }
  bool IsCompleted() override { return true; }

 private:
  absl::Status status_;
};

// Ranks as threads: each collective deposits its bytes, meets the others at
// a barrier, reads what it needs, and meets them again before slots reuse.
struct ThreadGroup {
  explicit ThreadGroup(int size) : barrier(size), slots(size) {}
  std::barrier<> barrier;
  std::vector<std::string> slots;
};

class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup* group, int rank) : group_(group), rank_(rank) {}
  int Rank() const override { return rank_; }
  int Size() const override { return static_cast<int>(group_->slots.size()); }
  std::string BackendName() const override { return "test-threads"; }

  std::unique_ptr<Work> Broadcast(Buffer buffer, int root, const CollectiveOptions&) override {
    Deposit(buffer);
    std::memcpy(buffer.data, group_->slots[root].data(), buffer.bytes());
    group_->barrier.arrive_and_wait();
    return Done();
  }
  std::unique_ptr<Work> AllGather(Buffer input, Buffer output, const CollectiveOptions&) override {
    Deposit(input);
    for (int r = 0; r < Size(); ++r) {
      std::memcpy(static_cast<char*>(output.data) + r * input.bytes(), group_->slots[r].data(),
                  input.bytes());
    }
    group_->barrier.arrive_and_wait();
    return Done();
  }
  std::unique_ptr<Work> Barrier(const CollectiveOptions&) override {
    group_->barrier.arrive_and_wait();
    return Done();
  }
  std::unique_ptr<Work> AllReduce(Buffer, ReduceOp, const CollectiveOptions&) override {
    return std::make_unique<DoneWork>(absl::UnimplementedError("test communicator: AllReduce"));
  }
  std::unique_ptr<Work> ReduceScatter(Buffer, Buffer, ReduceOp, const CollectiveOptions&) override {
    return std::make_unique<DoneWork>(absl::UnimplementedError("test communicator: ReduceScatter"));
  }

 private:
  void Deposit(const Buffer& b) {
    group_->slots[rank_].assign(static_cast<const char*>(b.data), b.bytes());
    group_->barrier.arrive_and_wait();
  }
  std::unique_ptr<Work> Done() { return std::make_unique<DoneWork>(absl::OkStatus()); }
  ThreadGroup* group_;
  int rank_;
};

class CheckpointRanksTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) / ("dropk_ckpt_ranks_" + std::to_string(GetParam()) + "_" + std::to_string(getpid()))).string();
    fs::remove_all(dir_);
    config_ = DefaultTrainConfig();
    config_.set_n_layer(1);
    config_.set_n_head(2);
    config_.set_n_embd(8);
    config_.set_block_size(4);
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
    ThreadGroup group(world);
    std::vector<absl::StatusOr<std::string>> results(world, absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        ThreadCommunicator comm(&group, r);
        std::unique_ptr<Kernels> kernels = *MakeKernels(Device::kCpu, 1);
        FaultInjectionEnv env(Env::Default());
        if (r == failing_rank) env.FailWritesAfter(2);
        // Every rank holds the full, identical state (plain data parallelism).
        DeviceBuffer<float> p(kernels.get(), n_), m(kernels.get(), n_), v(kernels.get(), n_);
        kernels->CopyToDevice(p.data(), params_.data(), n_ * 4);
        kernels->CopyToDevice(m.data(), m_.data(), n_ * 4);
        kernels->CopyToDevice(v.data(), v_.data(), n_ * 4);
        CheckpointWriter writer({dir_, 3, 0, 256, &env}, &comm);
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
    }
    for (auto& t : threads) t.join();
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
  for (int r = 0; r < world; ++r) EXPECT_TRUE(fs::exists(ckpt + "/" + OptimizerDataFileName(r, world)));
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

}  // namespace
}  // namespace dropk
