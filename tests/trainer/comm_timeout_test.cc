#include "trainer/comm_timeout.h"

#include <gtest/gtest.h>

#include <memory>
#include <sstream>

#include "absl/strings/cord.h"

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

// Rank 0 of 2 whose every collective fails with `status` (a timeout
// carrying a payload here).
class FailingCommunicator final : public Communicator {
 public:
  explicit FailingCommunicator(absl::Status status) : status_(std::move(status)) {}
  int Rank() const override { return 0; }
  int Size() const override { return 2; }
  std::string BackendName() const override { return "failing"; }
  std::unique_ptr<Work> AllReduce(Buffer, ReduceOp, const CollectiveOptions&) override {
    return Fail();
  }
  std::unique_ptr<Work> Broadcast(Buffer, int, const CollectiveOptions&) override { return Fail(); }
  std::unique_ptr<Work> AllGather(Buffer, Buffer, const CollectiveOptions&) override {
    return Fail();
  }
  std::unique_ptr<Work> ReduceScatter(Buffer, Buffer, ReduceOp, const CollectiveOptions&) override {
    return Fail();
  }
  std::unique_ptr<Work> Barrier(const CollectiveOptions&) override { return Fail(); }

 private:
  class Failed final : public Work {
   public:
    explicit Failed(absl::Status status) : status_(std::move(status)) {}
    absl::Status Wait() override { return status_; }
    bool IsCompleted() override { return true; }

   private:
    absl::Status status_;
  };
  std::unique_ptr<Work> Fail() { return std::make_unique<Failed>(status_); }
  absl::Status status_;
};

// Naming comm_timeout_s rebuilt the status from its code and message, so a
// mark the communicator set on the timeout (a payload) was dropped.
TEST(CommTimeoutTest, NamingTheConfiguredTimeoutKeepsTheStatusPayloads) {
  test_util::ScopedTempDir tmp("comm_timeout_payload");
  ASSERT_TRUE(test_util::PrepareShakespeareData(tmp.Path("data")).ok());
  TrainConfig config = test_util::TinySmokeEveryStepConfig(tmp.Path("data"), tmp.Path("run"), 2);
  config.set_comm_timeout_s(0.5);
  absl::Status timeout = absl::DeadlineExceededError("AllReduce #1 on rank 0 did not complete");
  timeout.SetPayload("dropk.test/mark", absl::Cord("kept"));
  FailingCommunicator comm(timeout);
  std::ostringstream log;
  const absl::Status status = RunTraining(config, comm, log).status();
  ASSERT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_NE(status.message().find("that limit is comm_timeout_s=0.5"), std::string::npos) << status;
  EXPECT_EQ(status.GetPayload("dropk.test/mark"), absl::Cord("kept")) << status;
}

}  // namespace
}  // namespace dropk
