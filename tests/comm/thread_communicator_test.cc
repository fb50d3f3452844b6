// The test-support thread communicator (tests/support) against a reference
// for every collective, on 1 to 4 ranks, and its timeout.
#include "support/thread_communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <numeric>
#include <vector>

namespace dropk {
namespace {

using test_util::RunRanks;

class ThreadCommunicatorTest : public ::testing::TestWithParam<int> {};

// Rank r's input element i.
float Input(int rank, size_t i) { return static_cast<float>(rank * 100 + i) * 0.5f; }

TEST_P(ThreadCommunicatorTest, EveryCollectiveMatchesTheReference) {
  const int n = GetParam();
  const size_t count = 6 * static_cast<size_t>(n);  // divisible for ReduceScatter
  std::mutex mu;
  std::vector<std::string> failures;
  RunRanks(n, [&](Communicator& comm) {
    const int r = comm.Rank();
    auto check = [&](bool ok, const std::string& what) {
      if (ok) return;
      std::lock_guard<std::mutex> lock(mu);
      failures.push_back("rank " + std::to_string(r) + ": " + what);
    };
    check(comm.Size() == n, "Size");
    std::vector<float> sum(count), avg(count), max(count);
    for (size_t i = 0; i < count; ++i) sum[i] = avg[i] = max[i] = Input(r, i);
    check(comm.AllReduce(HostBuffer(sum.data(), count), ReduceOp::kSum)->Wait().ok(), "sum");
    check(comm.AllReduce(HostBuffer(avg.data(), count), ReduceOp::kAverage)->Wait().ok(), "avg");
    check(comm.AllReduce(HostBuffer(max.data(), count), ReduceOp::kMax)->Wait().ok(), "max");
    for (size_t i = 0; i < count; ++i) {
      float s = 0;
      for (int k = 0; k < n; ++k) s += Input(k, i);
      check(sum[i] == s, "AllReduce sum element " + std::to_string(i));
      check(avg[i] == s / n, "AllReduce average element " + std::to_string(i));
      check(max[i] == Input(n - 1, i), "AllReduce max element " + std::to_string(i));
    }
    int64_t value = r == n - 1 ? 42 : r;
    check(comm.Broadcast(HostBuffer(&value, 1), n - 1)->Wait().ok() && value == 42, "Broadcast");
    int64_t mine = 10 + r;
    std::vector<int64_t> all(n);
    check(comm.AllGather(HostBuffer(&mine, 1), HostBuffer(all.data(), all.size()))->Wait().ok(),
          "AllGather");
    for (int k = 0; k < n; ++k) check(all[k] == 10 + k, "AllGather element");
    std::vector<double> in(count), out(count / n);
    for (size_t i = 0; i < count; ++i) in[i] = Input(r, i);
    check(comm.ReduceScatter(HostBuffer(in.data(), count), HostBuffer(out.data(), out.size()),
                             ReduceOp::kSum)
              ->Wait()
              .ok(),
          "ReduceScatter");
    for (size_t i = 0; i < out.size(); ++i) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += Input(k, r * out.size() + i);
      check(out[i] == s, "ReduceScatter element");
    }
    check(comm.Barrier()->Wait().ok(), "Barrier");
  });
  EXPECT_TRUE(failures.empty()) << ::testing::PrintToString(failures);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ThreadCommunicatorTest, ::testing::Values(1, 2, 3, 4));

TEST(ThreadCommunicatorTimeoutTest, AMissingRankIsDeadlineExceededNotAHang) {
  absl::Status rank0;
  RunRanks(2, [&](Communicator& comm) {
    if (comm.Rank() != 0) return;  // rank 1 never joins
    CollectiveOptions options;
    options.timeout = std::chrono::milliseconds(200);
    rank0 = comm.Barrier(options)->Wait();
  });
  EXPECT_TRUE(absl::IsDeadlineExceeded(rank0)) << rank0;
  EXPECT_NE(rank0.message().find("rank 0"), std::string::npos) << rank0;
  EXPECT_NE(rank0.message().find("Barrier"), std::string::npos) << rank0;
}

}  // namespace
}  // namespace dropk
