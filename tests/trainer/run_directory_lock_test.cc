// RunDirectoryLock: one training job per out_dir / checkpoint_dir.
#include "trainer/run_directory_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "support/fifo.h"
#include "support/temp_dir.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

std::string ThisHostName() {
  char host[256] = {};
  EXPECT_EQ(::gethostname(host, sizeof(host) - 1), 0);
  return host;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Another job's hold on the lock file, as another process would have it
// (flock locks belong to an open file description, so a second open in this
// process conflicts like another process), saying it runs on `host`.
class ForeignHolder {
 public:
  ForeignHolder(const std::string& dir, const std::string& host) {
    fd_ = ::open((dir + "/" + kTrainingLock.file_name).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    EXPECT_GE(fd_, 0);
    EXPECT_EQ(::flock(fd_, LOCK_EX | LOCK_NB), 0);
    const std::string who = "pid 4242 host " + host + "\n";
    EXPECT_EQ(::pwrite(fd_, who.data(), who.size(), 0), static_cast<ssize_t>(who.size()));
  }
  ~ForeignHolder() { Release(); }
  void Release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

TEST(RunDirectoryLockTest, CreatesTheDirectoryAndRecordsTheHolder) {
  test_util::ScopedTempDir tmp("runlock");
  const std::string dir = tmp.Path("new/out");
  std::ostringstream log;
  absl::StatusOr<RunDirectoryLock> lock = RunDirectoryLock::Acquire(dir, "out_dir", log);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_TRUE(lock->held());
  EXPECT_EQ(ReadFile(dir + "/" + kTrainingLock.file_name), "");  // until the job goes ahead
  lock->RecordHolder(log);
  EXPECT_THAT(ReadFile(dir + "/" + kTrainingLock.file_name),
              HasSubstr("pid " + std::to_string(::getpid()) + " host "));
  EXPECT_EQ(log.str(), "");
}

// A start refused after it took the lock (dropk-train: a checkpoint it
// cannot resume) rewrote the note of the run that held it before, which
// then named a process that never ran. Only RecordHolder writes it.
TEST(RunDirectoryLockTest, AStartThatDoesNotGoAheadLeavesTheLastHoldersNote) {
  test_util::ScopedTempDir tmp("runlock");
  const std::string path = tmp.Path(kTrainingLock.file_name);
  const std::string earlier = "pid 4242 host node-7\n";
  std::ofstream(path) << earlier;
  std::ostringstream log;
  {
    absl::StatusOr<RunDirectoryLock> refused =
        RunDirectoryLock::Acquire(tmp.path(), "out_dir", log);
    ASSERT_TRUE(refused.ok()) << refused.status();
    EXPECT_EQ(ReadFile(path), earlier);
  }
  EXPECT_EQ(ReadFile(path), earlier);
  absl::StatusOr<RunDirectoryLock> started = RunDirectoryLock::Acquire(tmp.path(), "out_dir", log);
  ASSERT_TRUE(started.ok()) << started.status();
  started->RecordHolder(log);
  EXPECT_EQ(ReadFile(path), absl::StrCat("pid ", ::getpid(), " host ", ThisHostName(), "\n"));
  EXPECT_EQ(log.str(), "");
}

// While a holder has not yet recorded itself, the note names the ended
// process before it: a second job is refused (the lock is what counts), and
// not told that ended process holds it.
TEST(RunDirectoryLockTest, AHolderNotYetRecordedIsNotNamedAsTheEndedOneBeforeIt) {
  test_util::ScopedTempDir tmp("runlock");
  const pid_t ended = ::fork();
  ASSERT_GE(ended, 0);
  if (ended == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(ended, nullptr, 0), ended);
  std::ofstream(tmp.Path(kTrainingLock.file_name))
      << "pid " << ended << " host " << ThisHostName() << "\n";
  std::ostringstream log;
  absl::StatusOr<RunDirectoryLock> first = RunDirectoryLock::Acquire(tmp.path(), "out_dir", log);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<RunDirectoryLock> second =
      RunDirectoryLock::Acquire(tmp.path(), "out_dir", log, {.same_host = 0ms, .other_host = 0ms});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(IsRunDirectoryHeldElsewhere(second.status()));
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("in use by another dropk-train job (a process that has not said who it "
                        "is, holding "));
}

TEST(RunDirectoryLockTest, ASecondJobOnThisHostIsRefusedNamingTheFirst) {
  test_util::ScopedTempDir tmp("runlock");
  std::ostringstream log;
  {
    absl::StatusOr<RunDirectoryLock> first = RunDirectoryLock::Acquire(tmp.path(), "out_dir", log);
    ASSERT_TRUE(first.ok()) << first.status();
    first->RecordHolder(log);
    absl::StatusOr<RunDirectoryLock> second =
        RunDirectoryLock::Acquire(tmp.path(), "out_dir", log, {.same_host = 300ms});
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(second.status().message()),
                AllOf(HasSubstr("out_dir=" + tmp.path() + " is in use by another dropk-train job"),
                      HasSubstr("pid " + std::to_string(::getpid()) + " on this host")));
    EXPECT_THAT(log.str(), HasSubstr("waiting up to 0 s"));
    EXPECT_TRUE(IsRunDirectoryHeldElsewhere(second.status()));
    EXPECT_FALSE(IsRunDirectoryHeldElsewhere(absl::FailedPreconditionError("other")));
  }
  // Once the first job has ended, the directory is free again.
  EXPECT_TRUE(RunDirectoryLock::Acquire(tmp.path(), "out_dir", log).ok());
}

// A holder on another host may be a lost host whose NFS lease has not yet
// lapsed: the lock is waited for, and taken as soon as it is free.
TEST(RunDirectoryLockTest, ALockFromAnotherHostIsWaitedForThenTaken) {
  test_util::ScopedTempDir tmp("runlock");
  ForeignHolder holder(tmp.path(), "node-7");
  std::ostringstream log;
  absl::StatusOr<RunDirectoryLock> refused = RunDirectoryLock::Acquire(
      tmp.path(), "checkpoint_dir", log, {.same_host = 0ms, .other_host = 400ms});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              AllOf(HasSubstr("checkpoint_dir="), HasSubstr("pid 4242 on host node-7")));
  std::thread release([&holder] {
    std::this_thread::sleep_for(300ms);
    holder.Release();
  });
  absl::StatusOr<RunDirectoryLock> taken = RunDirectoryLock::Acquire(
      tmp.path(), "checkpoint_dir", log, {.same_host = 0ms, .other_host = 30'000ms});
  release.join();
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_THAT(log.str(), HasSubstr("dropk-train: checkpoint_dir=" + tmp.path() +
                                   " is locked by pid 4242 on host node-7; waiting up to 30 s"));
}

// While alive, no write may grow a file past 0 bytes (RLIMIT_FSIZE, with
// SIGXFSZ ignored): writes fail with EFBIG, as on a file system out of
// space or quota. Restores both when destroyed.
class NoFileGrowth {
 public:
  NoFileGrowth() : old_handler_(std::signal(SIGXFSZ, SIG_IGN)) {
    EXPECT_EQ(::getrlimit(RLIMIT_FSIZE, &saved_), 0);
    rlimit none = saved_;
    none.rlim_cur = 0;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &none), 0);
  }
  ~NoFileGrowth() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  void (*old_handler_)(int);
  rlimit saved_{};
};

