// Asynchronous checkpoints (checkpoint/async_writer.h): the files are the
// synchronous save's, bit for bit; the state is the one at Start (later
// training does not leak in); a fault in the background write is reported,
// naming the step, the checkpoint and the cause, at the next save or at
// Finish, and leaves no partial checkpoint visible; with several ranks the
// commit waits for every rank's files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/async_writer.h"
#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "comm/communicator.h"
#include "model/kernels.h"
#include "model/param_layout.h"
#include "support/fault_injection_env.h"
#include "support/subprocess.h"
#include "support/thread_communicator.h"
#include "support/tiny_config.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

using test_util::ReadFile;

// An Env whose NewWritableFile blocks until Open() is called: the test
// acts while the background save is provably not yet writing.
class GatedEnv : public FaultInjectionEnv {
 public:
  GatedEnv() : FaultInjectionEnv(Env::Default()) {}
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return open_; });
    lock.unlock();
    return FaultInjectionEnv::NewWritableFile(path);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

class AsyncWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) /
            ("dropk_async_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
             std::to_string(getpid())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    config_ = test_util::TinyTrainConfig(/*n_layer=*/2, /*n_head=*/2, /*n_embd=*/16,
                                         /*block_size=*/8);
    tokenizer_.set_kind(Tokenizer::BYTE);
    kernels_ = *MakeKernels(Device::kCpu, 1);
    n_ = ParamLayout(test_util::ShapeOf(config_, 256)).num_params();
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    for (auto* v : {&params_, &m_, &v_}) {
      v->resize(n_);
      for (float& x : *v) x = normal(rng);
    }
    comm_ = MakeSingleProcessCommunicator();
  }
  void TearDown() override { fs::remove_all(dir_); }

  CheckpointState State(int64_t step) {
    CheckpointState s;
    s.config = &config_;
    s.tokenizer = &tokenizer_;
    s.step = step;
    s.tokens_seen = step * 100;
    s.optimizer_step = step;
    s.last_train_loss = 1.25f;
    s.kernels = kernels_.get();
    s.params = params_.data();
    s.adam_m = m_.data();
    s.adam_v = v_.data();
    s.num_params = n_;
    return s;
  }

  // The default buffer, small and odd, makes every tensor cross chunk
  // boundaries; a larger one means fewer appends to fail one by one.
  CheckpointWriterOptions Options(const std::string& root, Env* env = nullptr,
                                  size_t buffer = 1000) {
    return {.checkpoints_dir = root,
            .keep_last = 3,
            .keep_every = 0,
            .buffer_bytes = buffer,
            .env = env};
  }

  std::string Latest(const std::string& root) { return ReadFile(root + "/LATEST"); }

  // The manifest of `dir` without its creation time, the one field two saves
  // of the same state may differ in.
  CheckpointManifest ManifestOf(const std::string& dir) {
    absl::StatusOr<CheckpointManifest> m =
        ParseManifestFile(ReadFile(dir + "/" + kManifestFileName), dir);
    EXPECT_TRUE(m.ok()) << m.status();
    CheckpointManifest out = m.ok() ? *m : CheckpointManifest();
    out.clear_created_unix_ms();
    return out;
  }

  std::string dir_;
  TrainConfig config_;
  Tokenizer tokenizer_;
  std::unique_ptr<Kernels> kernels_;
  size_t n_ = 0;
  std::vector<float> params_, m_, v_;
  std::unique_ptr<Communicator> comm_;
};

