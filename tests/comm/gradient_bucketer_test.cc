// Bucket planning and launch order, with a communicator that records calls.
#include "comm/gradient_bucketer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "comm/consistency.h"

namespace dropk {
namespace {

// Records every AllReduce (its range inside `base`) and completes it by
// doubling the values, so tests can see which elements were reduced.
class RecordingCommunicator final : public Communicator {
 public:
  explicit RecordingCommunicator(const float* base) : base_(base) {}
  int Rank() const override { return 0; }
  int Size() const override { return 2; }
  std::string BackendName() const override { return "recording"; }
  std::unique_ptr<Work> AllReduce(Buffer b, ReduceOp, const CollectiveOptions&) override {
    const size_t begin = static_cast<const float*>(b.data) - base_;
    calls.push_back({begin, begin + b.count});
    for (size_t i = 0; i < b.count; ++i) static_cast<float*>(b.data)[i] *= 2.0f;
    return Done();
  }
  std::unique_ptr<Work> Broadcast(Buffer, int, const CollectiveOptions&) override { return Done(); }
  std::unique_ptr<Work> AllGather(Buffer, Buffer, const CollectiveOptions&) override {
    return Done();
  }
  std::unique_ptr<Work> ReduceScatter(Buffer, Buffer, ReduceOp, const CollectiveOptions&) override {
    return Done();
  }
  std::unique_ptr<Work> Barrier(const CollectiveOptions&) override { return Done(); }

  std::vector<Bucket> calls;

 private:
  struct DoneWork final : Work {
    absl::Status Wait() override { return absl::OkStatus(); }
    bool IsCompleted() override { return true; }
  };
  static std::unique_ptr<Work> Done() { return std::make_unique<DoneWork>(); }
  const float* base_;
};

TEST(PlanBucketsTest, WholeTensorsFromTheEndUnderTheCap) {
  // Tensors at 0, 10, 30, 35, 100 of a 120-element buffer; cap 40 elements.
  const std::vector<size_t> offsets = {0, 10, 30, 35, 100};
  const std::vector<Bucket> b = PlanBuckets(offsets, 120, 40 * 4, 4);
  // [100,120) = 20; [35,100) = 65 exceeds the cap on its own: pieces
  // [60,100) and [35,60); [30,35) joins [35,60); [10,30) would make 50, so
  // it opens a bucket, which [0,10) joins.
  const std::vector<Bucket> expected = {{100, 120}, {60, 100}, {30, 60}, {0, 30}};
  EXPECT_EQ(b, expected);
}

TEST(PlanBucketsTest, BucketsTileTheBufferForAnyCap) {
  const std::vector<size_t> offsets = {0, 3, 4, 9, 16, 17, 30};
  for (size_t cap = 1; cap < 50; ++cap) {
    const std::vector<Bucket> b = PlanBuckets(offsets, 41, cap * 4, 4);
    ASSERT_FALSE(b.empty());
    EXPECT_EQ(b.front().end, 41u);
    EXPECT_EQ(b.back().begin, 0u);
    for (size_t i = 1; i < b.size(); ++i) EXPECT_EQ(b[i].end, b[i - 1].begin) << cap;
    for (const Bucket& bucket : b) EXPECT_LE(bucket.end - bucket.begin, cap) << cap;
  }
}

TEST(GradientBucketerTest, LaunchesEachBucketOnceItsGradientsAreFinal) {
  std::vector<float> grads(120, 1.0f);
  RecordingCommunicator comm(grads.data());
  const std::vector<Bucket> plan = {{100, 120}, {35, 100}, {0, 35}};
  GradientBucketer bucketer(&comm, grads.data(), grads.size(), MemoryKind::kHost, plan, true);
  bucketer.OnGradsReady(110, 120);
  EXPECT_TRUE(comm.calls.empty()) << "[100,110) is not final yet";
  bucketer.OnGradsReady(50, 110);
  ASSERT_EQ(comm.calls.size(), 1u);
  bucketer.OnGradsReady(30, 50);
  ASSERT_EQ(comm.calls.size(), 2u);
  bucketer.OnGradsReady(0, 30);
  ASSERT_EQ(comm.calls.size(), 3u);
  ASSERT_TRUE(bucketer.Wait().ok());
  EXPECT_EQ(comm.calls, plan);
  for (float g : grads) EXPECT_EQ(g, 2.0f) << "every element reduced exactly once";
}

// A readiness event that logs when it is waited on into the same log as the
// communicator's calls, so the order is visible.
class LoggingEvent final : public DeviceEvent {
 public:
  explicit LoggingEvent(std::vector<std::string>* log) : log_(log) {}
  void Record() override {}
  void HostWait() override { log_->push_back("wait"); }
  void* native_handle() override { return nullptr; }

