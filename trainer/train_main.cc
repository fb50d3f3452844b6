// dropk-train: parses the config, joins the job's communicator, trains,
// prints a sample. Launch with `mpirun -np N dropk-train ...` for N ranks.
// Exit codes (base/exit_codes.h): 0 done, --help or --version, 2 a bad
// config value or argument (or a named path missing), 1 any other failure.
// A GPU that fails mid-run (RunTraining returns "the GPU failed: ...") is
// such a failure too: one line, exit 1, no core dump, no checkpoint after it.
// When one rank of a multi-rank job fails, it ends the whole job (MPI_Abort)
// with a message naming the rank and the cause, instead of leaving the
// others waiting; when the cause is a peer's unreachable host, it leaves the
// ending to mpirun for a while (AbortJobAfterLauncherGrace), whose abort
// would otherwise wait on that host for good. Each failing rank also
// appends its line to OUT_DIR/failures/rank-NNNNN.log (failure_record.h);
// a single process started by hand and refused (exit 2) writes nothing there.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "base/cut_for_message.h"
#include "base/exit_codes.h"
#include "comm/communicator.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "comm/peer_lost.h"
#include "trainer/comm_backend.h"
#include "trainer/config.h"
#include "trainer/failure_record.h"
#include "trainer/run_directory_lock.h"
#include "trainer/trainer.h"
#include "trainer/training_checkpoints.h"

namespace {

// The token files are memory-mapped: one shortened or rewritten in place
// while training reads it (`truncate`, `cp` over it) makes the next read
// of a page past its new end a SIGBUS, which killed the run with "Bus
// error" and no word of why. One line instead, then exit 1 (a signal
// handler cannot save; the last checkpoint stands). Only async-signal-safe
// calls here.
extern "C" void OnBusError(int) {
  static const char kMessage[] =
      "dropk-train: bus error reading a memory-mapped file: most likely a token file in "
      "data_dir was shortened or rewritten in place during training (prepare new data into "
      "another directory, or with `dropk data prepare`, which replaces files whole), or "
      "/dev/shm is full (MPI's shared memory); checkpoints saved so far are intact, resume "
      "with --resume=latest\n";
  const ssize_t ignored = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  (void)ignored;
  ::_exit(dropk::kExitFailure);
}

// The rank the launcher assigned, read before MPI is initialised (or where
// joining it failed); 0 outside a launcher.
int LauncherRank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 0;
}

// How long a rank other than 0 waits before it reports a bad config. Rank
// 0 reports at once, and a launcher ends the job when it exits: a problem
// every rank finds alike is then printed once, by rank 0, while one of this
// rank's own (an MPMD launch, a host whose config file differs) is still
// printed, naming the rank. Before, such a rank exited 2 without a word and
// mpirun said only "exit code 2".
constexpr std::chrono::seconds kOtherRankReportDelay{2};

// How long rank 0 waits on OUT_DIR/failures (a shared filesystem that may
// hang) when it starts and when a stop signal ends the run: mpirun kills
// the ranks about a second after its SIGTERM.
constexpr std::chrono::milliseconds kFailureRecordWait{300};

// Prints the config problems `invalid` holds, one a line (rank 0 at once,
// another rank after kOtherRankReportDelay, naming itself on each line) and
// returns the usage exit code.
int ReportInvalidConfig(const absl::Status& invalid) {
  const int rank = LauncherRank();
  if (rank != 0) std::this_thread::sleep_for(kOtherRankReportDelay);
  const std::string prefix =
      rank == 0 ? "dropk-train: " : absl::StrCat("dropk-train: rank ", rank, ": ");
  std::string lines;
  for (absl::string_view line : absl::StrSplit(invalid.message(), '\n')) {
    absl::StrAppend(&lines, prefix, dropk::EscapeForMessage(std::string_view(line.data(), line.size())), "\n");
  }
  std::cerr << lines;
  return dropk::kExitUsage;
}

