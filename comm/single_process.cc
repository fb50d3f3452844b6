// The size-1 communicator: the identity for every collective.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "comm/communicator.h"
#include "done_work.h"

namespace dropk {

size_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kFloat32: return 4;
    case DataType::kFloat64: return 8;
    case DataType::kInt32: return 4;
    case DataType::kInt64: return 8;
    case DataType::kUint8: return 1;
  }
  return 0;
}

namespace {

absl::Status CheckHost(const Buffer& b, const char* op) {
  if (b.memory != MemoryKind::kHost) {
    return absl::UnimplementedError(
        absl::StrCat(op, " on rank 0: the single-process backend takes host buffers only"));
  }
  return absl::OkStatus();
}

class SingleProcessCommunicator final : public Communicator {
 public:
  int Rank() const override { return 0; }
  int Size() const override { return 1; }
  std::string BackendName() const override { return "single-process"; }

  // With one rank, AllReduce and Broadcast leave the buffer as it is, so
  // they accept any memory (a GPU run's gradients and parameters too).
  std::unique_ptr<Work> AllReduce(Buffer, ReduceOp, const CollectiveOptions&) override {
    return std::make_unique<DoneWork>(absl::OkStatus());
  }
  std::unique_ptr<Work> Broadcast(Buffer, int root, const CollectiveOptions&) override {
    if (root != 0) {
      return std::make_unique<DoneWork>(
          absl::InvalidArgumentError(absl::StrCat("Broadcast: root ", root, " of size 1")));
    }
    return std::make_unique<DoneWork>(absl::OkStatus());
  }
  std::unique_ptr<Work> AllGather(Buffer input, Buffer output, const CollectiveOptions&) override {
    return Copy(input, output, "AllGather");
  }
  std::unique_ptr<Work> ReduceScatter(Buffer input, Buffer output, ReduceOp,
                                      const CollectiveOptions&) override {
    return Copy(input, output, "ReduceScatter");
  }
  std::unique_ptr<Work> Barrier(const CollectiveOptions&) override {
    return std::make_unique<DoneWork>(absl::OkStatus());
  }

 private:
  static std::unique_ptr<Work> Copy(const Buffer& in, const Buffer& out, const char* op) {
    absl::Status s;
    if (in.data != out.data) {  // in place needs no copy, whatever the memory
      s = CheckHost(in, op);
      if (s.ok()) s = CheckHost(out, op);
    }
    if (s.ok() && (in.count != out.count || in.type != out.type)) {
      s = absl::InvalidArgumentError(
          absl::StrCat(op, ": input has ", in.count, " elements, output ", out.count));
    }
    if (s.ok() && in.data != out.data && in.count > 0) std::memmove(out.data, in.data, in.bytes());
    return std::make_unique<DoneWork>(s);
  }
};

}  // namespace

std::unique_ptr<Communicator> MakeSingleProcessCommunicator() {
  return std::make_unique<SingleProcessCommunicator>();
}

}  // namespace dropk
