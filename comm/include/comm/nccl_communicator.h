// The NCCL backend of Communicator: CUDA buffers, one GPU per rank, its own
// CUDA stream. Built when dropk is built with NCCL (the CUDA Toolkit's, or a
// system one); elsewhere MakeNcclCommunicator fails with a clear error.
//
// Ordering: each collective first makes the communicator's stream wait on
// options.ready_event (the compute stream's readiness event for the buffer),
// so gradient buckets start as soon as backward has produced them on the
// device, without blocking the host. Work::Wait() blocks the host until the
// collective has completed on the device.
//
// Results are bitwise equal on every rank: AllReduce is a reduce-scatter and
// an all-gather (the remainder of the count not divisible by the size is
// reduced to rank 0 and broadcast), so each element is reduced once, on one
// rank, and copied.
//
// Failure: Work::Wait() polls the collective and ncclCommGetAsyncError. A
// collective that has not completed within options.timeout, or an
// asynchronous NCCL error, aborts the communicator (ncclCommAbort: the
// kernels stop, every later call fails at once) and returns an error naming
// the operation, its sequence number and the rank.
//
// NCCL refuses two ranks on one GPU; use the MPI backend (which stages CUDA
// buffers through pinned host memory) there.
#ifndef DROPK_COMM_NCCL_COMMUNICATOR_H_
#define DROPK_COMM_NCCL_COMMUNICATOR_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace dropk {

// Sets the environment NCCL reads that dropk's backend relies on, where the
// user has not set it: NCCL_RUNTIME_CONNECT=0 (every peer connection at init,
// under the join deadline, instead of lazily inside a first collective that
// no deadline bounds). Call it first thing in main, before any thread exists:
// setenv is not safe while another thread reads the environment (MPI's
// threads do). MakeNcclCommunicator calls it too, for programs that did not;
// there it only reads, once main has.
void SetNcclEnvironmentDefaults();

// True when this build has the NCCL backend.
bool NcclAvailable();

// OK when this build has the NCCL backend and libnccl can be opened (the
// first call tries to, which takes a while: the library is large);
// otherwise Unimplemented or FailedPrecondition saying why, in one line.
// Does not look for GPUs.
absl::Status NcclUsable();

// Creates the NCCL communicator of bootstrap's ranks on CUDA device
// `cuda_device` (a rank passes its local rank, modulo the device count).
// Rank 0 creates the unique id; bootstrap (MPI) broadcasts it; every rank of
// bootstrap must call this. bootstrap must outlive nothing: it is used only
// here. Blocks until every rank has joined (or bootstrap's broadcast times
// out).
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(Communicator* bootstrap,
                                                                   int cuda_device);

}  // namespace dropk

#endif  // DROPK_COMM_NCCL_COMMUNICATOR_H_
