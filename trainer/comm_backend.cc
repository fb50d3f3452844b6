#include "trainer/comm_backend.h"

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "comm/routed_communicator.h"
#include "model/kernels.h"

namespace dropk {
namespace {

absl::Status NcclProblem(const std::string& why) {
  return absl::FailedPreconditionError(absl::StrCat("comm_backend=NCCL: ", why));
}

// Why NCCL cannot serve this rank, or OK.
absl::Status NcclFits(const TrainConfig& config, const CommFacts& facts) {
  if (config.device() != TrainConfig::CUDA) {
    return NcclProblem("needs device: CUDA (NCCL reduces GPU buffers); use MPI or AUTO on the CPU");
  }
  if (!facts.nccl.ok()) return NcclProblem(std::string(facts.nccl.message()));
  if (facts.cuda_devices < 1) return NcclProblem("no CUDA device is visible to this rank");
  if (facts.ranks_sharing_my_gpu > 0) {
    return NcclProblem(absl::StrCat(
        "this rank's GPU is also the GPU of ", facts.ranks_sharing_my_gpu,
        " other rank(s), and NCCL needs a GPU of its own for each rank; use MPI or AUTO"));
  }
  if (facts.ranks_sharing_my_gpu < 0 && facts.local_ranks > facts.cuda_devices) {
    return NcclProblem(
        absl::StrCat(facts.local_ranks, " ranks on this node share ", facts.cuda_devices,
                     " GPU(s), and NCCL needs a GPU of its own for each rank; use MPI or AUTO"));
  }
  return absl::OkStatus();
}

// Whether config can lead to NCCL at all: the same answer on every rank.
bool MayUseNccl(const TrainConfig& config, bool launched_by_mpi) {
  return config.device() == TrainConfig::CUDA &&
         (config.comm_backend() == TrainConfig::NCCL ||
          (config.comm_backend() == TrainConfig::AUTO && launched_by_mpi));
}

// `failure`, for a rank that cannot join. In a job of several ranks the
// host communicator is left alive (released, not destroyed): a collective
// of it may still be pending on its thread, one a peer never entered or
// still runs, and destroying it would wait for that collective for good
// (MpiCommunicator joins its thread) instead of returning; the caller ends
// the job (dropk-train: AbortJob), which needs MPI still initialised.
absl::Status LeavingTheJobToItsEnd(std::unique_ptr<Communicator> host, absl::Status failure) {
  if (host->Size() > 1) static_cast<void>(host.release());
  return failure;
}

}  // namespace

int RanksSharingGpu(const std::vector<std::array<uint8_t, 16>>& uuids, int rank) {
  const std::array<uint8_t, 16>& mine = uuids[rank];
  if (mine == std::array<uint8_t, 16>{}) return 0;
  int others = 0;
  for (int r = 0; r < static_cast<int>(uuids.size()); ++r) {
    if (r != rank && uuids[r] == mine) ++others;
  }
  return others;
}

absl::StatusOr<CommBackendChoice> ChooseCommBackend(const TrainConfig& config,
                                                    const CommFacts& facts) {
  switch (config.comm_backend()) {
    case TrainConfig::SINGLE_PROCESS:
      // Each of the launcher's ranks would train alone, all writing the same
      // out_dir and checkpoints, and all report success.
      if (facts.launcher_ranks > 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "comm_backend=SINGLE_PROCESS, but the launcher started ", facts.launcher_ranks,
            " ranks: each would train alone on the same out_dir; use MPI or AUTO, or start one "
            "process"));
      }
      return CommBackendChoice::kSingleProcess;
    case TrainConfig::MPI: return CommBackendChoice::kMpi;
    case TrainConfig::NCCL:
      if (absl::Status s = NcclFits(config, facts); !s.ok()) return s;
      return CommBackendChoice::kNccl;
    default:  // AUTO (validation refuses the unspecified value)
      if (!facts.launched_by_mpi) return CommBackendChoice::kSingleProcess;
      return NcclFits(config, facts).ok() ? CommBackendChoice::kNccl : CommBackendChoice::kMpi;
  }
}

CommFacts GatherCommFacts(const TrainConfig& config) {
  CommFacts facts;
  facts.launched_by_mpi = LaunchedByMpi();
  facts.local_ranks = LocalWorldSize();
  facts.launcher_ranks = LauncherWorldSize();
  if (MayUseNccl(config, facts.launched_by_mpi)) {
    facts.cuda_devices = CudaDeviceCount();
    facts.nccl = NcclUsable();
  }
  return facts;
}