// Ends this rank's run on `status`, rank `rank` of `world`: prints its line,
// then keeps it in out_dir's failure record (unless the run directory is
// another job's, which refused this one, a single process started by
// hand was refused for the user to fix, `code` kExitUsage, or a signal
// stopped it, `code` kExitStopped), and in a job of
// several ranks ends the whole job (after the launcher's grace when
// `launcher_grace`: a peer's host is unreachable). Returns `code` for a single rank; otherwise
// does not return.
int FailRank(const absl::Status& status, int rank, int world, int code, bool launcher_grace,
             const std::string& out_dir) {
  // No character that would reach a terminal raw (a run's paths cannot
  // hold one, but a file's contents or a host's name may).
  const std::string message = dropk::ErrorTextForTerminal(status.message());
  const std::string failure = absl::StrCat("rank ", rank, " of ", world, ": ", message);
  // A single process started by hand and refused for the user to fix (a
  // bad value, a missing path, a resume that contradicts its checkpoint)
  // never began a run, and its line is on the user's terminal: out_dir,
  // often an earlier run's, is left as it was (its failure record gained
  // lines of starts that never ran). A rank of a job, or one `dropk launch`
  // started, still records it: its line may be lost with the launcher's
  // output, and the launcher names the cause from the record.
  // A stop signal (`code` kExitStopped: e.g. one while waiting for another
  // job's run directory) is no failure: recorded there, it would be named
  // as that job's.
  const bool by_hand = world == 1 && std::getenv(dropk::kLaunchAttemptEnv) == nullptr;
  const bool record = !(by_hand && code == dropk::kExitUsage) && code != dropk::kExitStopped &&
                      !dropk::IsRunDirectoryHeldElsewhere(status);
  const std::function<void()> keep = [&] {
    if (record) dropk::RecordFailure(out_dir, rank, failure);
  };
  if (world > 1 && launcher_grace) {
    dropk::AbortJobAfterLauncherGrace(absl::StrCat("dropk-train: ", failure, " (ending the job)"),
                                      code, std::chrono::seconds(120), keep);
  }
  if (world > 1) {
    dropk::AbortJob(absl::StrCat("dropk-train: ", failure, " (ending the job)"), code, keep);
  }
  std::cerr << "dropk-train: " << message << std::endl;
  keep();
  return code;
}

