// One job per run directory. Two training jobs on one out_dir or
// checkpoint_dir at once (a job started twice, a Kubernetes MPIJob restarted
// while its old launcher lingers, both passing --resume=latest) would append
// to one metrics.jsonl, save into one checkpoint directory, point LATEST back
// and forth and prune each other's checkpoints with keep_last; two data
// preparations into one directory would share their spool and cut each
// other's token files short. The job (rank 0 of a training job) takes an
// advisory flock(2) on a lock file in the directory for its life. The
// kernel releases it when the process ends, however it ends (kill -9
// included), so a relaunch after a crash is never blocked by a stale file.
#ifndef DROPK_TRAINER_RUN_DIRECTORY_LOCK_H_
#define DROPK_TRAINER_RUN_DIRECTORY_LOCK_H_

#include <chrono>
#include <functional>
#include <ostream>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace dropk {

// Which kind of job a lock is for: its lock file's name, how messages
// name a job of the kind, and the program whose name starts the lines it
// logs ("dropk-train: warning: cannot lock ...").
struct RunLockKind {
  const char* file_name;
  const char* job;
  const char* program;
};
inline constexpr RunLockKind kTrainingLock{".dropk-train.lock", "dropk-train job", "dropk-train"};
inline constexpr RunLockKind kPrepareLock{".dropk-prepare.lock", "dropk data prepare", "dropk"};

// How long Acquire waits for a lock held by a process that may be ending.
struct RunLockWait {
  // The holder runs on this host: it is alive (its lock would be gone
  // otherwise), so it is a real second job unless it is just exiting.
  std::chrono::milliseconds same_host{10'000};
  // The holder ran on another host: on NFS, a host that was lost (the case
  // `dropk launch` relaunches for) keeps its locks until its lease lapses,
  // 90 s by default, so wait past that before calling it a second job.
  std::chrono::milliseconds other_host{120'000};
  // Polled while waiting; true (a stop signal) gives up at once: Cancelled.
  std::function<bool()> stop_requested = nullptr;
};

// Whether `status` is Acquire's refusal because another job holds the
// directory (its FailedPrecondition carries a payload saying so): a failure
// that must leave nothing in that directory, which is the other job's.
bool IsRunDirectoryHeldElsewhere(const absl::Status& status);

// An exclusive claim on one run directory, held until destroyed. Move-only.
class RunDirectoryLock {
 public:
  // Creates `dir` if needed and locks its `kind` lock file (RecordHolder
  // then names this process in it, once the job goes ahead). Held by
  // another process: waits per `wait` (logging one line to `log`), then
  // FailedPrecondition "FIELD=DIR is in use by another JOB (pid P on host H,
  // holding FILE); ...". A file system without locks (ENOLCK, ENOTSUP) logs
  // a warning and returns an unlocked claim: the job still runs. A directory
  // or file that cannot be created or opened is an error naming it:
  // InvalidArgument (exit 2) when `dir` cannot be a directory (a regular file
  // is in the way) or may not be created, NotFound (exit 2) naming the link
  // and its target when a symbolic link on the way points to nothing,
  // PermissionDenied otherwise.
  static absl::StatusOr<RunDirectoryLock> Acquire(const std::string& dir, const std::string& field,
                                                  std::ostream& log, RunLockWait wait = {},
                                                  RunLockKind kind = kTrainingLock);

  // Acquire for one lock file rather than a run directory: locks `lock_path`
  // (created if needed; its directory must exist) for a `job` that claims
  // `subject`, which messages name ("--out=/x/model.bin is in use by another
  // JOB ..."); `field` is the flag a user changes to avoid the clash, and
  // the lines logged to `log` start with "PROGRAM: ". The
  // lock file stays when the lock is released: removing it could let a
  // third process lock a new file while a second still locks the old one.
  static absl::StatusOr<RunDirectoryLock> AcquireFile(const std::string& lock_path,
                                                      const std::string& subject,
                                                      const std::string& field, const char* job,
                                                      const char* program, std::ostream& log,
                                                      RunLockWait wait = {});

  RunDirectoryLock(RunDirectoryLock&& other) noexcept
      : fd_(other.fd_), path_(std::move(other.path_)), program_(other.program_) {
    other.fd_ = -1;
  }
  RunDirectoryLock& operator=(RunDirectoryLock&& other) noexcept;
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;
  ~RunDirectoryLock();

  // Whether the lock is held (false only on a file system without locks).
  bool held() const { return fd_ >= 0; }

  // Records this process's pid and host in the lock file, the note that
  // names the holder in another job's refusal and outlives the lock. Call it
  // once the job goes ahead: a start refused after Acquire (a checkpoint it
  // cannot resume, a config it does not match) leaves the note of whoever
  // held the lock before it. A note that cannot be written is a warning
  // line in `log` ("PROGRAM: warning: ..."); the lock holds either way.
  // Does nothing when the lock is not held.
  void RecordHolder(std::ostream& log);

 private:
  RunDirectoryLock(int fd, std::string path, const char* program)
      : fd_(fd), path_(std::move(path)), program_(program) {}
  int fd_ = -1;
  std::string path_;          // the lock file
  const char* program_ = "";  // starts the warning lines: "dropk-train", "dropk"
};

}  // namespace dropk

#endif  // DROPK_TRAINER_RUN_DIRECTORY_LOCK_H_
