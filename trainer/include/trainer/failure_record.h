// A rank's fatal error, kept in the run directory. A job's stderr is the
// launcher's to forward, and it is lost at the moment it matters most: when
// mpirun ends the job it may drop lines still on their way from a remote
// daemon, a Slurm step's output can go to a node-local file, and a
// Kubernetes pod's log goes with the pod. So each rank that fails also
// appends its one line to OUT_DIR/failures/rank-NNNNN.log, which outlives
// the job on the run directory's (shared) filesystem:
//   2026-11-30T21:40:02.123Z host h0 pid 1234: rank 0 of 3: allreduce ...
// The file is appended to, never truncated, so a job relaunched after
// failures keeps the history of every attempt.
#ifndef DROPK_TRAINER_FAILURE_RECORD_H_
#define DROPK_TRAINER_FAILURE_RECORD_H_

#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/env.h"

namespace dropk {

// The file rank `rank` records its failures in, under `out_dir`.
std::string FailureRecordPath(const std::string& out_dir, int rank);

// Appends one timestamped line (UTC, host, pid, `message`) to rank `rank`'s
// failure file under `out_dir`, creating out_dir/failures (and out_dir) if
// needed, and fsyncs it. Best effort, and bounded: a failure to write is ignored (the
// caller reports the error on stderr as well), and a write still blocked
// after `limit` (a shared filesystem gone with the network) is abandoned
// so the caller can still end the job. Throws nothing. Returns whether the
// line was written and synced within the limit. A run that fails before
// training would have created out_dir (a missing data_dir) creates it here.
bool RecordFailure(const std::string& out_dir, int rank, const std::string& message,
                   std::chrono::milliseconds limit = std::chrono::seconds(5)) noexcept;

// How far each rank's failure file under an out_dir reached at some moment
// (path -> size in bytes), to tell the lines a later run appended.
using FailureRecordMarks = std::map<std::string, uint64_t>;

// The current size of every rank's failure file under `out_dir` (none when
// there is no out_dir/failures), read through `env` (null: Env::Default()).
FailureRecordMarks MarkFailureRecords(const std::string& out_dir, Env* env = nullptr);

// The lines appended to the failure files under `out_dir` since `marks`,
// from every rank, oldest first (the lines start with their UTC time), read
// through `env` (null: Env::Default()). A file that shrank since (replaced)
// is read whole. Both this and MarkFailureRecords read the filesystem
// unbounded: a shared out_dir whose server hangs hangs them.
std::vector<std::string> FailureRecordsSince(const std::string& out_dir,
                                             const FailureRecordMarks& marks, Env* env = nullptr);

// MarkFailureRecords and FailureRecordsSince on a thread of their own,
// given up after `limit`: nullopt when the filesystem has not answered by
// then (a shared out_dir whose server is gone with a lost host), so that
// the caller goes on. A thread given up on is left blocked, to end with the
// process; `env` must outlive it (Env::Default() does).
std::optional<FailureRecordMarks> MarkFailureRecordsWithin(const std::string& out_dir,
                                                           std::chrono::milliseconds limit,
                                                           Env* env = nullptr);
std::optional<std::vector<std::string>> FailureRecordsSinceWithin(const std::string& out_dir,
                                                                  const FailureRecordMarks& marks,
                                                                  std::chrono::milliseconds limit,
                                                                  Env* env = nullptr);

// Reads the lines appended to the failure files under an out_dir since
// some marks (FailureRecordsSince) again and again while a job runs, each
// read on a thread of its own, with at most one read in flight: a poll
// while the last read is still blocked (a hung shared filesystem) waits on
// that read rather than starting another, so a watcher polling every second
// holds one blocked thread, not one more each second. Not thread-safe: one
// caller polls. `env` (null: Env::Default()) must outlive the reads.
class FailureRecordPoller {
 public:
  FailureRecordPoller(std::string out_dir, FailureRecordMarks marks, Env* env = nullptr);

  // The lines, when the read in flight (started now if none is) ends within
  // `wait`; nullopt when it has not (it stays in flight for the next poll)
  // or it failed. Each finished read is used once: the next poll reads anew.
  std::optional<std::vector<std::string>> Poll(std::chrono::milliseconds wait);

 private:
  const std::string out_dir_;
  const FailureRecordMarks marks_;
  Env* const env_;
  std::future<std::vector<std::string>> in_flight_;
};

// The environment variable `dropk launch` sets (mpirun -x) to the id of
// each attempt it starts; a rank that finds it marks that it started.
inline constexpr char kLaunchAttemptEnv[] = "DROPK_LAUNCH_ATTEMPT";

// A rank's word that it started in a launch attempt: its rank, the host name
// it runs on and that host's IPv4 addresses (to match a hostfile line that
// names the host by address).
struct StartedRank {
  int rank = 0;
  std::string host;
  std::vector<std::string> addresses;
};

// This machine's host name ("?" when unreadable) and IPv4 addresses
// (loopback included; none when unreadable), as a start marker written here
// names them (RecordRankStarted).
std::string ThisHostName();
std::vector<std::string> ThisHostAddresses();

// The directory the ranks of launch attempt `attempt` mark their start in:
// OUT_DIR/started/ATTEMPT, one file rank-NNNNN a rank ("HOST ADDR...").
std::string StartMarkerDir(const std::string& out_dir, const std::string& attempt);

// Writes rank `rank`'s start marker for `attempt` under `out_dir` (creating
// the directories), bounded by `limit` like RecordFailure; best effort,
// throws nothing. Returns whether it was written and synced in time.
bool RecordRankStarted(const std::string& out_dir, const std::string& attempt, int rank,
                       std::chrono::milliseconds limit = std::chrono::seconds(5)) noexcept;

// The ranks that marked their start in `attempt` under `out_dir` (none when
// the directory is not there), read on a thread given up after `limit`:
// nullopt when the filesystem has not answered by then, or when the
// markers cannot be read (the directory or a marker gives an error other
// than the directory being absent): then no one can tell who started.
std::optional<std::vector<StartedRank>> StartedRanksWithin(const std::string& out_dir,
                                                           const std::string& attempt,
                                                           std::chrono::milliseconds limit);

// Removes attempt `attempt`'s start markers under `out_dir` (and
// OUT_DIR/started when that leaves it empty), given up after `limit`;
// best effort, throws nothing.
void RemoveStartMarkersWithin(const std::string& out_dir, const std::string& attempt,
                              std::chrono::milliseconds limit) noexcept;

}  // namespace dropk

#endif  // DROPK_TRAINER_FAILURE_RECORD_H_