TEST_F(AsyncWriterTest, AsyncSaveWritesTheSyncSavesFilesBitForBit) {
  const std::string sync_root = dir_ + "/sync", async_root = dir_ + "/async";
  CheckpointWriter sync_writer(Options(sync_root), comm_.get());
  absl::StatusOr<std::string> sync_dir = sync_writer.Save(State(7));
  ASSERT_TRUE(sync_dir.ok()) << sync_dir.status();

  AsyncCheckpointWriter async_writer(Options(async_root), comm_.get());
  ASSERT_TRUE(async_writer.Start(State(7)).ok());
  EXPECT_TRUE(async_writer.pending());
  ASSERT_TRUE(async_writer.Finish().ok());
  EXPECT_FALSE(async_writer.pending());
  const std::string async_dir = async_root + "/step-00000007";
  EXPECT_EQ(Latest(async_root), "step-00000007\n");

  for (const std::string& file : {std::string(kModelDataFileName), OptimizerDataFileName(0, 1)}) {
    const std::string a = ReadFile(*sync_dir + "/" + file), b = ReadFile(async_dir + "/" + file);
    EXPECT_FALSE(a.empty()) << file;
    EXPECT_TRUE(a == b) << file << " differs between the sync and async saves";
  }
  EXPECT_EQ(ManifestOf(*sync_dir).SerializeAsString(), ManifestOf(async_dir).SerializeAsString());
  std::vector<std::string> sync_files, async_files;
  for (const auto& e : fs::directory_iterator(*sync_dir)) sync_files.push_back(e.path().filename());
  for (const auto& e : fs::directory_iterator(async_dir))
    async_files.push_back(e.path().filename());
  std::sort(sync_files.begin(), sync_files.end());
  std::sort(async_files.begin(), async_files.end());
  EXPECT_EQ(sync_files, async_files);

  absl::StatusOr<CheckpointData> data = ReadCheckpoint(async_dir);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->params, params_);
  EXPECT_EQ(data->adam_m, m_);
  EXPECT_EQ(data->adam_v, v_);

  std::optional<AsyncSaveReport> report = async_writer.TakeCommitted();
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->step, 7);
  EXPECT_EQ(report->dir, async_dir);
  EXPECT_GT(report->background_s, 0);
  EXPECT_EQ(report->snapshot_bytes, 3 * n_ * sizeof(float));
  EXPECT_FALSE(async_writer.TakeCommitted().has_value());  // reported once
}

// Start returns while the background thread cannot write yet; the state is
// then changed as later training steps would. The checkpoint holds the
// state of the save step.
TEST_F(AsyncWriterTest, SnapshotIsTakenAtTheSaveStep) {
  const std::vector<float> params_at_save = params_, m_at_save = m_, v_at_save = v_;
  GatedEnv env;
  AsyncCheckpointWriter writer(Options(dir_ + "/ckpt", &env), comm_.get());
  ASSERT_TRUE(writer.Start(State(3)).ok());
  for (auto* v : {&params_, &m_, &v_}) {
    for (float& x : *v) x = x * 2.0f + 1.0f;
  }
  ASSERT_TRUE(writer.Poll().ok());  // still writing: nothing committed
  EXPECT_FALSE(fs::exists(dir_ + "/ckpt/LATEST"));
  env.Open();
  ASSERT_TRUE(writer.Finish().ok());
  absl::StatusOr<CheckpointData> data = ReadCheckpoint(dir_ + "/ckpt/step-00000003");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->params, params_at_save);
  EXPECT_EQ(data->adam_m, m_at_save);
  EXPECT_EQ(data->adam_v, v_at_save);
}

// Polling (what the trainer does every step) commits the save without
// Finish, and the next Start waits for nothing.
TEST_F(AsyncWriterTest, PollingCommitsInTheBackground) {
  AsyncCheckpointWriter writer(Options(dir_ + "/ckpt"), comm_.get());
  ASSERT_TRUE(writer.Start(State(1)).ok());
  std::optional<AsyncSaveReport> report;
  for (int i = 0; i < 20000 && !report; ++i) {
    ASSERT_TRUE(writer.Poll().ok());
    report = writer.TakeCommitted();
    if (!report) usleep(1000);
  }
  ASSERT_TRUE(report.has_value()) << "not committed after 20 s of polling";
  EXPECT_EQ(Latest(dir_ + "/ckpt"), "step-00000001\n");
  EXPECT_TRUE(VerifyCheckpoint(dir_ + "/ckpt/step-00000001").ok());
  ASSERT_TRUE(writer.Finish().ok());
  EXPECT_FALSE(writer.TakeCommitted().has_value());  // already reported by Poll
}

