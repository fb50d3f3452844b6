// The MPI backend of Communicator: one process per rank, launched by mpirun,
// host buffers. Collectives run on a dedicated communication thread in issue
// order, so they proceed while the caller computes (gradient buckets overlap
// backward); Work::Wait() gives up after the options' timeout and names the
// operation and rank that waited.
//
// AllReduce is a ring reduce-scatter followed by a ring all-gather, on
// point-to-point messages and scratch memory reused from call to call: every
// element is reduced once, on one rank, and then copied, so every rank
// receives bitwise the same result (MPI_Allreduce's algorithms do not promise
// that for floating point, and identical parameters on every rank depend on
// it). It runs at least as fast as MPI_Allreduce on the same buffers
// (bench/allreduce_bench).
#ifndef DROPK_COMM_MPI_COMMUNICATOR_H_
#define DROPK_COMM_MPI_COMMUNICATOR_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace dropk {

// Initialises MPI (MPI_THREAD_SERIALIZED: all MPI calls are made by the
// communication thread, one at a time; fails if the library offers less)
// and returns the MPI_COMM_WORLD communicator. At most one per process;
// destroying it finalises MPI.
absl::StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator();

// Ends every rank of the job now (MPI_Abort with exit_code) after printing
// `reason` to stderr and then running `after_report` (when given; the
// caller keeps it short and bounded, e.g. a copy of the reason kept on
// disk). For unrecoverable errors on one rank (a timeout, a failed step):
// the others would otherwise wait forever. Does not return.
[[noreturn]] void AbortJob(const std::string& reason, int exit_code,
                           const std::function<void()>& after_report = nullptr);

// For a rank that found a peer's host unreachable (a collective's status
// that IsPeerLost, comm/peer_lost.h): prints `reason`, runs `after_report` (as AbortJob
// does, with SIGTERM and SIGINT already fatal), then leaves ending the job to the
// launcher for up to `grace` and only then calls AbortJob. MPI_Abort at once
// would make mpirun order the lost host's daemon to kill its ranks and wait
// for an answer that never comes (Open MPI 4 then hangs until TCP gives up,
// about 15 minutes); left alone, mpirun notices the lost daemon itself
// (mpirun --mca oob_tcp_keepalive_time ...) and ends every rank. SIGTERM
// and SIGINT end the process at once meanwhile. Does not return.
[[noreturn]] void AbortJobAfterLauncherGrace(const std::string& reason, int exit_code,
                                             std::chrono::seconds grace,
                                             const std::function<void()>& after_report = nullptr);

// True when this process was started by an MPI launcher (Open MPI, PMIx or
// Slurm's PMI set their rank variables).
bool LaunchedByMpi();

// Ranks on this node and this rank's index among them, from the launcher's
// environment (OMPI_COMM_WORLD_LOCAL_SIZE / _LOCAL_RANK, or Slurm's);
// 1 and 0 when not launched by MPI.
int LocalWorldSize();
int LocalRank();

// Ranks of the whole job from the launcher's environment
// (OMPI_COMM_WORLD_SIZE, or PMI_SIZE); 1 when not launched by MPI or not
// told.
int LauncherWorldSize();

}  // namespace dropk

#endif  // DROPK_COMM_MPI_COMMUNICATOR_H_