 private:
  std::vector<std::string>* log_;
};

TEST(GradientBucketerTest, WaitsOnTheReadinessEventBeforeReadingABucket) {
  std::vector<float> grads(120, 1.0f);
  RecordingCommunicator comm(grads.data());
  std::vector<std::string> log;
  LoggingEvent event(&log);
  const std::vector<Bucket> plan = {{100, 120}, {0, 100}};
  for (bool overlap : {true, false}) {
    SCOPED_TRACE(overlap);
    comm.calls.clear();
    log.clear();
    GradientBucketer bucketer(&comm, grads.data(), grads.size(), MemoryKind::kHost, plan, overlap);
    bucketer.OnGradsReady(100, 120, &event);
    if (overlap) {
      EXPECT_EQ(log, std::vector<std::string>{"wait"});
      EXPECT_EQ(comm.calls.size(), 1u);
    }
    bucketer.OnGradsReady(0, 100, &event);
    ASSERT_TRUE(bucketer.Wait().ok());
    ASSERT_EQ(comm.calls.size(), 2u);
    EXPECT_FALSE(log.empty()) << "a bucket was read without waiting on its event";
    // Overlap on: one wait per launch batch; off: one wait before launching all.
    EXPECT_EQ(log.size(), overlap ? 2u : 1u);
  }
}

TEST(GradientBucketerTest, OverlapOffLaunchesTheSameBucketsInWait) {
  std::vector<float> on(120), off(120);
  for (size_t i = 0; i < on.size(); ++i) on[i] = off[i] = 0.5f * i;
  const std::vector<Bucket> plan = PlanBuckets({0, 10, 30, 35, 100}, 120, 40 * 4, 4);
  RecordingCommunicator comm_on(on.data()), comm_off(off.data());
  GradientBucketer with(&comm_on, on.data(), 120, MemoryKind::kHost, plan, true);
  GradientBucketer without(&comm_off, off.data(), 120, MemoryKind::kHost, plan, false);
  for (auto [b, e] : std::vector<std::pair<size_t, size_t>>{{100, 120}, {30, 100}, {0, 30}}) {
    with.OnGradsReady(b, e);
    without.OnGradsReady(b, e);
  }
  EXPECT_EQ(comm_on.calls.size(), plan.size());
  EXPECT_TRUE(comm_off.calls.empty()) << "overlap off: nothing starts during backward";
  ASSERT_TRUE(with.Wait().ok());
  ASSERT_TRUE(without.Wait().ok());
  EXPECT_EQ(comm_on.calls, comm_off.calls);
  EXPECT_EQ(on, off);
  // The bucketer resets for the next step.
  with.OnGradsReady(0, 120);
  EXPECT_EQ(comm_on.calls.size(), 2 * plan.size());
  ASSERT_TRUE(with.Wait().ok());
}

TEST(DigestTest, EqualInputsEqualDigestsAnyBitChangesIt) {
  std::vector<float> a(1001);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.001f * i;
  std::vector<float> b = a;
  const uint64_t d = Digest(a.data(), a.size() * 4);
  EXPECT_EQ(d, Digest(b.data(), b.size() * 4));
  for (size_t i : {0u, 3u, 500u, 1000u}) {
    b = a;
    reinterpret_cast<uint32_t*>(b.data())[i] ^= 1u;
    EXPECT_NE(d, Digest(b.data(), b.size() * 4)) << i;
  }
  EXPECT_NE(Digest(a.data(), 4000), Digest(a.data(), 4004)) << "length matters";
}

TEST(SingleProcessCommunicatorTest, CollectivesAreIdentities) {
  auto comm = MakeSingleProcessCommunicator();
  EXPECT_EQ(comm->Size(), 1);
  std::vector<float> x = {1, 2, 3}, y(3);
  ASSERT_TRUE(comm->AllReduce(HostBuffer(x.data(), 3), ReduceOp::kAverage)->Wait().ok());
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3}));
  ASSERT_TRUE(comm->AllGather(HostBuffer(x.data(), 3), HostBuffer(y.data(), 3))->Wait().ok());
  EXPECT_EQ(y, x);
  EXPECT_FALSE(comm->Broadcast(HostBuffer(x.data(), 3), 1)->Wait().ok());
  // One rank's AllReduce touches no memory, so a GPU run's buffers pass
  // untouched; a copy between two buffers reads them, and is host-only.
  EXPECT_TRUE(comm->AllReduce({x.data(), 3, DataType::kFloat32, MemoryKind::kCuda}, ReduceOp::kSum)
                  ->Wait()
                  .ok());
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3}));
  EXPECT_FALSE(
      comm->AllGather({x.data(), 3, DataType::kFloat32, MemoryKind::kCuda}, HostBuffer(y.data(), 3))
          ->Wait()
          .ok());
  EXPECT_TRUE(CheckSameOnAllRanks(comm.get(), 42, "parameters", 1).ok());
}

}  // namespace
}  // namespace dropk