// The lock is held but its holder note cannot be written: a warning that
// starts with the program's name, as the other lines of its log do. It
// started with "warning: " alone, in dropk-train's log and dropk's alike.
TEST(RunDirectoryLockTest, AHolderNoteThatCannotBeWrittenIsAWarningNamingTheProgram) {
  test_util::ScopedTempDir tmp("runlock");
  for (const RunLockKind& kind : {kTrainingLock, kPrepareLock}) {
    SCOPED_TRACE(kind.file_name);
    std::ostringstream log;
    NoFileGrowth no_growth;
    absl::StatusOr<RunDirectoryLock> lock =
        RunDirectoryLock::Acquire(tmp.path(), "out_dir", log, {}, kind);
    ASSERT_TRUE(lock.ok()) << lock.status();
    EXPECT_TRUE(lock->held());
    lock->RecordHolder(log);
    EXPECT_THAT(log.str(),
                StartsWith(absl::StrCat(kind.program, ": warning: cannot record the holder in ",
                                        tmp.path(), "/", kind.file_name, " (")));
  }
  EXPECT_EQ(std::string(kTrainingLock.program), "dropk-train");
  EXPECT_EQ(std::string(kPrepareLock.program), "dropk");
}

// A job that holds the export lock on `path` (its fd, already locked) and
// records itself as "pid 4242 host node-7" 200 ms later, while another
// export tries the lock without waiting; returns that export's refusal.
absl::Status ExportRefusedWhileTheHolderRecordsItself(int fd, const std::string& path,
                                                      const std::string& out) {
  std::thread note([fd] {
    std::this_thread::sleep_for(200ms);
    const std::string who = "pid 4242 host node-7\n";
    EXPECT_EQ(::ftruncate(fd, 0), 0);
    EXPECT_EQ(::pwrite(fd, who.data(), who.size(), 0), static_cast<ssize_t>(who.size()));
  });
  std::ostringstream log;
  absl::StatusOr<RunDirectoryLock> taken =
      RunDirectoryLock::AcquireFile(path, "--out=" + out, "--out", "dropk ckpt export", "dropk",
                                    log, {.same_host = 0ms, .other_host = 0ms});
  note.join();
  ::close(fd);
  return taken.ok() ? absl::OkStatus() : taken.status();
}

