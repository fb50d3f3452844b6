// The exit codes of every dropk binary (dropk-train, dropk-serve, dropk):
//   0  success, and --help
//   1  a runtime failure: corrupt data, a failed collective, I/O, ...
//   2  usage: a bad flag or config value, or a path the user named that does
//      not exist
//  75  stopped by a signal (SIGTERM, SIGINT, SIGUSR1, SIGHUP: a preemption,
//      a scheduler's time limit, Ctrl-C) after saving a checkpoint, or
//      before the first step with nothing to save: not finished; resume
//      with --resume=latest. sysexits.h's EX_TEMPFAIL, so that schedulers
//      (a Kubernetes Job's backoffLimit, Slurm, a retry loop) see a run
//      that is not done, where 0 ("done", "nothing to train") is.
// The reason is one line on stderr, starting with the binary's name.
#ifndef DROPK_BASE_EXIT_CODES_H_
#define DROPK_BASE_EXIT_CODES_H_

#include <cstdio>
#include <new>

#include "absl/status/status.h"
#include "base/device_error.h"

namespace dropk {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitStopped = 75;

// The exit code for the outcome of a command: usage for InvalidArgument
// (a bad value) and NotFound (a named path missing), stopped for Cancelled
// (a stop signal ended it, resumable), failure otherwise.
inline int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (absl::IsInvalidArgument(status) || absl::IsNotFound(status)) return kExitUsage;
  if (absl::IsCancelled(status)) return kExitStopped;
  return kExitFailure;
}

// Runs a binary's main body; an allocation failure that escapes it (sizes
// that can be checked are checked before allocating) becomes one line,
// "PROGRAM: out of memory (an allocation failed)[; HINT]", and kExitFailure,
// never an abort. `hint` may be empty. Likewise a failed GPU (DeviceError)
// that a binary does not handle itself (dropk-train and dropk-serve do):
// "PROGRAM: the GPU failed: <op>: <error>", kExitFailure, no core dump.
inline int RunMainGuardingAllocation(const char* program, const char* hint,
                                     int (*main_body)(int, char**), int argc, char** argv) {
  try {
    return main_body(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of memory (an allocation failed)%s%s\n", program,
                 hint[0] != '\0' ? "; " : "", hint);
    return kExitFailure;
  } catch (const DeviceError& e) {
    std::fprintf(stderr, "%s: the GPU failed: %s\n", program, e.what());
    return kExitFailure;
  }
}

}  // namespace dropk

#endif  // DROPK_BASE_EXIT_CODES_H_
