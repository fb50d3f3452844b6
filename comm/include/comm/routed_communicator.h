// A Communicator that sends each collective to one of two backends by the
// memory of its buffers: CUDA buffers to `device` (NCCL), host buffers to
// `host` (MPI). The trainer reduces gradients on the GPU over NCCL, which
// takes CUDA buffers only, and still needs host collectives (loss averages,
// parameter digests, the checkpoint directory probe) over MPI, as c10d
// pairs an NCCL process group with a Gloo one.
//
// Both backends span the same ranks in the same order. Collectives are
// matched in issue order within each backend; every rank issues the same
// sequence, so each backend sees the same subsequence on every rank.
// Barrier goes to `host`. A collective whose input and output live in
// different memories fails with InvalidArgument.
#ifndef DROPK_COMM_ROUTED_COMMUNICATOR_H_
#define DROPK_COMM_ROUTED_COMMUNICATOR_H_

#include <memory>

#include "comm/communicator.h"

namespace dropk {

// Takes ownership of both; `device` is destroyed first (NCCL before the MPI
// that bootstrapped it). Rank() and Size() are host's, which must equal
// device's (checked: a mismatch is a broken invariant and aborts).
// BackendName() is "<device>+<host>", e.g. "nccl+mpi".
std::unique_ptr<Communicator> MakeRoutedCommunicator(std::unique_ptr<Communicator> host,
                                                     std::unique_ptr<Communicator> device);

}  // namespace dropk

#endif  // DROPK_COMM_ROUTED_COMMUNICATOR_H_
