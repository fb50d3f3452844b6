// Collective communication between the ranks of a data-parallel job, in the
// shape of PyTorch c10d's Backend: Rank(), Size(), and collectives that take
// an options struct (with a timeout) and return a Work handle to wait on.
//
// Backends: MPI (host buffers, and CUDA buffers staged through pinned host
// memory; one process per rank, launched by mpirun), single-process (size 1,
// no MPI), in-process threads (tests), and NCCL (CUDA buffers, a stream per
// communicator, unique id bootstrapped over another communicator;
// comm/nccl_communicator.h).
// A buffer says which memory it lives in, so the interface does not change
// when device buffers arrive. Unsupported combinations fail with a clear
// error, never silently.
//
// Thread safety: a Communicator is used from one thread at a time; its Work
// handles may complete on a backend thread. Collectives are matched across
// ranks in the order they are issued, as in MPI and NCCL.
#ifndef DROPK_COMM_COMMUNICATOR_H_
#define DROPK_COMM_COMMUNICATOR_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dropk {

enum class DataType { kFloat32, kFloat64, kInt32, kInt64, kUint8 };
enum class MemoryKind { kHost, kCuda };
enum class ReduceOp { kSum, kAverage, kMax };

size_t DataTypeSize(DataType type);

// A view of count elements of `type` at data, in memory of `memory` kind.
// The caller keeps the memory alive until the collective's Work completes.
struct Buffer {
  void* data = nullptr;
  size_t count = 0;
  DataType type = DataType::kFloat32;
  MemoryKind memory = MemoryKind::kHost;

  size_t bytes() const { return count * DataTypeSize(type); }
};

inline Buffer HostBuffer(float* data, size_t count) {
  return {data, count, DataType::kFloat32, MemoryKind::kHost};
}
inline Buffer HostBuffer(double* data, size_t count) {
  return {data, count, DataType::kFloat64, MemoryKind::kHost};
}
inline Buffer HostBuffer(int64_t* data, size_t count) {
  return {data, count, DataType::kInt64, MemoryKind::kHost};
}
inline Buffer HostBuffer(uint8_t* data, size_t count) {
  return {data, count, DataType::kUint8, MemoryKind::kHost};
}

// Options every collective takes. A collective that has not completed within
// `timeout` fails with DeadlineExceeded naming the operation and the rank.
struct CollectiveOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // For CUDA buffers: a cudaEvent_t (DeviceEvent::native_handle()) recorded
  // on the compute stream after the buffer's data was written. The backend
  // orders its reads and writes of the buffers after it on the device (NCCL:
  // its stream waits on the event; MPI: the staging stream does), so the
  // caller need not synchronise.
  // nullptr: the data is already complete on the device.
  void* ready_event = nullptr;
};

// A handle on one issued collective.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective completes or its timeout passes. Returns OK,
  // or an error naming the operation, the rank and the cause. Idempotent.
  virtual absl::Status Wait() = 0;
  // True once Wait() would return without blocking.
  virtual bool IsCompleted() = 0;
  // Seconds the collective itself ran once the backend started it (not the
  // time it queued); 0 for backends that complete at once. Valid after Wait().
  virtual double RunSeconds() const { return 0.0; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int Rank() const = 0;
  virtual int Size() const = 0;
  virtual std::string BackendName() const = 0;

  // In place: every rank's buffer becomes the element-wise reduction over
  // ranks (kAverage: sum / Size()). Same count and type on every rank.
  virtual std::unique_ptr<Work> AllReduce(Buffer buffer, ReduceOp op,
                                          const CollectiveOptions& options = {}) = 0;
  // In place: every rank's buffer becomes root's.
  virtual std::unique_ptr<Work> Broadcast(Buffer buffer, int root,
                                          const CollectiveOptions& options = {}) = 0;
  // output (Size() * input.count) receives every rank's input, in rank order.
  virtual std::unique_ptr<Work> AllGather(Buffer input, Buffer output,
                                          const CollectiveOptions& options = {}) = 0;
  // input (Size() * output.count) is reduced over ranks; rank r receives
  // block r of the result in output.
  virtual std::unique_ptr<Work> ReduceScatter(Buffer input, Buffer output, ReduceOp op,
                                              const CollectiveOptions& options = {}) = 0;
  // Completes once every rank has entered it.
  virtual std::unique_ptr<Work> Barrier(const CollectiveOptions& options = {}) = 0;
};

// Size 1, rank 0: every collective is a local copy or no-op. Needs no MPI.
std::unique_ptr<Communicator> MakeSingleProcessCommunicator();

}  // namespace dropk

#endif  // DROPK_COMM_COMMUNICATOR_H_
