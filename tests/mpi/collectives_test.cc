// Every collective of the MPI backend against a straightforward reference,
// for sizes 0, 1, odd and several MiB; timeouts; divergence detection.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
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

TEST(CollectivesTest, AllReduceMaxAndIntegerTypesMatchTheReference) {
  Communicator& w = World();
  const int n = w.Size(), r = w.Rank();
  // Up to several point-to-point segments per rank's block, with a remainder.
  for (size_t count : {size_t{0}, size_t{1}, size_t{7}, (size_t{5} << 20) / 8 + 3}) {
    std::vector<int64_t> sum(count), max(count);
    std::vector<uint8_t> bytes(count);
    std::vector<float> fmax(count);
    for (size_t i = 0; i < count; ++i) {
      sum[i] = max[i] = static_cast<int64_t>(i % 977) * (r + 1) - r;
      bytes[i] = static_cast<uint8_t>(i + 100 * r);  // sums wrap around, as MPI_SUM's do
      fmax[i] = static_cast<float>(Value((r + i) % n, i));
    }
    ASSERT_TRUE(w.AllReduce(HostBuffer(sum.data(), count), ReduceOp::kSum)->Wait().ok());
    ASSERT_TRUE(w.AllReduce(HostBuffer(max.data(), count), ReduceOp::kMax)->Wait().ok());
    ASSERT_TRUE(w.AllReduce(HostBuffer(bytes.data(), count), ReduceOp::kSum)->Wait().ok());
    ASSERT_TRUE(w.AllReduce(HostBuffer(fmax.data(), count), ReduceOp::kMax)->Wait().ok());
    for (size_t i = 0; i < count; ++i) {
      int64_t expected_sum = 0, expected_max = INT64_MIN;
      uint8_t expected_bytes = 0;
      float expected_fmax = -INFINITY;
      for (int k = 0; k < n; ++k) {
        const int64_t v = static_cast<int64_t>(i % 977) * (k + 1) - k;
        expected_sum += v;
        expected_max = std::max(expected_max, v);
        expected_bytes = static_cast<uint8_t>(expected_bytes + static_cast<uint8_t>(i + 100 * k));
        expected_fmax = std::max(expected_fmax, static_cast<float>(Value(k, i)));
      }
      ASSERT_EQ(sum[i], expected_sum) << count << " " << i;
      ASSERT_EQ(max[i], expected_max) << count << " " << i;
      ASSERT_EQ(bytes[i], expected_bytes) << count << " " << i;
      ASSERT_EQ(fmax[i], expected_fmax) << count << " " << i;
    }
  }
}

// The gradient bucketer issues allreduces during backward and waits only
// before the optimizer: they must run without anyone waiting on them.
TEST(CollectivesTest, AnAllReduceNobodyWaitsOnCompletesByItself) {
  Communicator& w = World();
  std::vector<float> x(100000, 1.0f);
  std::unique_ptr<Work> work = w.AllReduce(HostBuffer(x.data(), x.size()), ReduceOp::kSum);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!work->IsCompleted() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(work->IsCompleted());
  ASSERT_TRUE(work->Wait().ok());
  EXPECT_EQ(x[12345], static_cast<float>(w.Size()));
}

TEST(CollectivesTest, CollectivesWaitedOnInAnyOrderCompleteInIssueOrder) {
  Communicator& w = World();
  const int n = w.Size();
  std::vector<std::vector<double>> buffers;
  for (int b = 0; b < 6; ++b) buffers.emplace_back(1000 * (b + 1) + b, b + 1.0);
  std::vector<std::unique_ptr<Work>> works;
  for (int b = 0; b < 6; ++b) {
    works.push_back(w.AllReduce(HostBuffer(buffers[b].data(), buffers[b].size()),
                                b % 2 == 0 ? ReduceOp::kSum : ReduceOp::kAverage));
    if (b == 2) works.push_back(w.Barrier());  // run by the communication thread only
  }
  for (size_t i = works.size(); i-- > 0;) ASSERT_TRUE(works[i]->Wait().ok()) << i;
  for (int b = 0; b < 6; ++b) {
    const double expected = b % 2 == 0 ? (b + 1.0) * n : b + 1.0;
    for (double v : buffers[b]) ASSERT_EQ(v, expected) << b;
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
    ASSERT_TRUE(w.AllGather(HostBuffer(mine.data(), count), HostBuffer(all.data(), count * n))
                    ->Wait()
                    .ok());
    for (int k = 0; k < n; ++k) {
      for (size_t i = 0; i < count; ++i) ASSERT_EQ(all[k * count + i], Value(k, i));
    }
    std::vector<double> in(count * n), out(count);
    for (size_t i = 0; i < in.size(); ++i) in[i] = Value(r, i);
    ASSERT_TRUE(w.ReduceScatter(HostBuffer(in.data(), in.size()), HostBuffer(out.data(), count),
                                ReduceOp::kSum)
                    ->Wait()
                    .ok());
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
    // It names the peer it waits on (rank 0 receives from the last rank
    // first): with two ranks, the one not taking part.
    EXPECT_NE(s.message().find(absl::StrCat("this rank waits on data from rank ", w.Size() - 1)),
              std::string::npos)
        << s;
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
