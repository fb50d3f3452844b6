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

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <new>
#include <string>

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

// Flushes stdout and says whether everything written to it arrived: ""
// when it did, else why not ("No space left on device"). std::cout shares
// stdout's buffer (sync_with_stdio), so both are covered.
inline std::string StdoutWriteProblem() {
  std::cout.flush();
  errno = 0;
  const bool flush_failed = std::fflush(stdout) != 0;
  const int flush_errno = errno;
  if (!flush_failed && !std::ferror(stdout) && !std::cout.bad()) return "";
  if (flush_failed && flush_errno != 0) return std::strerror(flush_errno);
  // An earlier write failed and its errno is gone: ask the descriptor. A
  // pipe whose reader went away (`| head`: its writes failed with EPIPE)
  // shows POLLERR; a closed stdout (taken read-only) fails a write.
  pollfd out = {STDOUT_FILENO, POLLOUT, 0};
  if (::poll(&out, 1, 0) == 1 && (out.revents & POLLERR) != 0) return std::strerror(EPIPE);
  errno = 0;
  if (::write(STDOUT_FILENO, "", 0) < 0) return std::strerror(errno);
  return "some output was not written";
}

// Takes stdin, stdout and stderr where the caller closed them (`dropk ...
// >&-`) with /dev/null opened read-only: the first file a binary opened got
// descriptor 1 otherwise, and its stdout text went into that file (a
// checkpoint being written, say). Writes to a taken one fail (EBADF), so a
// closed stdout is still reported (ExitCodeAfterStdout).
inline void TakeClosedStandardDescriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    const int taken = ::open("/dev/null", O_RDONLY);
    if (taken >= 0 && taken != fd) {
      ::dup2(taken, fd);
      ::close(taken);
    }
  }
}

// `code`, or kExitFailure with one line on stderr when stdout lost output
// (StdoutWriteProblem): "PROGRAM: cannot write to stdout: <why>".
inline int ExitCodeAfterStdout(const char* program, int code) {
  const std::string problem = StdoutWriteProblem();
  if (problem.empty() || problem == std::strerror(EPIPE)) return code;
  std::fprintf(stderr, "%s: cannot write to stdout: %s (the output is incomplete)\n", program,
               problem.c_str());
  return code == kExitOk ? kExitFailure : code;
}

// Runs a binary's main body; an allocation failure that escapes it (sizes
// that can be checked are checked before allocating) becomes one line,
// "PROGRAM: out of memory (an allocation failed)[; HINT]", and kExitFailure,
// never an abort. `hint` may be empty. Likewise a failed GPU (DeviceError)
// that a binary does not handle itself (dropk-train and dropk-serve do):
// "PROGRAM: the GPU failed: <op>: <error>", kExitFailure, no core dump.
//
// Closed standard descriptors are taken first (TakeClosedStandardDescriptors).
// And output that did not reach stdout (a full disk, a closed descriptor:
// `dropk sample ... > /dev/full` lost the text and exited 0) is an error
// too: "PROGRAM: cannot write to stdout: <why>", kExitFailure where the body
// returned kExitOk. A reader that went away (EPIPE: `| head`) is not an
// error: the code stays (a run that trained is done).
inline int RunMainGuardingAllocation(const char* program, const char* hint,
                                     int (*main_body)(int, char**), int argc, char** argv) {
  TakeClosedStandardDescriptors();
  try {
    const int code = main_body(argc, argv);
    return ExitCodeAfterStdout(program, code);
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
