// Which communicator a training run joins (TrainConfig.comm_backend), and
// joining it: the one place dropk-train chooses between single-process, MPI
// and NCCL.
#ifndef DROPK_TRAINER_COMM_BACKEND_H_
#define DROPK_TRAINER_COMM_BACKEND_H_

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "config.pb.h"

namespace dropk {

enum class CommBackendChoice { kSingleProcess, kMpi, kNccl };

// What the choice depends on besides the config, as one rank finds it.
struct CommFacts {
  bool launched_by_mpi = false;  // LaunchedByMpi()
  int local_ranks = 1;           // ranks of the job on this node (LocalWorldSize())
  int launcher_ranks = 1;        // ranks of the whole job (LauncherWorldSize())
  int cuda_devices = 0;          // GPUs this process can use (CudaDeviceCount())
  absl::Status nccl = absl::UnimplementedError("not looked for");  // NcclUsable()
  // Other ranks of the job whose GPU is this rank's (by UUID), as the ranks
  // found by exchanging them; -1 until then, when only local_ranks against
  // cuda_devices can tell (and cannot where each rank sees its own GPU
  // alone, as under srun --gpus-per-task).
  int ranks_sharing_my_gpu = -1;
};

// How many ranks other than `rank` have the GPU UUID `uuids[rank]`; 0 when
// that UUID is all zeros (unknown). Pure.
int RanksSharingGpu(const std::vector<std::array<uint8_t, 16>>& uuids, int rank);

// This rank's backend for a validated config, given its facts. Pure.
//   SINGLE_PROCESS, MPI: as named.
//   AUTO: single-process unless launched by MPI; then NCCL when the device
//     is CUDA, NCCL is usable and no other rank has this rank's GPU
//     (ranks_sharing_my_gpu; before the exchange, when the node shows a GPU
//     for each of its ranks); else MPI.
//   NCCL: NCCL, or FailedPrecondition in one line starting
//     "comm_backend=NCCL: " that says why it cannot be (device not CUDA,
//     NCCL not loadable, no GPU, a GPU shared with another rank).
absl::StatusOr<CommBackendChoice> ChooseCommBackend(const TrainConfig& config,
                                                    const CommFacts& facts);

// This process's facts. Opens libnccl (slow: the library is large) only
// when the config could choose NCCL: device CUDA and comm_backend NCCL, or
// AUTO under an MPI launcher.
CommFacts GatherCommFacts(const TrainConfig& config);

// Every rank's GPU UUID, in rank order, each rank giving its own as
// `mine` (all zeros: no GPU, or unknown). A collective over `comm`: every
// rank calls it; blocks until all have, or fails after options.timeout.
absl::StatusOr<std::vector<std::array<uint8_t, 16>>> ExchangeGpuUuids(
    Communicator& comm, const std::array<uint8_t, 16>& mine, const CollectiveOptions& options = {});

// The ranks of `bootstrap` (the job's host communicator) agree on NCCL for
// a validated config, given this rank's facts and its GPU's UUID
// (CudaDeviceUuid of the GPU it would use; zeros when it sees none). Where
// the config could choose NCCL (device CUDA, and comm_backend NCCL, or AUTO
// under an MPI launcher: the same on every rank) this is a collective that
// every rank enters, whatever GPUs it sees: the ranks exchange UUIDs (so
// ranks sharing a GPU are found even where each sees only its own), then
// the lowest rank that cannot use NCCL. Returns kNccl when every rank can;
// else under AUTO kMpi; under NCCL FailedPrecondition, this rank's own
// reason on the rank at fault and "comm_backend=NCCL: rank R cannot use
// NCCL" on the others. Elsewhere ChooseCommBackend's answer, with no
// collective. A failed collective's error is returned as it is.
absl::StatusOr<CommBackendChoice> AgreeOnCommBackend(const TrainConfig& config, CommFacts facts,
                                                     const std::array<uint8_t, 16>& my_gpu_uuid,
                                                     Communicator& bootstrap,
                                                     const CollectiveOptions& options = {});

// Joins the job as a validated config says, and returns its communicator:
// single-process; MPI; or for NCCL, NCCL for CUDA buffers beside MPI (or
// single-process outside mpirun) for host buffers
// (comm/routed_communicator.h), each rank on GPU local rank mod the node's
// GPU count, as the kernels choose. Under MPI the ranks first agree, so
// they never pick different backends: AUTO picks NCCL only when every rank
// can use it; NCCL fails on every rank when one cannot, with that rank's
// reason there and "comm_backend=NCCL: rank R cannot use NCCL" elsewhere.
// A collective: every rank of the job calls it, once (MPI is initialised
// here). When a rank of a job of several fails after MPI is up (agreeing on
// NCCL, or NCCL's init), its MPI communicator is left alive, not finalised,
// since a peer may be inside a collective this rank never finishes: the
// caller must end the job (AbortJob) rather than return.
absl::StatusOr<std::unique_ptr<Communicator>> JoinTrainingJob(const TrainConfig& config);

}  // namespace dropk

#endif  // DROPK_TRAINER_COMM_BACKEND_H_
