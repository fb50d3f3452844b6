#include "trainer/run_directory_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/path_status.h"

namespace dropk {
namespace {

// How long a lock's holder may take to record itself in the lock file.
constexpr auto kHolderNoteWait = std::chrono::seconds(1);
// The payload that marks Acquire's refusal for a lock another job holds.
constexpr absl::string_view kHeldElsewherePayload = "dropk/run-directory-held-elsewhere";

std::string ThisHost() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

// Who holds the lock, as the holder recorded it: "pid P host H".
struct Holder {
  std::string pid = "unknown";
  std::string host;  // empty: not recorded (yet)
};

Holder ReadHolder(int fd) {
  char buf[512] = {};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  Holder holder;
  if (n <= 0) return holder;
  std::vector<std::string> words =
      absl::StrSplit(absl::StripAsciiWhitespace(std::string(buf, n)), ' ', absl::SkipEmpty());
  if (words.size() == 4 && words[0] == "pid" && words[2] == "host") {
    holder.pid = words[1];
    holder.host = words[3];
  }
  return holder;
}

// Whether the note names a process of this host that no longer exists: the
// last holder's note outlives it until the next holder, once its start
// goes ahead, writes its own (RecordHolder).
bool NoteOfAnEndedProcess(const Holder& holder, const std::string& me) {
  int pid = 0;
  if (holder.host != me || !absl::SimpleAtoi(holder.pid, &pid) || pid <= 0) return false;
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

std::string Describe(const Holder& holder, const std::string& me) {
  // No note, or an ended process's: the holder has not recorded itself yet.
  if (holder.host.empty() || NoteOfAnEndedProcess(holder, me)) {
    return "a process that has not said who it is";
  }
  return absl::StrCat("pid ", holder.pid, " on ",
                      holder.host == me ? "this host" : "host " + holder.host);
}

}  // namespace

bool IsRunDirectoryHeldElsewhere(const absl::Status& status) {
  return status.GetPayload(kHeldElsewherePayload).has_value();
}

absl::StatusOr<RunDirectoryLock> RunDirectoryLock::Acquire(const std::string& dir,
                                                           const std::string& field,
                                                           std::ostream& log, RunLockWait wait,
                                                           RunLockKind kind) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return DirectoryCreationError(absl::StrCat(field, "=", dir, ": cannot create it"), dir, ec);
  }
  return AcquireFile(dir + "/" + kind.file_name, absl::StrCat(field, "=", dir), field, kind.job,
                     kind.program, log, std::move(wait));
}

absl::StatusOr<RunDirectoryLock> RunDirectoryLock::AcquireFile(
    const std::string& path, const std::string& subject, const std::string& field, const char* job,
    const char* program, std::ostream& log, RunLockWait wait) {
  // Non-blocking and no links: a FIFO or a link put there must not hang or
  // redirect the open.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
  if (fd < 0) {
    // A directory the user may not write (EACCES, a read-only file system)
    // is the user's to fix, as one that cannot be created is: exit 2, not 1.
    const absl::Status why =
        PathError(absl::StrCat(subject, ": cannot write there: cannot open ", path),
                  std::error_code(errno, std::generic_category()));
    return absl::IsInvalidArgument(why) ? why : absl::PermissionDeniedError(why.message());
  }
  RunDirectoryLock lock(fd, path, program);
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(subject, ": ", path, " is not a regular file; remove it"));
  }
  const std::string me = ThisHost();
  const auto start = std::chrono::steady_clock::now();
  bool announced = false;
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) break;
    const int err = errno;
    if (err == EINTR) continue;
    if (err != EWOULDBLOCK) {
      // NFS mounted with nolock, some FUSE file systems: run unprotected.
      log << program << ": warning: cannot lock " << path << " (" << std::strerror(err)
          << "); a second " << job << " on " << field << " at the same time would not be detected"
          << std::endl;
      return RunDirectoryLock(-1, path, program);
    }
    const Holder holder = ReadHolder(fd);
    const std::chrono::milliseconds patience = holder.host == me ? wait.same_host : wait.other_host;
    const auto waited = std::chrono::steady_clock::now() - start;
    // A holder may be about to write its note (most do right after they
    // lock): give it a moment, so that even a job that does not wait
    // (patience 0) names the holder.
    const bool note_pending =
        (holder.host.empty() || NoteOfAnEndedProcess(holder, me)) && waited < kHolderNoteWait;
    if (waited >= patience && !note_pending) {
      absl::Status held = absl::FailedPreconditionError(absl::StrCat(
          subject, " is in use by another ", job, " (", Describe(holder, me), ", holding ", path,
          "); let it end or stop it, or give this run its own ", field));
      held.SetPayload(kHeldElsewherePayload, absl::Cord(path));
      return held;
    }
    if (wait.stop_requested && wait.stop_requested()) {
      return absl::CancelledError(absl::StrCat("stopped by a signal while waiting for ", subject,
                                               " (held by ", Describe(holder, me), ")"));
    }
    if (waited >= patience) {  // only the note is awaited
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    if (!announced) {
      announced = true;
      log << program << ": " << subject << " is locked by " << Describe(holder, me)
          << "; waiting up to "
          << std::chrono::duration_cast<std::chrono::seconds>(patience).count()
          << " s for it to end" << std::endl;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return lock;
}

void RunDirectoryLock::RecordHolder(std::ostream& log) {
  if (fd_ < 0) return;
  const std::string who = absl::StrCat("pid ", ::getpid(), " host ", ThisHost(), "\n");
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, who.data(), who.size(), 0) < 0) {
    // The lock holds without the note; another job's message says less.
    log << program_ << ": warning: cannot record the holder in " << path_ << " ("
        << std::strerror(errno) << ")" << std::endl;
  }
}

RunDirectoryLock& RunDirectoryLock::operator=(RunDirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    program_ = other.program_;
    other.fd_ = -1;
  }
  return *this;
}

RunDirectoryLock::~RunDirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace dropk