int Main(int argc, char** argv) {
  std::signal(SIGBUS, OnBusError);
  absl::StatusOr<dropk::TrainCommandLine> command_line = dropk::ParseTrainCommandLine(argc, argv);
  if (command_line.ok() && (command_line->help || command_line->version)) {
    // Once per job.
    if (LauncherRank() == 0) {
      std::cout << (command_line->help ? *command_line->help : *command_line->version);
    }
    return dropk::kExitOk;
  }
  const dropk::TrainConfig* config = command_line.ok() ? &command_line->config : nullptr;
  absl::Status invalid =
      config != nullptr ? dropk::ValidateTrainConfig(*config) : command_line.status();
  if (!invalid.ok()) return ReportInvalidConfig(invalid);
  // From here on a stop signal is noted, not fatal: one during setup (data,
  // allocation, joining the job) stops the run before its first step with a
  // line saying so, instead of exit 143 and no word.
  dropk::InstallStopSignalHandlers();
  // Before joining (MPI_Init waits on every rank): under `dropk launch`,
  // which names the hosts no rank started on after --startup-timeout-s.
  if (const char* attempt = std::getenv(dropk::kLaunchAttemptEnv)) {
    dropk::RecordRankStarted(config->out_dir(), attempt, LauncherRank());
  }
  absl::StatusOr<std::unique_ptr<dropk::Communicator>> comm = dropk::JoinTrainingJob(*config);
  if (!comm.ok()) {
    // The other ranks may have joined, or wait in a collective of joining
    // (agreeing on NCCL, NCCL's init) that this rank will never enter:
    // returning would leave them, and mpirun, waiting for good.
    return FailRank(comm.status(), LauncherRank(), dropk::LauncherWorldSize(), dropk::kExitFailure,
                    /*launcher_grace=*/false, config->out_dir());
  }
  const int rank = (*comm)->Rank(), world = (*comm)->Size();
  // What OUT_DIR/failures holds before this run: a stop report then names
  // a failure that another rank recorded during it.
  std::optional<dropk::FailureRecordMarks> failure_marks;
  if (rank == 0 && world > 1) {
    failure_marks = dropk::MarkFailureRecordsWithin(config->out_dir(), kFailureRecordWait);
  }
  absl::StatusOr<dropk::TrainSummary> summary;
  try {
    summary = dropk::RunTraining(*config, **comm, std::cerr);
  } catch (const std::bad_alloc&) {
    // Caught here, not only in main(), so a multi-rank job ends as a whole.
    summary = absl::ResourceExhaustedError(
        "out of memory (an allocation failed); free memory or lower batch_size, block_size, "
        "n_layer or n_embd");
  }
  if (!summary.ok()) {
    return FailRank(summary.status(), rank, world, dropk::ExitCodeFor(summary.status()),
                    dropk::IsPeerLost(summary.status()), config->out_dir());
  }
  // A stop after the last step cut only the closing sample: the run is
  // done (it said "stopped by signal after step N ... resume", and a resume
  // found nothing to train).
  const bool trained_every_step = summary->steps >= config->max_iters();
  if (summary->stopped_by_signal && !trained_every_step) {
    if (rank == 0) {
      // steps 0: stopped in the first evaluation of a fresh run, nothing to save.
      std::vector<std::string> failures;
      if (failure_marks.has_value() && dropk::StopSignal() == SIGTERM) {
        failures =
            dropk::FailureRecordsSinceWithin(config->out_dir(), *failure_marks, kFailureRecordWait)
                .value_or(std::vector<std::string>());
      }
      std::cerr << dropk::StoppedBySignalLine(dropk::StopSignal(), summary->steps, world,
                                              config->out_dir(), failures)
                << "\n";
    }
    // Not done: a scheduler must not take the run for finished (75, see
    // exit_codes.h). Every rank gets here after the save's
    // last collective (every rank learned that rank 0 committed), and
    // MPI_Finalize, when `comm` goes, waits for all of them: no rank exits
    // before the checkpoint is complete, whatever order mpirun sees the
    // exits in (it ends the other ranks when the first exits non-zero).
    return dropk::kExitStopped;
  }
  if (summary->nothing_to_train) {
    // No rate: nothing was timed.
    if (rank == 0) {
      std::cerr << "dropk-train: already at step " << summary->steps
                << " of max_iters=" << config->max_iters() << "; nothing to train\n";
    }
    return dropk::kExitOk;
  }
  if (rank == 0) {
    std::cerr << "dropk-train: done, " << summary->steps << " steps";
    if (summary->val_loss) std::cerr << ", val loss " << *summary->val_loss;
    std::cerr << ", " << summary->elapsed_s << " s";
    if (summary->stopped_by_signal) {
      const char* name = sigabbrev_np(dropk::StopSignal());
      std::cerr << "; the closing sample was stopped by SIG" << (name != nullptr ? name : "?");
    }
    std::cerr << "\n";
    if (!summary->sample.empty() && !summary->stopped_by_signal) {
      std::cout << summary->sample << "\n";
    }
  }
  return dropk::kExitOk;
}

}  // namespace

// Sizes that can be checked are checked before allocating (a run that cannot
// fit is refused with exit 2); this is the last resort for an allocation
// that fails anyway: one clear line and exit 1, never an abort.
int main(int argc, char** argv) {
  // Before MPI or anything else starts a thread (setenv is not thread-safe).
  dropk::SetNcclEnvironmentDefaults();
  return dropk::RunMainGuardingAllocation(
      "dropk-train", "free memory or lower the sizes in the configuration", Main, argc, argv);
}