absl::StatusOr<std::vector<std::array<uint8_t, 16>>> ExchangeGpuUuids(
    Communicator& comm, const std::array<uint8_t, 16>& mine, const CollectiveOptions& options) {
  std::vector<std::array<uint8_t, 16>> uuids(comm.Size());
  std::array<uint8_t, 16> sent = mine;
  if (absl::Status s =
          comm.AllGather(Buffer{sent.data(), sent.size(), DataType::kUint8, MemoryKind::kHost},
                         Buffer{uuids.data(), sent.size() * uuids.size(), DataType::kUint8,
                                MemoryKind::kHost},
                         options)
              ->Wait();
      !s.ok()) {
    return s;
  }
  return uuids;
}

absl::StatusOr<CommBackendChoice> AgreeOnCommBackend(const TrainConfig& config, CommFacts facts,
                                                     const std::array<uint8_t, 16>& my_gpu_uuid,
                                                     Communicator& bootstrap,
                                                     const CollectiveOptions& options) {
  if (!MayUseNccl(config, facts.launched_by_mpi)) return ChooseCommBackend(config, facts);
  // Which ranks share a GPU: by UUID, since ranks that each see only their
  // own GPU (srun --gpus-per-task) all number it 0. Every rank takes part,
  // one that sees no GPU with a zero UUID: were it to skip this, its next
  // collective (the AllReduce below) would meet the others' AllGather, and
  // the job would hang instead of saying which rank cannot use NCCL.
  const std::array<uint8_t, 16> mine =
      facts.cuda_devices > 0 ? my_gpu_uuid : std::array<uint8_t, 16>{};
  absl::StatusOr<std::vector<std::array<uint8_t, 16>>> uuids =
      ExchangeGpuUuids(bootstrap, mine, options);
  if (!uuids.ok()) return uuids.status();
  // An unknown UUID of this rank's GPU leaves the node's counts to judge.
  if (mine != std::array<uint8_t, 16>{}) {
    facts.ranks_sharing_my_gpu = RanksSharingGpu(*uuids, bootstrap.Rank());
  }
  absl::StatusOr<CommBackendChoice> choice = ChooseCommBackend(config, facts);
  // Agree on NCCL, so that no two ranks pick different backends: find the
  // lowest rank that cannot use it (ReduceOp has no minimum: the maximum of
  // Size() - rank does).
  const bool fits = choice.ok() && *choice == CommBackendChoice::kNccl;
  int64_t unfit = fits ? 0 : bootstrap.Size() - bootstrap.Rank();
  if (absl::Status s = bootstrap.AllReduce(HostBuffer(&unfit, 1), ReduceOp::kMax, options)->Wait();
      !s.ok()) {
    return s;
  }
  if (unfit == 0) return CommBackendChoice::kNccl;
  if (config.comm_backend() == TrainConfig::AUTO) return CommBackendChoice::kMpi;
  if (!choice.ok()) return choice.status();
  return NcclProblem(
      absl::StrCat("rank ", bootstrap.Size() - unfit, " cannot use NCCL (its own line says why)"));
}

absl::StatusOr<std::unique_ptr<Communicator>> JoinTrainingJob(const TrainConfig& config) {
  const CommFacts facts = GatherCommFacts(config);
  absl::StatusOr<CommBackendChoice> mine = ChooseCommBackend(config, facts);
  if (mine.ok() && *mine == CommBackendChoice::kSingleProcess) {
    return MakeSingleProcessCommunicator();
  }
  if (!mine.ok() && config.comm_backend() == TrainConfig::SINGLE_PROCESS) return mine.status();
  // MPI carries the host collectives, and bootstraps NCCL. Outside mpirun
  // (NCCL asked for by name) a single process does.
  absl::StatusOr<std::unique_ptr<Communicator>> host =
      facts.launched_by_mpi || config.comm_backend() == TrainConfig::MPI
          ? MakeMpiCommunicator()
          : absl::StatusOr<std::unique_ptr<Communicator>>(MakeSingleProcessCommunicator());
  // NCCL on the CPU never gets here (validation refuses it), so every rank
  // whose config may lead to NCCL takes part in agreeing on it.
  if (!host.ok() || !MayUseNccl(config, facts.launched_by_mpi)) return host;
  const int cuda_device = facts.cuda_devices > 0 ? LocalRank() % facts.cuda_devices : -1;
  absl::StatusOr<CommBackendChoice> agreed = AgreeOnCommBackend(
      config, facts, cuda_device >= 0 ? CudaDeviceUuid(cuda_device) : std::array<uint8_t, 16>{},
      **host);
  if (!agreed.ok()) return LeavingTheJobToItsEnd(*std::move(host), agreed.status());
  if (*agreed != CommBackendChoice::kNccl) return host;  // MPI (AUTO)
  absl::StatusOr<std::unique_ptr<Communicator>> nccl =
      MakeNcclCommunicator(host->get(), cuda_device);
  if (!nccl.ok()) return LeavingTheJobToItsEnd(*std::move(host), nccl.status());
  return MakeRoutedCommunicator(*std::move(host), *std::move(nccl));
}

}  // namespace dropk
