// Collectives over GPU memory: the MPI backend staging CUDA buffers through
// pinned host memory (any number of ranks on one GPU), and the NCCL backend
// (one GPU per rank). Results bitwise equal on every rank; a stuck NCCL
// collective aborts the communicator naming the operation and the rank.
// Every test skips, on every rank alike, where the GPUs it needs are absent.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "comm/consistency.h"
#include "comm/nccl_communicator.h"
#include "model/kernels.h"
#include "mpi_test_env.h"

namespace dropk {
namespace {

double Value(int rank, size_t i) { return static_cast<double>((i % 1000) * 0.25 + rank * 3 - 1); }

const size_t kSizes[] = {1, 1001, (size_t{3} << 20) / 4 + 7};

// True on every rank when every rank could open CUDA device `device_of_rank`
// (its own rank for NCCL, 0 for staging); the reason otherwise.
bool AllRanksHaveGpu(int device, std::unique_ptr<Kernels>* kernels, std::string* reason) {
  KernelOptions options;
  options.cuda_device = device;
  absl::StatusOr<std::unique_ptr<Kernels>> k = MakeKernels(Device::kCuda, options);
  int64_t missing = k.ok() ? 0 : 1;
  if (!k.ok()) *reason = std::string(k.status().message());
  EXPECT_TRUE(World().AllReduce(HostBuffer(&missing, 1), ReduceOp::kSum)->Wait().ok());
  if (missing > 0) {
    if (reason->empty()) *reason = "another rank has no usable GPU";
    return false;
  }
  *kernels = std::move(*k);
  return true;
}

// Each rank's GPU kernels (GPU = rank) and an NCCL communicator over every
// rank, or, in `skip`, why this machine or build cannot have them.
struct NcclOnEveryRank {
  std::string skip;
  std::unique_ptr<Kernels> kernels;
  absl::StatusOr<std::unique_ptr<Communicator>> nccl = absl::UnknownError("not created");
};

NcclOnEveryRank SetUpNccl() {
  NcclOnEveryRank out;
  if (!NcclAvailable()) {
    out.skip = "this build has no NCCL";
    return out;
  }
  std::string reason;
  if (!AllRanksHaveGpu(World().Rank(), &out.kernels, &reason)) {
    out.skip = "needs one GPU per rank: " + reason;
    return out;
  }
  out.nccl = MakeNcclCommunicator(&World(), World().Rank());
  return out;
}

Buffer CudaBuffer(float* data, size_t count) {
  return {data, count, DataType::kFloat32, MemoryKind::kCuda};
}

TEST(GpuCollectivesTest, MpiStagesCudaBuffersWithBitwiseEqualResults) {
  std::unique_ptr<Kernels> k;
  std::string reason;
  if (!AllRanksHaveGpu(0, &k, &reason)) GTEST_SKIP() << "needs a GPU: " << reason;
  Communicator& w = World();
  const int n = w.Size(), r = w.Rank();
  for (size_t count : kSizes) {
    std::vector<float> host(count);
    for (size_t i = 0; i < count; ++i) host[i] = static_cast<float>(Value(r, i));
    DeviceBuffer<float> dev(k.get(), count);
    k->CopyToDevice(dev.data(), host.data(), count * sizeof(float));
    // Ordered by the compute stream's event, not a host synchronisation.
    std::unique_ptr<DeviceEvent> ready = k->CreateEvent();
    ready->Record();
    CollectiveOptions options;
    options.ready_event = ready->native_handle();
    ASSERT_TRUE(
        w.AllReduce(CudaBuffer(dev.data(), count), ReduceOp::kAverage, options)->Wait().ok());
    k->CopyToHost(host.data(), dev.data(), count * sizeof(float));
    for (size_t i = 0; i < count; ++i) {
      double expected = 0;
      for (int q = 0; q < n; ++q) expected += Value(q, i);
      expected /= n;
      ASSERT_NEAR(host[i], expected, 1e-6 * std::abs(expected) + 1e-6) << count << " " << i;
    }
    ASSERT_TRUE(
        CheckSameOnAllRanks(&w, Digest(host.data(), host.size() * 4), "staged allreduce", 0).ok());

    // Broadcast from the last rank, then gather everyone's first element.
    ASSERT_TRUE(w.Broadcast(CudaBuffer(dev.data(), count), n - 1)->Wait().ok());
    DeviceBuffer<float> all(k.get(), count * n);
    ASSERT_TRUE(
        w.AllGather(CudaBuffer(dev.data(), count), CudaBuffer(all.data(), count * n))->Wait().ok());
    std::vector<float> gathered(count * n);
    k->CopyToHost(gathered.data(), all.data(), gathered.size() * sizeof(float));
    for (int q = 0; q < n; ++q) ASSERT_EQ(gathered[q * count], host[0]) << q;
  }
}

TEST(GpuCollectivesTest, NcclAllReduceIsBitwiseEqualOnEveryRank) {
  NcclOnEveryRank setup = SetUpNccl();
  if (!setup.skip.empty()) GTEST_SKIP() << setup.skip;
  ASSERT_TRUE(setup.nccl.ok()) << setup.nccl.status();
  const std::unique_ptr<Kernels>& k = setup.kernels;
  absl::StatusOr<std::unique_ptr<Communicator>>& nccl = setup.nccl;
  Communicator& c = **nccl;
  const int n = c.Size(), r = c.Rank();
  for (size_t count : kSizes) {
    std::vector<float> host(count);
    for (size_t i = 0; i < count; ++i) host[i] = static_cast<float>(Value(r, i));
    DeviceBuffer<float> dev(k.get(), count);
    k->CopyToDevice(dev.data(), host.data(), count * sizeof(float));
    std::unique_ptr<DeviceEvent> ready = k->CreateEvent();
    ready->Record();
    CollectiveOptions options;
    options.ready_event = ready->native_handle();
    std::unique_ptr<Work> work =
        c.AllReduce(CudaBuffer(dev.data(), count), ReduceOp::kAverage, options);
    ASSERT_TRUE(work->Wait().ok());
    EXPECT_GE(work->RunSeconds(), 0.0);
    k->CopyToHost(host.data(), dev.data(), count * sizeof(float));
    for (size_t i = 0; i < count; ++i) {
      double expected = 0;
      for (int q = 0; q < n; ++q) expected += Value(q, i);
      expected /= n;
      ASSERT_NEAR(host[i], expected, 1e-6 * std::abs(expected) + 1e-6) << count << " " << i;
    }
    ASSERT_TRUE(
        CheckSameOnAllRanks(&World(), Digest(host.data(), host.size() * 4), "nccl allreduce", 0)
            .ok());
  }
  // Host memory is refused with a clear error, not a crash.
  float x = 1.0f;
  absl::Status host_status = c.AllReduce(HostBuffer(&x, 1), ReduceOp::kSum)->Wait();
  EXPECT_FALSE(host_status.ok());
  EXPECT_NE(host_status.message().find("CUDA buffers"), std::string::npos) << host_status;
}

// Broadcast, AllGather and ReduceScatter through NCCL. Unlike AllReduce,
// which returns at once on one rank, each of them runs NCCL kernels even on
// one rank, so the one-GPU check exercises NCCL on the device too. The
// values are quarters below 1000: every sum is exact, so results are
// compared for equality.
TEST(GpuCollectivesTest, NcclBroadcastAllGatherAndReduceScatter) {
  NcclOnEveryRank setup = SetUpNccl();
  if (!setup.skip.empty()) GTEST_SKIP() << setup.skip;
  ASSERT_TRUE(setup.nccl.ok()) << setup.nccl.status();
  const std::unique_ptr<Kernels>& k = setup.kernels;
  absl::StatusOr<std::unique_ptr<Communicator>>& nccl = setup.nccl;
  Communicator& c = **nccl;
  const int n = c.Size(), r = c.Rank();
  const size_t count = 1001;
  std::vector<float> mine(count);
  for (size_t i = 0; i < count; ++i) mine[i] = static_cast<float>(Value(r, i));
  const std::unique_ptr<DeviceEvent> ready = k->CreateEvent();
  CollectiveOptions options;
  options.ready_event = ready->native_handle();

  // Broadcast from the last rank: every rank ends with its values.
  DeviceBuffer<float> dev(k.get(), count);
  k->CopyToDevice(dev.data(), mine.data(), count * sizeof(float));
  ready->Record();
  ASSERT_TRUE(c.Broadcast(CudaBuffer(dev.data(), count), n - 1, options)->Wait().ok());
  std::vector<float> host(count);
  k->CopyToHost(host.data(), dev.data(), count * sizeof(float));
  for (size_t i = 0; i < count; ++i) {
    ASSERT_EQ(host[i], static_cast<float>(Value(n - 1, i))) << "broadcast " << i;
  }

  // AllGather: block q of the output is rank q's input.
  k->CopyToDevice(dev.data(), mine.data(), count * sizeof(float));
  DeviceBuffer<float> all(k.get(), count * n);
  ready->Record();
  ASSERT_TRUE(c.AllGather(CudaBuffer(dev.data(), count), CudaBuffer(all.data(), count * n), options)
                  ->Wait()
                  .ok());
  std::vector<float> gathered(count * n);
  k->CopyToHost(gathered.data(), all.data(), gathered.size() * sizeof(float));
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < count; ++i) {
      ASSERT_EQ(gathered[q * count + i], static_cast<float>(Value(q, i))) << q << " " << i;
    }
  }