// Back-to-back saves: the next Start finishes the previous one, and each is
// reported exactly once (the trainer logs one line per save).
TEST_F(AsyncWriterTest, EverySaveIsReportedOnce) {
  AsyncCheckpointWriter writer(Options(dir_ + "/ckpt"), comm_.get());
  ASSERT_TRUE(writer.Start(State(1)).ok());
  ASSERT_TRUE(writer.Start(State(2)).ok());
  std::optional<AsyncSaveReport> first = writer.TakeCommitted();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->step, 1);
  EXPECT_FALSE(writer.TakeCommitted().has_value());
  ASSERT_TRUE(writer.Finish().ok());
  std::optional<AsyncSaveReport> second = writer.TakeCommitted();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->step, 2);
  EXPECT_FALSE(writer.TakeCommitted().has_value());
  EXPECT_EQ(Latest(dir_ + "/ckpt"), "step-00000002\n");
}

// Every mutating file operation of a background save fails in turn: the
// failure reaches the caller (naming the step, the checkpoint directory and
// the injected cause); after a
// simulated crash LATEST still loads, and every step directory present
// verifies: nothing partial is visible.
TEST_F(AsyncWriterTest, FaultInBackgroundSaveIsReportedAndLeavesNothingPartial) {
  const std::string root = dir_ + "/ckpt";
  constexpr size_t kBuffer = 16 << 10;
  FaultInjectionEnv counting(Env::Default());
  {
    CheckpointWriter writer(Options(root, &counting, kBuffer), comm_.get());
    ASSERT_TRUE(writer.Save(State(2)).ok());
  }
  const int64_t ops = counting.ops();
  ASSERT_GT(ops, 10);
  int background_failures = 0;
  for (int64_t n = 0; n < ops; ++n) {
    SCOPED_TRACE(n);
    fs::remove_all(root);
    {
      CheckpointWriter writer(Options(root, nullptr, kBuffer), comm_.get());
      ASSERT_TRUE(writer.Save(State(1)).ok());
    }
    FaultInjectionEnv env(Env::Default());
    env.FailWritesAfter(n);
    AsyncCheckpointWriter writer(Options(root, &env, kBuffer), comm_.get());
    if (writer.Start(State(2)).ok()) {
      const absl::Status finished = writer.Finish();
      if (!finished.ok()) {
        ++background_failures;
        const std::string message(finished.message());
        EXPECT_NE(message.find("background save of step 2 failed"), std::string::npos) << message;
        EXPECT_NE(message.find(root + "/step-00000002"), std::string::npos) << message;
        EXPECT_NE(message.find("injected fault"), std::string::npos) << message;
        EXPECT_FALSE(writer.pending());
        EXPECT_TRUE(writer.Finish().ok());  // reported once, then nothing is pending
      }
    }
    env.SimulateCrash();
    const std::string latest = Latest(root);
    ASSERT_FALSE(latest.empty());
    absl::StatusOr<CheckpointData> data =
        ReadCheckpoint(root + "/" + latest.substr(0, latest.size() - 1));
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_TRUE(data->step == 1 || data->step == 2);
    for (const auto& e : fs::directory_iterator(root)) {
      if (ParseStepDirName(e.path().filename()) >= 0) {
        EXPECT_TRUE(VerifyCheckpoint(e.path().string()).ok()) << e.path();
      }
    }
  }
  // Most faults land in the background (Stage makes only two directories).
  EXPECT_GT(background_failures, ops / 2);
}

