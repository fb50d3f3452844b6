// AllReduce of a host buffer as a ring reduce-scatter followed by a ring
// all-gather, on MPI point-to-point messages and scratch memory kept from
// call to call. Private to comm/ (the MPI backend's AllReduce).
//
// Every element is reduced once, on the rank that owns its block, in ring
// order, and then copied to the others, so every rank receives bitwise the
// same result. This is what the MPI backend did before with
// MPI_Reduce_scatter + MPI_Allgatherv; doing it by hand is faster because
// Open MPI 4.1's collectives allocate temporary buffers on every call and
// fresh pages cost a page fault each (about 11 us per 4 KiB page on the
// 2-core VM this was measured on). Counted with getrusage, 2 ranks:
// MPI_Reduce_scatter faults on 20% of the buffer's pages per call from
// 1 MiB (150% at 64 MiB), MPI_Allreduce on 50% at 64 MiB (none below).
// There the old pair ran at 0.4-0.7x of MPI_Allreduce's speed from 4 MiB
// up, and this ring at 1.7-1.9x of it from 64 MiB up
// (bench/allreduce_bench). The scratch here is touched once and reused.
//
// Made of nonblocking messages and polled, so that whoever runs it can stop
// at a deadline and go on later: the MPI backend's communication thread, or
// a caller that waits on an AllReduce no one has started yet (see
// mpi_communicator.cc). Not thread-safe: one thread at a time, with MPI
// calls serialised (MPI_THREAD_SERIALIZED).
#ifndef DROPK_COMM_RING_ALLREDUCE_H_
#define DROPK_COMM_RING_ALLREDUCE_H_

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace dropk {

// The MPI datatype of `type`.
MPI_Datatype MpiType(DataType type);

// Divides elements [begin, begin + count) of b by divisor in place (integer
// types: truncating division), the last step of ReduceOp::kAverage.
void DivideInPlace(const Buffer& b, size_t begin, size_t count, int divisor);

class RingAllReducer {
 public:
  // Bytes per point-to-point message. Each costs a rendezvous round trip in
  // Open MPI's shared-memory transport, so they are not small; cutting a
  // step in several lets the reduction of one overlap the next one's
  // transfer. (256 KiB to 4 MiB measured alike on the 2-core VM, smaller
  // lost at 1 MiB buffers.)
  static constexpr size_t kSegmentBytes = size_t{1} << 20;

  // comm: a communicator that only this object sends point-to-point messages
  // on (a dup of MPI_COMM_WORLD), kept alive by the caller.
  RingAllReducer(MPI_Comm comm, int rank, int size);
  RingAllReducer(const RingAllReducer&) = delete;
  RingAllReducer& operator=(const RingAllReducer&) = delete;

  // Begins an allreduce, in place: b (host memory, same count and type on
  // every rank) is to become the reduction over ranks (kAverage: sum /
  // size). Every rank must call it, in the same order. b must stay valid
  // until Poll() returns true. Only one allreduce at a time.
  // Returns the allreduce's id (never 0), for Stall().
  uint64_t Start(const Buffer& b, ReduceOp op);

  // Where allreduce `id` stands while it is not done: the step it is in and
  // the peer it waits on there (receiving: for that peer's data; else for
  // that peer to take this rank's). nullopt when `id` is not the allreduce
  // in progress or it has completed. Safe to call from any thread while
  // another runs Poll() (a snapshot; its fields may be one poll apart).
  struct Stall {
    int step;   // 1-based
    int steps;  // 2 (size - 1)
    int peer;
    bool receiving;
  };
  std::optional<Stall> StallOf(uint64_t id) const;

  // Goes on with the started allreduce until it completes (true) or
  // `deadline` passes (false: call again to go on). Busy-polls, as MPI_Wait
  // does. Returns an error naming the MPI call if one fails; the allreduce
  // is then abandoned with messages pending, and the job must end.
  absl::StatusOr<bool> Poll(std::chrono::steady_clock::time_point deadline);

 private:
  // Elements [BlockBegin, BlockBegin + BlockCount) of the buffer belong to
  // rank `block`, which reduces them.
  size_t BlockBegin(int block) const;
  size_t BlockCount(int block) const;
  // Step s < size - 1 of the reduce-scatter, or of the all-gather after it:
  // which block goes to the next rank, which one comes from the previous.
  bool Reducing() const { return step_ < size_ - 1; }
  int SendBlock() const;
  int ReceiveBlock() const;
  // Posts every segment of the current step: receives (into scratch_ when
  // reducing, else straight into the buffer), then sends.
  absl::Status PostStep();

  MPI_Comm comm_;
  int rank_, size_;
  // The allreduce in progress.
  Buffer buffer_;
  ReduceOp op_ = ReduceOp::kSum;
  int step_ = 0;                               // 0 .. 2 (size - 1); done at 2 (size - 1)
  bool posted_ = false;                        // the current step's messages are posted
  size_t next_receive_ = 0;                    // segments of the current step received so far
  std::vector<char> scratch_;                  // grows to the largest block, then stays
  std::vector<MPI_Request> sends_, receives_;  // of the current step
  // For StallOf, read by other threads: the id of the allreduce in progress
  // (0: none), its step, and the peer it last waited on (-1 - peer when
  // waiting on a send).
  std::atomic<uint64_t> id_{0};
  std::atomic<int> stall_step_{0};
  std::atomic<int> stall_peer_{0};
  uint64_t last_id_ = 0;
};

}  // namespace dropk

#endif  // DROPK_COMM_RING_ALLREDUCE_H_
