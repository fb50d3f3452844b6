// Every collective of the MPI backend against a straightforward reference,
// for sizes 0, 1, odd and several MiB; timeouts; divergence detection.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/consistency.h"
#include "mpi_test_env.h"

namespace dropk {
namespace {

// Element i of rank r's input: exact in float and double, different per rank.
double Value(int rank, size_t i) { return static_cast<double>((i % 1000) * 0.25 + rank * 3 - 1); }

const size_t kSizes[] = {0, 1, 1001, (size_t{3} << 20) / 4 + 7};  // ~3 MiB of floats

TEST(CollectivesTest, AllReduceSumAndAverageMatchTheReference) {
  Communicator& w = World();
  const int n = w.Size(), r = w.Rank();
  for (size_t count : kSizes) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      std::vector<float> f(count);
      std::vector<double> d(count);
      for (size_t i = 0; i < count; ++i) f[i] = d[i] = Value(r, i);
      ASSERT_TRUE(w.AllReduce(HostBuffer(f.data(), count), op)->Wait().ok());
      ASSERT_TRUE(w.AllReduce(HostBuffer(d.data(), count), op)->Wait().ok());
      for (size_t i = 0; i < count; ++i) {
        double expected = 0;
        for (int k = 0; k < n; ++k) expected += Value(k, i);
        if (op == ReduceOp::kAverage) expected /= n;
        ASSERT_NEAR(f[i], expected, 1e-6 * std::abs(expected) + 1e-6) << count << " " << i;
        ASSERT_NEAR(d[i], expected, 1e-12 * std::abs(expected) + 1e-12) << count << " " << i;
      }
      // Bitwise the same on every rank (invariant 2 rests on this).
      ASSERT_TRUE(CheckSameOnAllRanks(&w, Digest(f.data(), f.size() * 4), "allreduce", 0).ok());
    }
  }
}

TEST(CollectivesTest, BroadcastAllGatherReduceScatterBarrier) {
  Communicator& w = World();
  const int n = w.Size(), r = w.Rank();
  for (size_t count : kSizes) {
    for (int root = 0; root < n; ++root) {
      std::vector<float> b(count);
      for (size_t i = 0; i < count; ++i) b[i] = Value(r, i);
      ASSERT_TRUE(w.Broadcast(HostBuffer(b.data(), count), root)->Wait().ok());
      for (size_t i = 0; i < count; ++i) ASSERT_EQ(b[i], static_cast<float>(Value(root, i)));
    }
    std::vector<double> mine(count), all(count * n);
    for (size_t i = 0; i < count; ++i) mine[i] = Value(r, i);
    ASSERT_TRUE(w.AllGather(HostBuffer(mine.data(), count), HostBuffer(all.data(), count * n))->Wait().ok());
    for (int k = 0; k < n; ++k) {
      for (size_t i = 0; i < count; ++i) ASSERT_EQ(all[k * count + i], Value(k, i));
    }
    std::vector<double> in(count * n), out(count);
    for (size_t i = 0; i < in.size(); ++i) in[i] = Value(r, i);
    ASSERT_TRUE(w.ReduceScatter(HostBuffer(in.data(), in.size()), HostBuffer(out.data(), count),
                                ReduceOp::kSum)->Wait().ok());
    for (size_t i = 0; i < count; ++i) {
      double expected = 0;
      for (int k = 0; k < n; ++k) expected += Value(k, r * count + i);
      ASSERT_EQ(out[i], expected);
    }
  }
  EXPECT_TRUE(w.Barrier()->Wait().ok());
}

TEST(CollectivesTest, BadArgumentsFailClearly) {
  Communicator& w = World();
  std::vector<float> x(4);
  absl::Status s = w.Broadcast(HostBuffer(x.data(), 4), w.Size())->Wait();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("root"), std::string::npos) << s;
  // Host memory passed off as a CUDA buffer: refused (no CUDA in the build,
  // no GPU, or not device memory), never dereferenced as device memory.
  s = w.AllReduce({x.data(), 4, DataType::kFloat32, MemoryKind::kCuda}, ReduceOp::kSum)->Wait();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("CUDA buffer"), std::string::npos) << s;
  std::vector<float> small(1);
  s = w.AllGather(HostBuffer(x.data(), 4), HostBuffer(small.data(), 1))->Wait();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
}

TEST(CollectivesTest, AStuckCollectiveTimesOutNamingOperationAndRank) {
  Communicator& w = World();
  if (w.Size() < 2) GTEST_SKIP() << "needs 2 or more ranks";
  double v = 1.0;
  CollectiveOptions quick;
  quick.timeout = std::chrono::milliseconds(300);
  if (w.Rank() == 0) {
    std::unique_ptr<Work> work = w.AllReduce(HostBuffer(&v, 1), ReduceOp::kSum, quick);
    const absl::Status s = work->Wait();
    EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
    EXPECT_NE(s.message().find("AllReduce"), std::string::npos) << s;
    EXPECT_NE(s.message().find("rank 0"), std::string::npos) << s;
    // The late ranks arrive; the operation then completes.
    CollectiveOptions patient;
    EXPECT_TRUE(w.Barrier(patient)->Wait().ok());
    EXPECT_TRUE(work->IsCompleted());
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    EXPECT_TRUE(w.AllReduce(HostBuffer(&v, 1), ReduceOp::kSum)->Wait().ok());
    EXPECT_TRUE(w.Barrier()->Wait().ok());
  }
}

TEST(ConsistencyTest, PerturbedParametersOnOneRankAreNamed) {
  Communicator& w = World();
  std::vector<float> params(10000);
  for (size_t i = 0; i < params.size(); ++i) params[i] = 0.001f * i;
  EXPECT_TRUE(CheckSameOnAllRanks(&w, Digest(params.data(), 40000), "parameters", 7).ok());
  if (w.Size() < 2) return;
  const int odd_one = w.Size() - 1;
  if (w.Rank() == odd_one) params[1234] = std::nextafter(params[1234], 1.0f);
  const absl::Status s = CheckSameOnAllRanks(&w, Digest(params.data(), 40000), "parameters", 7);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_NE(s.message().find(absl::StrCat("rank ", odd_one)), std::string::npos) << s;
  EXPECT_NE(s.message().find("step 7"), std::string::npos) << s;
}

}  // namespace
}  // namespace dropk