  // ReduceScatter (sum): rank r gets block r of the sum of every rank's input.
  std::vector<float> input(count * n);
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>(Value(r, i));
  k->CopyToDevice(all.data(), input.data(), input.size() * sizeof(float));
  ready->Record();
  ASSERT_TRUE(c.ReduceScatter(CudaBuffer(all.data(), count * n), CudaBuffer(dev.data(), count),
                              ReduceOp::kSum, options)
                  ->Wait()
                  .ok());
  k->CopyToHost(host.data(), dev.data(), count * sizeof(float));
  for (size_t i = 0; i < count; ++i) {
    double expected = 0;
    for (int q = 0; q < n; ++q) expected += Value(q, r * count + i);
    ASSERT_EQ(host[i], static_cast<float>(expected)) << "reduce-scatter " << i;
  }
}

TEST(GpuCollectivesTest, StuckNcclCollectiveAbortsNamingOperationSequenceAndRank) {
  if (World().Size() < 2) GTEST_SKIP() << "needs 2 or more ranks";
  NcclOnEveryRank setup = SetUpNccl();
  if (!setup.skip.empty()) GTEST_SKIP() << setup.skip;
  ASSERT_TRUE(setup.nccl.ok()) << setup.nccl.status();
  const std::unique_ptr<Kernels>& k = setup.kernels;
  absl::StatusOr<std::unique_ptr<Communicator>>& nccl = setup.nccl;
  DeviceBuffer<float> dev(k.get(), 1024);
  CollectiveOptions options;
  options.timeout = std::chrono::milliseconds(1500);
  // Rank 0 issues a collective nobody else joins; the others join only
  // after it has given up, so theirs cannot complete either.
  if (World().Rank() == 0) {
    absl::Status s =
        (*nccl)->AllReduce(CudaBuffer(dev.data(), 1024), ReduceOp::kSum, options)->Wait();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_NE(s.message().find("AllReduce #1"), std::string::npos) << s;
    EXPECT_NE(s.message().find("rank 0"), std::string::npos) << s;
    EXPECT_NE(s.message().find("ncclCommAbort"), std::string::npos) << s;
  }
  ASSERT_TRUE(World().Barrier()->Wait().ok());
  if (World().Rank() != 0) {
    absl::Status s =
        (*nccl)->AllReduce(CudaBuffer(dev.data(), 1024), ReduceOp::kSum, options)->Wait();
    EXPECT_FALSE(s.ok());
  }
  // Once aborted, a communicator fails at once instead of hanging.
  if (World().Rank() == 0) {
    absl::Status s = (*nccl)->Barrier(options)->Wait();
    EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  }
  ASSERT_TRUE(World().Barrier()->Wait().ok());
}

}  // namespace
}  // namespace dropk