// The next save reports a background failure and starts nothing, and a
// destroyed writer with a save pending neither crashes nor publishes it.
TEST_F(AsyncWriterTest, NextSaveReportsFailureAndDestructorJoins) {
  const std::string root = dir_ + "/ckpt";
  FaultInjectionEnv env(Env::Default());
  env.FailWritesAfter(4);  // past Stage's directories: inside the data files
  {
    AsyncCheckpointWriter writer(Options(root, &env), comm_.get());
    ASSERT_TRUE(writer.Start(State(4)).ok());
    const absl::Status s = writer.Start(State(5));
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("background save of step 4 failed"), std::string::npos) << s;
    EXPECT_NE(s.message().find("injected fault"), std::string::npos) << s;
    EXPECT_FALSE(writer.pending());  // step 5 was not started
    EXPECT_TRUE(writer.Finish().ok());
    EXPECT_FALSE(fs::exists(root + "/step-00000004"));
    EXPECT_FALSE(fs::exists(root + "/step-00000005"));
    EXPECT_FALSE(fs::exists(root + "/LATEST"));
  }
  {
    AsyncCheckpointWriter writer(Options(root), comm_.get());
    ASSERT_TRUE(writer.Start(State(5)).ok());
    // Destroyed without Finish (training ended by an error): joins.
  }
  EXPECT_FALSE(fs::exists(root + "/LATEST"));
}

// Several ranks (threads over a thread communicator): each writes its slice
// in the background, polls every "step", and rank 0 commits only when all
// are durable. A failure on any rank reaches every rank; LATEST unchanged.
class AsyncWriterRanksTest : public AsyncWriterTest, public ::testing::WithParamInterface<int> {
 protected:
  // *alike (when given): each rank's failed_alike_on_every_rank() after it.
  std::vector<absl::Status> SaveOnAllRanks(int64_t step, int failing_rank,
                                           std::vector<int>* alike = nullptr) {
    const int world = GetParam();
    std::vector<absl::Status> results(world);
    if (alike != nullptr) alike->assign(world, -1);
    test_util::RunRanks(world, [&](Communicator& comm) {
      const int r = comm.Rank();
      FaultInjectionEnv env(Env::Default());
      if (r == failing_rank) env.FailWritesAfter(r == 0 ? 3 : 1);
      std::unique_ptr<Kernels> kernels = *MakeKernels(Device::kCpu, 1);
      AsyncCheckpointWriter writer(Options(dir_ + "/ckpt", &env), &comm);
      CheckpointState s = State(step);
      s.kernels = kernels.get();
      absl::Status status = writer.Start(s);
      for (int i = 0; status.ok() && i < 5; ++i) status = writer.Poll();
      if (status.ok()) status = writer.Finish();
      results[r] = status;
      if (alike != nullptr) (*alike)[r] = writer.failed_alike_on_every_rank() ? 1 : 0;
    });
    return results;
  }
};

TEST_P(AsyncWriterRanksTest, EveryRankWritesItsSliceInTheBackground) {
  const int world = GetParam();
  for (const absl::Status& s : SaveOnAllRanks(6, -1)) ASSERT_TRUE(s.ok()) << s;
  const std::string ckpt = dir_ + "/ckpt/step-00000006";
  for (int r = 0; r < world; ++r)
    EXPECT_TRUE(fs::exists(ckpt + "/" + OptimizerDataFileName(r, world)));
  absl::StatusOr<CheckpointData> data = ReadCheckpoint(ckpt);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->world_size, world);
  EXPECT_EQ(data->params, params_);
  EXPECT_EQ(data->adam_m, m_);
  EXPECT_EQ(data->adam_v, v_);
}

TEST_P(AsyncWriterRanksTest, OneRankFailingFailsEveryRankAndLatestStays) {
  for (const absl::Status& s : SaveOnAllRanks(1, -1)) ASSERT_TRUE(s.ok()) << s;
  const int failing = GetParam() - 1;
  std::vector<int> alike;
  for (const absl::Status& s : SaveOnAllRanks(2, failing, &alike)) {
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("background save of step 2 failed"), std::string::npos) << s;
  }
  // Every rank knows it as the save's own failure: the next save may be
  // tried (TrainingCheckpointer does, before the run stops).
  EXPECT_EQ(alike, std::vector<int>(GetParam(), 1));
  EXPECT_EQ(Latest(dir_ + "/ckpt"), "step-00000001\n");
  EXPECT_FALSE(fs::exists(dir_ + "/ckpt/step-00000002"));
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, AsyncWriterRanksTest, ::testing::Values(1, 2, 3));