// A holder records itself just after it locks. A job that does not wait
// (dropk ckpt export, dropk data prepare) and came in between said "a
// process that has not said who it is"; it now gives the note a moment.
TEST(RunDirectoryLockTest, AHolderAboutToRecordItselfIsNamedEvenWithoutWaiting) {
  test_util::ScopedTempDir tmp("runlock");
  const std::string path = tmp.Path(".model.bin.export-lock");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const absl::Status refused =
      ExportRefusedWhileTheHolderRecordsItself(fd, path, tmp.Path("model.bin"));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()),
              AllOf(HasSubstr("--out=" + tmp.Path("model.bin") +
                              " is in use by another dropk ckpt export (pid 4242 on host node-7, "
                              "holding " +
                              path +
                              "); let it end or stop it, or give this run its "
                              "own --out")));
}

// The last holder's note outlives it: a job that took the lock but has not
// yet written its own note is not reported as that ended process.
TEST(RunDirectoryLockTest, TheNoteOfAnEndedHolderIsNotTakenForTheNewOne) {
  test_util::ScopedTempDir tmp("runlock");
  const std::string path = tmp.Path(".model.bin.export-lock");
  const pid_t ended = ::fork();
  ASSERT_GE(ended, 0);
  if (ended == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(ended, nullptr, 0), ended);
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof(host) - 1), 0);
  std::ofstream(path) << "pid " << ended << " host " << host << "\n";
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);  // the new holder, not yet recorded
  const absl::Status refused =
      ExportRefusedWhileTheHolderRecordsItself(fd, path, tmp.Path("model.bin"));
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("in use by another dropk ckpt export (pid 4242 on host node-7"));
}

TEST(RunDirectoryLockTest, AFifoInPlaceOfTheLockFileIsRefusedWithoutBlocking) {
  test_util::ScopedTempDir tmp("runlock");
  test_util::FifoWithUnblocker fifo(tmp.Path(kTrainingLock.file_name), std::chrono::seconds(10));
  std::ostringstream log;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<RunDirectoryLock> lock = RunDirectoryLock::Acquire(tmp.path(), "out_dir", log);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(lock.ok());
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr("not a regular file"));
}

TEST(RunDirectoryLockTest, AnUncreatableDirectoryIsNamed) {
  test_util::ScopedTempDir tmp("runlock");
  std::ofstream(tmp.Path("file")) << "x";
  std::ostringstream log;
  absl::StatusOr<RunDirectoryLock> lock =
      RunDirectoryLock::Acquire(tmp.Path("file/out"), "out_dir", log);
  ASSERT_FALSE(lock.ok());
  EXPECT_THAT(std::string(lock.status().message()),
              HasSubstr("out_dir=" + tmp.Path("file/out") + ": cannot create it"));
  // A file in the way is the user's to fix: exit 2, not 1.
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kInvalidArgument);
  lock = RunDirectoryLock::Acquire(tmp.Path("file"), "checkpoint_dir", log);
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(lock.status().message()),
              HasSubstr("checkpoint_dir=" + tmp.Path("file") + ": cannot create it"));
}

// A symbolic link to nothing on the way (run/checkpoints -> a file system
// that is not mounted) failed with "cannot create it: File exists", exit 1,
// naming neither the link nor its target.
TEST(RunDirectoryLockTest, ALinkToNothingOnTheWayIsNamedWithItsTarget) {
  test_util::ScopedTempDir tmp("runlock");
  const std::string missing = tmp.Path("unmounted/share");
  std::filesystem::create_directories(tmp.Path("run"));
  std::filesystem::create_directory_symlink(missing, tmp.Path("run/checkpoints"));
  std::ostringstream log;
  for (const std::string& dir : {tmp.Path("run/checkpoints"), tmp.Path("run/checkpoints/x")}) {
    absl::StatusOr<RunDirectoryLock> lock = RunDirectoryLock::Acquire(dir, "checkpoint_dir", log);
    ASSERT_FALSE(lock.ok());
    EXPECT_EQ(lock.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(lock.status().message(),
              "checkpoint_dir=" + dir + ": cannot create it: " + tmp.Path("run/checkpoints") +
                  " is a symbolic link to " + missing +
                  ", which does not exist (a file system that is not mounted?)");
  }
  // A link to a directory that exists is followed as before.
  std::filesystem::create_directories(missing);
  EXPECT_TRUE(RunDirectoryLock::Acquire(tmp.Path("run/checkpoints"), "checkpoint_dir", log).ok());
}

}  // namespace
}  // namespace dropk
