// dropk-train: parses the config, joins the job's communicator, trains,
// prints a sample. Launch with `mpirun -np N dropk-train ...` for N ranks.
// Exit codes: 0 done, 2 a bad config value or argument, 1 any other failure.
// When one rank of a multi-rank job fails, it ends the whole job (MPI_Abort)
// with a message naming the rank and the cause, instead of leaving the
// others waiting; when the cause is a peer's unreachable host, it leaves the
// ending to mpirun for a while (AbortJobAfterLauncherGrace), whose abort
// would otherwise wait on that host for good.
#include <chrono>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace {

// The rank the launcher assigned, before MPI is initialised (so that only
// rank 0 prints config errors, which every rank finds alike).
bool IsLauncherRankZero() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* v = std::getenv(var)) return std::string(v) == "0";
  }
  return true;
}

absl::StatusOr<std::unique_ptr<dropk::Communicator>> JoinJob(const dropk::TrainConfig& config) {
  const bool use_mpi = config.comm_backend() == dropk::TrainConfig::MPI ||
                       (config.comm_backend() == dropk::TrainConfig::AUTO && dropk::LaunchedByMpi());
  if (!use_mpi) return dropk::MakeSingleProcessCommunicator();
  return dropk::MakeMpiCommunicator();
}

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<dropk::TrainConfig> config = dropk::LoadTrainConfig(argc, argv);
  absl::Status invalid = config.ok() ? dropk::ValidateTrainConfig(*config) : config.status();
  if (!invalid.ok()) {
    if (dropk::IsHelpRequest(invalid)) {
      if (IsLauncherRankZero()) std::cout << invalid.message();
      return 0;
    }
    if (IsLauncherRankZero()) std::cerr << "dropk-train: " << invalid.message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<dropk::Communicator>> comm = JoinJob(*config);
  if (!comm.ok()) {
    std::cerr << "dropk-train: " << comm.status().message() << "\n";
    return 1;
  }
  const int rank = (*comm)->Rank(), world = (*comm)->Size();
  absl::StatusOr<dropk::TrainSummary> summary = dropk::RunTraining(*config, **comm, std::cerr);
  if (!summary.ok()) {
    const bool config_error = absl::IsInvalidArgument(summary.status()) ||
                              absl::IsNotFound(summary.status());
    const int code = config_error ? 2 : 1;
    if (world > 1 && absl::IsUnavailable(summary.status())) {
      dropk::AbortJobAfterLauncherGrace(
          absl::StrCat("dropk-train: rank ", rank, " of ", world, ": ",
                       summary.status().message(), " (ending the job)"),
          code, std::chrono::seconds(120));
    }
    if (world > 1) {
      dropk::AbortJob(absl::StrCat("dropk-train: rank ", rank, " of ", world, ": ",
                                   summary.status().message(), " (ending the job)"),
                      code);
    }
    std::cerr << "dropk-train: " << summary.status().message() << "\n";
    return code;
  }
  if (summary->stopped_by_signal) {
    if (rank == 0) {
      std::cerr << "dropk-train: stopped by signal after step " << summary->steps
                << ", checkpoint saved; resume with --resume=latest\n";
    }
    return 0;
  }
  if (rank == 0) {
    std::cerr << "dropk-train: done, " << summary->steps << " steps";
    if (summary->val_loss) std::cerr << ", val loss " << *summary->val_loss;
    std::cerr << ", " << summary->elapsed_s << " s\n";
    if (!summary->sample.empty()) std::cout << summary->sample << "\n";
  }
  return 0;
}