// An Env whose files take `delay` to open: a slow disk.
class SlowEnv : public FaultInjectionEnv {
 public:
  explicit SlowEnv(std::chrono::milliseconds delay)
      : FaultInjectionEnv(Env::Default()), delay_(delay) {}
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    std::this_thread::sleep_for(delay_);
    return FaultInjectionEnv::NewWritableFile(path);
  }

 private:
  std::chrono::milliseconds delay_;
};

// A peer lost while a background save is in flight is named after the peer
// timeout (the trainer's step timeout), not after the long
// collective_timeout: Poll waited up to 5 minutes there, and on a cluster
// mpirun ended the job first without any rank's report (a CI run of
// cluster.lost_host_ends_the_job). Rank 1 starts the save, then is gone.
TEST_F(AsyncWriterTest, APeerLostDuringABackgroundSaveIsNamedAfterThePeerTimeout) {
  absl::Status rank0 = absl::UnknownError("not run");
  std::chrono::steady_clock::duration took{};
  test_util::RunRanks(2, [&](Communicator& comm) {
    std::unique_ptr<Kernels> kernels = *MakeKernels(Device::kCpu, 1);
    CheckpointWriterOptions options = Options(dir_ + "/ckpt");
    options.collective_timeout = std::chrono::seconds(30);
    AsyncCheckpointWriter writer(options, &comm);
    writer.set_peer_timeout(std::chrono::milliseconds(300));
    CheckpointState s = State(4);
    s.kernels = kernels.get();
    ASSERT_TRUE(writer.Start(s).ok());
    if (comm.Rank() != 0) return;  // lost
    const auto start = std::chrono::steady_clock::now();
    absl::Status status;
    for (int i = 0; status.ok() && i < 100; ++i) status = writer.Poll();
    if (status.ok()) status = writer.Finish();
    rank0 = status;
    took = std::chrono::steady_clock::now() - start;
  });
  EXPECT_FALSE(rank0.ok());
  EXPECT_NE(rank0.message().find("checkpoint of step 4"), std::string::npos) << rank0;
  EXPECT_NE(rank0.message().find("did not complete within 300 ms"), std::string::npos) << rank0;
  EXPECT_LT(took, std::chrono::seconds(10)) << "waited collective_timeout, not the peer timeout";
  EXPECT_FALSE(fs::exists(dir_ + "/ckpt/LATEST"));
}

// A disk slower than the peer timeout does not fail the save: Finish's
// rounds keep every rank meeting while rank 0 still writes, and none waits
// in a collective for the disk.
TEST_F(AsyncWriterTest, ADiskSlowerThanThePeerTimeoutStillCommits) {
  std::vector<absl::Status> results(3);
  test_util::RunRanks(3, [&](Communicator& comm) {
    std::unique_ptr<Kernels> kernels = *MakeKernels(Device::kCpu, 1);
    SlowEnv slow(std::chrono::milliseconds(comm.Rank() == 0 ? 400 : 0));
    AsyncCheckpointWriter writer(Options(dir_ + "/ckpt", &slow), &comm);
    writer.set_peer_timeout(std::chrono::milliseconds(100));
    CheckpointState s = State(7);
    s.kernels = kernels.get();
    absl::Status status = writer.Start(s);
    if (status.ok()) status = writer.Poll();
    if (status.ok()) status = writer.Finish();
    results[comm.Rank()] = status;
  });
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(Latest(dir_ + "/ckpt"), "step-00000007\n");
  absl::StatusOr<CheckpointData> data = ReadCheckpoint(dir_ + "/ckpt/step-00000007");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->params, params_);
}

}  // namespace
}  // namespace dropk
