// The routed communicator sends CUDA buffers to the device backend and host
// buffers to the host backend, and refuses a collective that mixes them.
#include "comm/routed_communicator.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dropk {
namespace {

// Records which collectives reach it; every one succeeds at once.
class RecordingCommunicator final : public Communicator {
 public:
  RecordingCommunicator(std::string name, std::vector<std::string>* log)
      : name_(std::move(name)), log_(log) {}
  int Rank() const override { return 1; }
  int Size() const override { return 2; }
  std::string BackendName() const override { return name_; }
  std::unique_ptr<Work> AllReduce(Buffer, ReduceOp, const CollectiveOptions&) override {
    return Record("AllReduce");
  }
  std::unique_ptr<Work> Broadcast(Buffer, int, const CollectiveOptions&) override {
    return Record("Broadcast");
  }
  std::unique_ptr<Work> AllGather(Buffer, Buffer, const CollectiveOptions&) override {
    return Record("AllGather");
  }
  std::unique_ptr<Work> ReduceScatter(Buffer, Buffer, ReduceOp, const CollectiveOptions&) override {
    return Record("ReduceScatter");
  }
  std::unique_ptr<Work> Barrier(const CollectiveOptions&) override { return Record("Barrier"); }

 private:
  class Done final : public Work {
   public:
    absl::Status Wait() override { return absl::OkStatus(); }
    bool IsCompleted() override { return true; }
  };
  std::unique_ptr<Work> Record(const char* op) {
    log_->push_back(name_ + " " + op);
    return std::make_unique<Done>();
  }
  std::string name_;
  std::vector<std::string>* log_;
};

TEST(RoutedCommunicatorTest, BuffersGoToTheBackendOfTheirMemory) {
  std::vector<std::string> log;
  std::unique_ptr<Communicator> comm =
      MakeRoutedCommunicator(std::make_unique<RecordingCommunicator>("mpi", &log),
                             std::make_unique<RecordingCommunicator>("nccl", &log));
  EXPECT_EQ(comm->BackendName(), "nccl+mpi");
  EXPECT_EQ(comm->Rank(), 1);
  EXPECT_EQ(comm->Size(), 2);
  float x[4] = {};
  const Buffer host = HostBuffer(x, 4);
  const Buffer cuda{x, 4, DataType::kFloat32, MemoryKind::kCuda};  // never dereferenced here
  const Buffer cuda_pair{x, 2, DataType::kFloat32, MemoryKind::kCuda};
  EXPECT_TRUE(comm->AllReduce(cuda, ReduceOp::kAverage)->Wait().ok());
  EXPECT_TRUE(comm->AllReduce(host, ReduceOp::kMax)->Wait().ok());
  EXPECT_TRUE(comm->Broadcast(cuda, 0)->Wait().ok());
  EXPECT_TRUE(comm->AllGather(HostBuffer(x, 2), host)->Wait().ok());
  EXPECT_TRUE(comm->ReduceScatter(cuda, cuda_pair, ReduceOp::kSum)->Wait().ok());
  EXPECT_TRUE(comm->Barrier()->Wait().ok());
  EXPECT_EQ(log, (std::vector<std::string>{"nccl AllReduce", "mpi AllReduce", "nccl Broadcast",
                                           "mpi AllGather", "nccl ReduceScatter", "mpi Barrier"}));
}

TEST(RoutedCommunicatorTest, MixedMemoriesAreRefused) {
  std::vector<std::string> log;
  std::unique_ptr<Communicator> comm =
      MakeRoutedCommunicator(std::make_unique<RecordingCommunicator>("mpi", &log),
                             std::make_unique<RecordingCommunicator>("nccl", &log));
  float x[4] = {};
  const Buffer cuda{x, 4, DataType::kFloat32, MemoryKind::kCuda};
  const absl::Status s = comm->AllGather(HostBuffer(x, 2), cuda)->Wait();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("AllGather on rank 1"), std::string::npos) << s;
  EXPECT_TRUE(log.empty());
}

}  // namespace
}  // namespace dropk
