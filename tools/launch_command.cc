#include "tools/launch_command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wordexp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/exit_codes.h"
#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "tools/hostfile_reader.h"
#include "tools/launch_plan.h"
#include "tools/process_tree.h"
#include "trainer/config.h"
#include "trainer/failure_record.h"

namespace dropk {
namespace {

// The largest hostfile read (a line per host: a million hosts would fit).
constexpr uint64_t kMaxHostfileBytes = 16 << 20;
// How long a hostfile pipe's writer may send nothing (a `scontrol` or
// `ssh head cat` behind `<(...)` answers within it).
constexpr std::chrono::seconds kHostfilePipeQuietLimit{30};

// Open MPI notices a lost host's daemon this way; without it mpirun may wait
// for that daemon for good (see AbortJobAfterLauncherGrace). Longer than
// dropk-train's default collective timeout (30 s floor), so that rank 0's
// report naming the stalled operation usually comes first.
constexpr const char* kKeepaliveArgs[] = {"--mca", "oob_tcp_keepalive_time",   "60",
                                          "--mca", "oob_tcp_keepalive_intvl",  "10",
                                          "--mca", "oob_tcp_keepalive_probes", "6"};

std::atomic<pid_t> g_mpirun{0};  // forwarded SIGINT/SIGTERM go here
std::atomic<int> g_signals{0};   // every SIGINT/SIGTERM, mpirun running or not
std::atomic<int> g_first_signal{0};  // the first one's number
static_assert(std::atomic<pid_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free);

// The first SIGINT/SIGTERM goes to mpirun as SIGUSR1, which it forwards to
// every rank (dropk-train then saves and exits 75; mpirun's own SIGTERM would
// kill the ranks a second later); a second one is passed on as it is; a
// third SIGKILLs mpirun's process group (mpirun and the ranks and helpers
// it started here): an mpirun too busy to act on signals (starting
// hundreds of ranks) kept the launcher running for minutes after every
// Ctrl-C. Each is counted even when no mpirun runs (the launcher is
// checking hosts, or between attempts): the launcher's waits look at the
// count and stop.
extern "C" void ForwardSignal(int signo) {
  int none = 0;
  g_first_signal.compare_exchange_strong(none, signo);
  const int earlier = g_signals.fetch_add(1);
  const pid_t pid = g_mpirun.load();
  if (pid <= 0) return;
  if (earlier >= 2) {
    kill(-pid, SIGKILL);
  } else {
    kill(pid, earlier == 0 ? SIGUSR1 : signo);
  }
}

// SIGINT and SIGTERM, the signals the launcher takes as a request to stop.
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// The error the launcher ends with when a stop signal came while `what`
// (e.g. "while trying mpirun on each host alone"), no rank running and so
// nothing to save or lose: Cancelled, exit 75 (stopped, not done), as when
// the ranks stop on it.
absl::Status StoppedBySignal(const std::string& what) {
  const int signo = g_first_signal.load();
  const char* name = signo == SIGINT ? "SIGINT" : signo == SIGTERM ? "SIGTERM" : "a signal";
  return absl::CancelledError(absl::StrCat("stopped by ", name, " ", what));
}

// The launcher's end when the ranks stopped on a signal, having saved
// (exit status 75 through mpirun): Cancelled, which `dropk` exits 75 on.
// `signo` is the first stop signal the launcher got, 0 when the ranks were
// signalled from elsewhere.
absl::Status StoppedAfterSaving(int signo) {
  const std::string by = signo == SIGINT    ? "SIGINT"
                         : signo == SIGTERM ? "SIGTERM"
                                            : "a signal to the ranks";
  return absl::CancelledError(absl::StrCat(
      "stopped by ", by,
      ": the ranks saved a checkpoint (unless they had not trained a step yet) and exited 75; "
      "resume with this dropk launch command and --resume=latest"));
}

// What is kept of mpirun's output to look for a lost host: the reports come
// at the end, and a long run prints without bound.
constexpr size_t kKeptOutputBytes = 1 << 20;

struct Flags {
  std::string hostfile;
  int max_restarts = 3;
  std::string mpirun = "mpirun";
  std::string mpirun_args;
  int failure_grace_s = 60;
  int lost_host_grace_s = 5;
  int startup_timeout_s = 120;
  std::vector<std::string> command;
};

absl::StatusOr<std::vector<std::string>> SplitShellWords(const std::string& text) {
  if (text.empty()) return std::vector<std::string>{};
  wordexp_t words;
  if (wordexp(text.c_str(), &words, WRDE_NOCMD | WRDE_UNDEF) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--mpirun-args \"", text, "\": cannot split into words (unbalanced quotes, or $( ), ` `)"));
  }
  std::vector<std::string> out(words.we_wordv, words.we_wordv + words.we_wordc);
  wordfree(&words);
  return out;
}

// OK when `program` names an executable file, or one on PATH when it has no
// '/'. Checked before launching: execvp failing in the child came back as
// "mpirun exit status 127" after the child's own line.
absl::Status CheckExecutable(const std::string& program) {
  auto executable = [](const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
  };
  if (program.find('/') != std::string::npos) {
    if (executable(program)) return absl::OkStatus();
    return absl::NotFoundError(absl::StrCat("--mpirun ", program, ": not an executable file"));
  }
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path == nullptr ? "" : path, ':')) {
    if (executable(absl::StrCat(dir.empty() ? "." : dir, "/", program))) return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("--mpirun ", program,
                                          ": not found on PATH (install Open MPI, or name its "
                                          "mpirun with --mpirun /path/to/mpirun)"));
}

// How a run of mpirun ended: its exit status (128 + signal when killed),
// the end of what it printed, and why the watchdog ended it ("" when it
// ended by itself).
struct RunResult {
  int code = 0;
  std::string output;
  std::string ended_by_watchdog;
};

// Asked about once a second while mpirun runs: a reason to end it now, or
// nullopt to let it run on.
using Watchdog = std::function<std::optional<std::string>()>;

// How long the output of a process group killed by the watchdog is read
// for: a process outside the group (a daemonised helper) may hold the pipes.
constexpr std::chrono::seconds kDrainAfterKill(5);
// What Open MPI (ORTE in 4.x, PRTE in 5.x) prints when it could not start
// its daemon on some host: ssh refused or failed, a name that does not
// resolve. The host is named only in ssh's own words, if at all.
constexpr char kDaemonsNotStarted[] = "unable to reliably start one or more daemons";

// In a child just forked from the launcher (pid `launcher`): moves it to a
// process group of its own that gets SIGTERM when the launcher dies, reads
// stdin from /dev/null, writes stdout to `out` and stderr to `err` (both
// closed once copied, unless they are 1 or 2) and execs `args`
// (null-terminated; on failure a line on `err` and exit 127).
[[noreturn]] void ExecInGroupOfItsOwn(const std::vector<char*>& args, pid_t launcher, int out,
                                      int err) {
  setpgid(0, 0);
  // The launcher blocks them around fork (RunAndCapture); the mask outlives exec.
  const sigset_t stop_signals = StopSignals();
  sigprocmask(SIG_UNBLOCK, &stop_signals, nullptr);
  // Out of the launcher's process group, mpirun would outlive a launcher
  // killed outright (kill -9, an OOM kill) with the whole job: it gets
  // SIGTERM then (and ends its ranks, which save and stop).
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != launcher) _exit(128 + SIGTERM);  // the launcher died before prctl
  const int null = open("/dev/null", O_RDONLY);
  if (null >= 0) dup2(null, 0);
  dup2(out, 1);
  dup2(err, 2);
  if (out > 2) close(out);
  if (err > 2 && err != out) close(err);
  execvp(args[0], args.data());
  std::fprintf(stderr, "dropk launch: cannot run %s\n", args[0]);
  _exit(127);
}

// Runs argv in a process group of its own (stdin from /dev/null: no
// terminal read stops it there; SIGTERM when the launcher dies), copying its stdout and stderr to
// ours as they come. When `watchdog` gives a reason, SIGKILLs the whole group (mpirun and the ranks
// and helpers it started here) and returns that reason with the result.
// Once mpirun has ended, reads on for kDrainAfterKill at most, then
// SIGKILLs what is left in the group. Aborted, starting nothing, when a
// stop signal has come already (a signal before mpirun is known would not
// reach it).
absl::StatusOr<RunResult> RunAndCapture(const std::vector<std::string>& argv,
                                        const Watchdog& watchdog) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t launcher = getpid();
  // Held until g_mpirun is set, so that a signal either comes before the
  // check below or is forwarded to mpirun.
  const sigset_t stop_signals = StopSignals();
  sigset_t before;
  sigprocmask(SIG_BLOCK, &stop_signals, &before);
  if (g_signals > 0) {
    sigprocmask(SIG_SETMASK, &before, nullptr);
    return StoppedBySignal("before mpirun started");
  }
  int out[2], err[2];
  if (pipe(out) != 0 || pipe(err) != 0) {
    sigprocmask(SIG_SETMASK, &before, nullptr);
    return absl::InternalError("pipe failed");
  }
  const pid_t pid = fork();
  if (pid < 0) {
    sigprocmask(SIG_SETMASK, &before, nullptr);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    close(out[0]), close(err[0]);
    ExecInGroupOfItsOwn(args, launcher, out[1], err[1]);
  }
  setpgid(pid, pid);  // also here: the group must exist before any kill(-pid)
  g_mpirun = pid;
  sigprocmask(SIG_SETMASK, &before, nullptr);
  close(out[1]), close(err[1]);
  RunResult result;
  std::string& captured = result.output;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open = 2;
  char buffer[4096];
  using Clock = std::chrono::steady_clock;
  Clock::time_point next_check = Clock::now() + std::chrono::seconds(1);
  std::optional<Clock::time_point> killed_at;
  // When mpirun has ended (reaped here) while something it left in its
  // group, an ssh to a lost host say, still holds the pipes: the launcher
  // read on for good, deaf to signals (forwarded to a dead mpirun).
  std::optional<Clock::time_point> exited_at;
  int status = 0;
  while (open > 0) {
    if (killed_at && Clock::now() - *killed_at > kDrainAfterKill) break;
    if (exited_at && Clock::now() - *exited_at > kDrainAfterKill) {
      kill(-pid, SIGKILL);  // what mpirun left in its group
      break;
    }
    const int ready = poll(fds, 2, 1000);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (!exited_at && waitpid(pid, &status, WNOHANG) == pid) {
      g_mpirun = 0;  // its pid may be reused: no signal goes there now
      exited_at = Clock::now();
    }
    if (!killed_at && watchdog && Clock::now() >= next_check) {
      next_check = Clock::now() + std::chrono::seconds(1);
      if (std::optional<std::string> reason = watchdog()) {
        result.ended_by_watchdog = *std::move(reason);
        kill(-pid, SIGKILL);
        killed_at = Clock::now();
      }
    }
    for (int i = 0; i < 2 && ready > 0; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open;
        continue;
      }
      std::fwrite(buffer, 1, n, i == 0 ? stdout : stderr);
      std::fflush(i == 0 ? stdout : stderr);
      captured.append(buffer, n);
      if (captured.size() > 2 * kKeptOutputBytes)
        captured.erase(0, captured.size() - kKeptOutputBytes);
    }
  }
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd >= 0) close(fds[i].fd);
  }
  while (!exited_at && waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_mpirun = 0;
  // What mpirun left running outside its group (its ssh agents to other
  // hosts), which the launcher inherited (AdoptOrphansOfDescendants).
  KillDescendants();
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// A private temporary directory, removed with everything in it when the
// object goes.
class JobDir {
 public:
  static absl::StatusOr<JobDir> Create() {
    std::error_code ec;
    std::string path = (std::filesystem::temp_directory_path(ec) / "dropk-launch-XXXXXX").string();
    if (ec || mkdtemp(path.data()) == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("cannot create a temporary directory ", path, ": ", std::strerror(errno)));
    }
    return JobDir(path);
  }
  JobDir(JobDir&& other) noexcept : path_(std::exchange(other.path_, "")) {}
  JobDir& operator=(JobDir&&) = delete;
  ~JobDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  explicit JobDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// How long the launcher waits for the failure records of out_dir: a shared
// filesystem whose server went with a lost host would otherwise hang it
// there, before the relaunch that host's loss calls for.
constexpr std::chrono::seconds kFailureRecordsLimit(5);

// The lines dropk-train's ranks appended to the failure records under
// `out_dir` since `marks` (trainer/failure_record.h), oldest first; nullopt
// when the marks or the records did not come within kFailureRecordsLimit.
// Only those of a job of `ranks` ranks count (RecordsOfAJobOf).
std::optional<std::vector<std::string>> FailureRecordsOf(
    const std::string& out_dir, const std::optional<FailureRecordMarks>& marks, int ranks,
    std::chrono::milliseconds limit = kFailureRecordsLimit) {
  if (!marks) return std::nullopt;
  std::optional<std::vector<std::string>> lines = FailureRecordsSinceWithin(out_dir, *marks, limit);
  if (!lines) return std::nullopt;
  return RecordsOfAJobOf(*lines, ranks);
}

// "; first failure a rank reported (OUT_DIR/failures): LINE" (and how many
// more) from `lines` (FailureRecordsOf), "" when there are none (a rank
// killed outright, or an out_dir this host cannot see), or "; failure
// records (OUT_DIR/failures) not readable within 5 s" when they did not come.
std::string FirstFailureReported(const std::string& out_dir,
                                 const std::optional<std::vector<std::string>>& lines) {
  if (!lines) {
    return absl::StrCat("; failure records (", out_dir, "/failures) not readable within ",
                        kFailureRecordsLimit.count(), " s");
  }
  if (lines->empty()) return "";
  std::string text =
      absl::StrCat("; first failure a rank reported (", out_dir, "/failures): ", lines->front());
  if (lines->size() > 1) absl::StrAppend(&text, " (and ", lines->size() - 1, " more there)");
  return text;
}

// Watches a job's failure records while its mpirun runs (a Watchdog). A
// rank that recorded a fatal error has ended the job (MPI_Abort) or left it
// to mpirun (a lost peer), so mpirun should end soon; when it has not within
// the grace, a reason to end it. The grace is `lost_host_grace` when the
// first record names a peer of `hosts` unreachable (mpirun then waits on
// that host's daemon until TCP keepalive gives up), else `failure_grace`;
// the host it names lost is judged from every record there at the grace's
// end (FindLostHost).
class FailureWatchdog {
 public:
  FailureWatchdog(std::string out_dir, std::optional<FailureRecordMarks> marks,
                  std::chrono::seconds failure_grace, std::chrono::seconds lost_host_grace,
                  const std::vector<HostEntry>& hosts)
      : out_dir_(std::move(out_dir)),
        marks_(std::move(marks)),
        failure_grace_(failure_grace),
        lost_host_grace_(lost_host_grace),
        hosts_(hosts),
        ranks_(RanksOf(hosts)) {}

  // Reads the records (bounded: a hung filesystem makes it wait no more than
  // a second, and holds one blocked read, not one more each call) and says
  // whether mpirun has outlived its grace.
  std::optional<std::string> operator()() {
    const auto now = std::chrono::steady_clock::now();
    if (!first_seen_) {
      const std::optional<std::vector<std::string>> lines = Records();
      if (!lines || lines->empty()) return std::nullopt;
      first_seen_ = now;
      first_line_ = lines->front();
      lost_host_ = FindLostHost(first_line_, hosts_);
    }
    const std::chrono::seconds grace = lost_host_ ? lost_host_grace_ : failure_grace_;
    if (now - *first_seen_ < grace) return std::nullopt;
    std::string lost = lost_host_ ? absl::StrCat("host ", *lost_host_, " lost") : "";
    if (lost_host_) {
      // Every rank's record by now: the first may be the cut-off rank's,
      // naming the hosts it can no longer reach (HostsNamedLost counts them).
      if (const std::optional<std::vector<std::string>> lines = Records();
          lines && !lines->empty()) {
        const std::vector<std::string> named = HostsNamedLost(absl::StrJoin(*lines, "\n"), hosts_);
        if (named.size() == 1) lost = absl::StrCat("host ", named.front(), " lost");
        if (named.size() > 1) {
          lost = absl::StrCat("hosts ", HostNamesForMessage(named), " unreachable as often each");
        }
      }
    }
    const std::string flag = lost_host_ ? "--lost-host-grace-s" : "--failure-grace-s";
    return absl::StrCat("mpirun still running ", grace.count(), " s (", flag,
                        ") after a rank recorded ", lost_host_ ? lost : "a fatal error", " in ",
                        out_dir_, "/failures (", first_line_,
                        "); ended mpirun's process group (mpirun, its local ranks and helpers)");
  }

 private:
  // The records since the marks, nullopt when there are no marks or the
  // filesystem has not answered within a second.
  std::optional<std::vector<std::string>> Records() {
    if (!marks_) return std::nullopt;
    if (!poller_) poller_.emplace(out_dir_, *marks_);
    std::optional<std::vector<std::string>> lines = poller_->Poll(std::chrono::seconds(1));
    if (!lines) return std::nullopt;
    return RecordsOfAJobOf(*lines, ranks_);  // not a late one of an earlier attempt
  }

  const std::string out_dir_;
  const std::optional<FailureRecordMarks> marks_;
  std::optional<FailureRecordPoller> poller_;
  const std::chrono::seconds failure_grace_;
  const std::chrono::seconds lost_host_grace_;
  const std::vector<HostEntry>& hosts_;
  const int ranks_;  // the attempt's: records of another job size are not its
  std::optional<std::chrono::steady_clock::time_point> first_seen_;
  std::string first_line_;
  std::optional<std::string> lost_host_;
};

// The longest mpirun alone is tried on each of two hosts that ranks named
// unreachable as often each (less when --startup-timeout-s is less): a host
// this side reaches starts `true` in seconds, and the relaunch waits on it.
constexpr std::chrono::seconds kTieProbeLimit(30);

// How long the watchdog waits on the filesystem for the start markers.
constexpr std::chrono::seconds kStartMarkersLimit(5);

// Watches a launch attempt's start (a Watchdog): each rank marks that it
// started under OUT_DIR/started/ATTEMPT before it joins the job
// (RecordRankStarted). Open MPI starts no rank until every host's daemon has
// reported back, and waits for good on one that never does (a dead host, a
// cut link): once `timeout` has passed, a host of `hosts` on which no rank
// has marked its start is named silent, and the reason ends mpirun. Start
// markers that cannot be read end nothing: they only draw a warning.
class StartupWatchdog {
 public:
  // `launcher`: this machine, as a start marker names it (for hostfile
  // lines naming loopback, HostsWithoutStartedRank).
  StartupWatchdog(std::string out_dir, std::string attempt, std::chrono::seconds timeout,
                  const std::vector<HostEntry>& hosts, const StartedRankHost& launcher)
      : out_dir_(std::move(out_dir)),
        attempt_(std::move(attempt)),
        timeout_(timeout),
        hosts_(hosts),
        launcher_(launcher),
        start_(std::chrono::steady_clock::now()) {}

  // Whether the markers show that no rank of the attempt has started yet
  // (false when they are not readable within a second: it cannot tell).
  bool NoRankStartedYet() const {
    const std::optional<std::vector<StartedRank>> ranks =
        StartedRanksWithin(out_dir_, attempt_, std::chrono::seconds(1));
    return ranks && ranks->empty();
  }

  std::optional<std::string> operator()() {
    if (checked_ || std::chrono::steady_clock::now() - start_ < timeout_) return std::nullopt;
    checked_ = true;
    const std::string dir = StartMarkerDir(out_dir_, attempt_);
    const std::optional<std::vector<StartedRank>> ranks =
        StartedRanksWithin(out_dir_, attempt_, kStartMarkersLimit);
    if (!ranks) {
      // Markers that cannot be read say nothing about the hosts: a job
      // that may be training is not ended on that.
      std::cerr << "dropk launch: warning: the start markers in " << dir
                << " could not be read within " << kStartMarkersLimit.count()
                << " s: past --startup-timeout-s=" << timeout_.count()
                << " no host can be named silent, so mpirun keeps running (check that OUT_DIR "
                   "is readable)"
                << std::endl;
      return std::nullopt;
    }
    std::vector<StartedRankHost> started;
    for (const StartedRank& r : *ranks) started.push_back({r.host, r.addresses});
    std::vector<std::string> not_looked_up;
    silent_ = HostsWithoutStartedRank(hosts_, started, launcher_, &not_looked_up);
    if (!not_looked_up.empty()) {
      std::cerr << "dropk launch: warning: the names of host(s) "
                << HostNamesForMessage(not_looked_up) << " could not be looked up within "
                << kHostLookupsLimit.count() / 1000 << " s; no rank names them as written, but "
                << "one may run there under another name, so they are not named silent (check "
                   "DNS)"
                << std::endl;
    }
    if (silent_.empty()) return std::nullopt;
    return absl::StrCat(
        "no rank started on host(s) ", HostNamesForMessage(silent_), " within ", timeout_.count(),
        " s (--startup-timeout-s; no start marker in ", dir,
        "): mpirun likely waits on a daemon there (host down or unreachable); ended mpirun's "
        "process group (mpirun, its local ranks and helpers)");
  }

  // The hosts named silent (empty unless the watchdog ended mpirun).
  const std::vector<std::string>& silent() const { return silent_; }

 private:
  const std::string out_dir_;
  const std::string attempt_;
  const std::chrono::seconds timeout_;
  const std::vector<HostEntry>& hosts_;
  const StartedRankHost launcher_;
  const std::chrono::steady_clock::time_point start_;
  bool checked_ = false;
  std::vector<std::string> silent_;
};

// Refuses, before anything runs, a job that a relaunch on the fewest ranks
// its hosts and --max-restarts allow would stop: the relaunch raises
// gradient_accumulation_steps to keep the global batch, and the trainer
// exits 2 mid-job when that passes its caps (65536 micro-batches a step;
// max_iters x that within 2^32 when dropout masks count micro-batches). A
// config invalid as it stands is left to the trainer to name.
absl::Status CheckRelaunchAccumulation(const TrainConfig& config,
                                       const std::vector<HostEntry>& hosts, int max_restarts) {
  if (!ValidateTrainConfig(config).ok()) return absl::OkStatus();
  const int ranks = RanksOf(hosts);
  const int fewest = FewestRanksAfterRestarts(hosts, max_restarts);
  if (fewest == ranks) return absl::OkStatus();
  const int64_t micro_batches = int64_t{config.gradient_accumulation_steps()} * ranks;
  const int64_t needed = (micro_batches + fewest - 1) / fewest;
  TrainConfig relaunched = config;
  relaunched.set_gradient_accumulation_steps(
      static_cast<int32_t>(std::min<int64_t>(needed, std::numeric_limits<int32_t>::max())));
  const absl::Status valid = ValidateTrainConfig(relaunched);
  if (valid.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--max-restarts=", max_restarts, ": a relaunch may run on as few as ", fewest, " of ", ranks,
      " rank(s), and keeping the global batch (gradient_accumulation_steps ",
      config.gradient_accumulation_steps(), " x ", ranks, " rank(s)) there needs ", needed,
      " micro-batches per rank, which the trainer would refuse mid-job: ", valid.message(),
      "; lower --max-restarts or gradient_accumulation_steps"));
}

// A warning (empty when none) for a job whose global batch some relaunch
// could not keep: the relaunch after a lost host needs the micro-batches of
// a step (gradient_accumulation_steps x ranks) to divide among the ranks
// left, and stops the job, checkpoints kept, where they do not. Not a
// refusal: which host is lost is not known ahead, and a user may accept
// the risk.
std::string IndivisibleRelaunchWarning(const TrainConfig& config,
                                       const std::vector<HostEntry>& hosts, int max_restarts) {
  const int ranks = RanksOf(hosts);
  const int64_t micro_batches = int64_t{config.gradient_accumulation_steps()} * ranks;
  std::vector<std::string> stuck;
  for (const int left : RankCountsAfterLosses(hosts, max_restarts)) {
    if (micro_batches % left != 0) stuck.push_back(std::to_string(left));
  }
  if (stuck.empty()) return "";
  return absl::StrCat("dropk launch: warning: a step's ", micro_batches,
                      " micro-batches (gradient_accumulation_steps ",
                      config.gradient_accumulation_steps(), " x ", ranks,
                      " rank(s)) do not divide among ", absl::StrJoin(stuck, ", "),
                      " rank(s), which lost hosts can leave (--max-restarts=", max_restarts,
                      "); a relaunch there would stop the job (its checkpoints kept) rather than "
                      "change the global batch");
}

// The hosts of `hosts` (their names, in hostfile order) that mpirun cannot
// start a process on: for each at once, `mpirun --hostfile (that host's
// line) -np 1 OPTIONS... true` (`mpirun` and `options` as the job's, in a
// process group of its own, its output dropped), and a host whose run has
// not exited 0 within `limit` (its process group then killed) is one.
// Needed where no rank started anywhere: Open MPI starts no rank until
// every host's daemon has reported, so the job alone cannot tell which
// host held it up. Hostfiles go in `dir`. nullopt when a stop signal came
// first (checked every 100 ms): every probe's process group is killed then.
std::optional<std::vector<std::string>> HostsMpirunCannotStartOn(
    const std::string& mpirun, const std::vector<std::string>& options,
    const std::vector<HostEntry>& hosts, const std::string& dir, std::chrono::seconds limit) {
  std::vector<pid_t> probes(hosts.size(), -1);
  std::vector<bool> started(hosts.size(), false);
  const pid_t launcher = getpid();
  for (size_t i = 0; i < hosts.size(); ++i) {
    const std::string hostfile = absl::StrCat(dir, "/probe-", i);
    std::ofstream(hostfile) << JobHostfileLine(hosts[i]) << "\n";
    std::vector<std::string> argv = {mpirun, "--hostfile", hostfile, "-np", "1"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back("true");
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      const int null = open("/dev/null", O_WRONLY);
      ExecInGroupOfItsOwn(args, launcher, null, null);
    }
    if (pid > 0) setpgid(pid, pid);
    probes[i] = pid;
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  size_t running = std::count_if(probes.begin(), probes.end(), [](pid_t p) { return p > 0; });
  while (running > 0 && std::chrono::steady_clock::now() < deadline && g_signals == 0) {
    for (size_t i = 0; i < hosts.size(); ++i) {
      int status = 0;
      if (probes[i] <= 0 || waitpid(probes[i], &status, WNOHANG) != probes[i]) continue;
      started[i] = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      kill(-probes[i], SIGKILL);  // helpers it left
      probes[i] = -1;
      --running;
    }
    if (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::vector<std::string> cannot;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (probes[i] > 0) {
      kill(-probes[i], SIGKILL);
      while (waitpid(probes[i], nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    if (!started[i]) cannot.push_back(hosts[i].host);
  }
  KillDescendants();  // the probes' helpers outside their groups
  if (g_signals > 0) return std::nullopt;
  return cannot;
}

// LATEST's text in `checkpoints_dir`, "" when there is none (or it cannot
// be read). A run has saved a checkpoint since the launch began when this
// differs from what it was then.
std::string LatestText(const std::string& checkpoints_dir) {
  absl::StatusOr<std::string> text = ReadSmallFile(
      Env::Default(), absl::StrCat(checkpoints_dir, "/", kLatestFileName), kMaxLatestBytes);
  return text.ok() ? *text : std::string();
}

absl::Status Launch(const Flags& flags) {
  // What mpirun leaves orphaned comes to the launcher, which ends it after
  // each attempt (RunAndCapture), instead of to init, where it ran on.
  if (!AdoptOrphansOfDescendants()) {
    std::cerr << "dropk launch: warning: cannot adopt what mpirun leaves orphaned ("
              << std::strerror(errno) << "): helpers it starts outside its process group (ssh "
              << "agents) may outlive an attempt" << std::endl;
  }
  // A hostfile is small: this refuses a directory and /dev/zero (read
  // until memory ran out), naming the path; a pipe (`<(...)`) is read once,
  // and one no program writes to is refused (its read blocked for good).
  absl::StatusOr<std::string> text =
      ReadHostfileText(flags.hostfile, kMaxHostfileBytes, kHostfilePipeQuietLimit);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("--hostfile ", flags.hostfile,
                                                           ": cannot read: ",
                                                           text.status().message()));
  }
  absl::StatusOr<std::vector<HostEntry>> hosts = ParseHostfile(*text, flags.hostfile);
  if (!hosts.ok()) return hosts.status();
  if (absl::Status s = CheckExecutable(flags.mpirun); !s.ok()) return s;
  absl::StatusOr<std::vector<std::string>> mpirun_args = SplitShellWords(flags.mpirun_args);
  if (!mpirun_args.ok()) return mpirun_args.status();
  if (absl::Status s = CheckMpirunArgs(*mpirun_args); !s.ok()) return s;
  // The job's own config, for its gradient_accumulation_steps.
  // From the dropk-train word on: a wrapper before it (`env VAR=1`,
  // `numactl ...`) is mpirun's to run, and its words are no training flags
  // (they were refused as "unexpected argument").
  const auto trainer = std::find_if(flags.command.begin(), flags.command.end(), [](const auto& a) {
    return std::filesystem::path(a).filename() == "dropk-train";
  });
  std::vector<char*> train_argv;
  for (auto a = trainer == flags.command.end() ? flags.command.begin() : trainer;
       a != flags.command.end(); ++a) {
    train_argv.push_back(const_cast<char*>(a->c_str()));
  }
  absl::StatusOr<TrainConfig> config =
      LoadTrainConfig(static_cast<int>(train_argv.size()), train_argv.data());
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the training command's arguments: ", config.status().message()));
  }
  if (absl::Status s = CheckRelaunchAccumulation(*config, *hosts, flags.max_restarts); !s.ok()) {
    return s;
  }
  if (const std::string warning = IndivisibleRelaunchWarning(*config, *hosts, flags.max_restarts);
      !warning.empty()) {
    std::cerr << warning << std::endl;
  }
  const int first_ranks = RanksOf(*hosts);
  const StartedRankHost launcher{ThisHostName(), ThisHostAddresses()};
  if (absl::Status s = CheckLauncherListedOnce(*hosts, launcher, flags.hostfile); !s.ok()) {
    return s;
  }
  const bool user_keepalive = flags.mpirun_args.find("oob_tcp_keepalive") != std::string::npos;
  // The job's hostfile (the user's, less lost hosts) is only read by mpirun
  // here, so it lives in a private temporary directory: beside the user's it
  // could not be written where that is read-only (a Kubernetes ConfigMap).
  absl::StatusOr<JobDir> job_dir = JobDir::Create();
  if (!job_dir.ok()) return job_dir.status();
  const std::string job_hostfile = job_dir->path() + "/hostfile";
  struct sigaction forward = {};
  forward.sa_handler = ForwardSignal;
  sigaction(SIGINT, &forward, nullptr);
  sigaction(SIGTERM, &forward, nullptr);

  // mpirun's options other than the hostfile, the rank count and the attempt id.
  std::vector<std::string> mpirun_options;
  if (!user_keepalive) {
    mpirun_options.insert(mpirun_options.end(), std::begin(kKeepaliveArgs),
                          std::end(kKeepaliveArgs));
  }
  mpirun_options.insert(mpirun_options.end(), mpirun_args->begin(), mpirun_args->end());
  // A relaunch resumes from the newest checkpoint (--resume=latest) once the
  // job has saved one. Before that it runs the command as given: its own
  // --resume=PATH or init_from, which --resume=latest overrode (finding no
  // checkpoint, the job trained from random weights, without a word).
  const std::string checkpoints_dir = CheckpointsDirOf(*config);
  const std::string latest_at_start = LatestText(checkpoints_dir);
  const auto saved_since_start = [&] {
    const std::string latest = LatestText(checkpoints_dir);
    return !latest.empty() && latest != latest_at_start;
  };
  // Why `ranks` ranks cannot take the job on (after `why`: the host lost),
  // checked before "relaunching" is said: it was said, and the next line
  // refused the relaunch with no word of the checkpoints kept.
  const auto relaunch_refused = [&](int ranks, const std::string& why) -> absl::Status {
    absl::StatusOr<int> accumulation =
        AccumulationFor(config->gradient_accumulation_steps(), first_ranks, ranks);
    if (accumulation.ok()) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        why, "; not relaunched: ", accumulation.status().message(), "; the checkpoints in ",
        checkpoints_dir, " are kept: resume on hosts whose slots the micro-batches divide among "
        "(or with another batch_size), with --resume=latest"));
  };
  const auto relaunch_from = [&] {
    return saved_since_start()
               ? std::string("from the newest checkpoint")
               : absl::StrCat("as attempt 1 was (no checkpoint saved yet in ", checkpoints_dir,
                              ": the command's own --resume or init_from, if any, is kept)");
  };
  for (int attempt = 0;; ++attempt) {
    const int ranks = RanksOf(*hosts);
    // Unique per attempt, so that an earlier attempt's start markers do not count.
    const std::string attempt_id = absl::StrCat(
        getpid(), "-", attempt + 1, "-",
        std::chrono::system_clock::now().time_since_epoch() / std::chrono::milliseconds(1));
    std::vector<std::string> argv = {flags.mpirun,
                                     "--hostfile",
                                     job_hostfile,
                                     "-np",
                                     std::to_string(ranks),
                                     "-x",
                                     absl::StrCat(kLaunchAttemptEnv, "=", attempt_id)};
    argv.insert(argv.end(), mpirun_options.begin(), mpirun_options.end());
    argv.insert(argv.end(), flags.command.begin(), flags.command.end());
    if (attempt > 0) {
      absl::StatusOr<int> accumulation =
          AccumulationFor(config->gradient_accumulation_steps(), first_ranks, ranks);
      if (!accumulation.ok()) return accumulation.status();
      if (saved_since_start()) argv.push_back("--resume=latest");
      argv.push_back(absl::StrCat("--gradient_accumulation_steps=", *accumulation));
    }
    {
      std::ofstream out(job_hostfile, std::ios::trunc);
      for (const HostEntry& h : *hosts) out << JobHostfileLine(h) << "\n";
      if (!out) return absl::PermissionDeniedError(absl::StrCat(job_hostfile, ": cannot write"));
    }
    std::cerr << "dropk launch: attempt " << attempt + 1 << ": " << absl::StrJoin(argv, " ")
              << std::endl;
    const std::optional<FailureRecordMarks> marks =
        MarkFailureRecordsWithin(config->out_dir(), kFailureRecordsLimit);
    FailureWatchdog watchdog(config->out_dir(), marks, std::chrono::seconds(flags.failure_grace_s),
                             std::chrono::seconds(flags.lost_host_grace_s), *hosts);
    StartupWatchdog startup(config->out_dir(), attempt_id,
                            std::chrono::seconds(flags.startup_timeout_s), *hosts, launcher);
    bool signal_seen = false;
    bool stopped_before_any_rank = false;
    absl::StatusOr<RunResult> run = RunAndCapture(argv, [&]() -> std::optional<std::string> {
      // mpirun passes the stop signal to the ranks, but where none has
      // started it waits on the hosts' daemons as before (up to
      // --startup-timeout-s): no rank has anything to save, so it goes now.
      if (g_signals > 0 && !signal_seen) {
        signal_seen = true;
        if (startup.NoRankStartedYet()) {
          stopped_before_any_rank = true;
          return std::string(
              StoppedBySignal(absl::StrCat("before any rank of attempt ", attempt + 1,
                                           " started (no start marker in ",
                                           StartMarkerDir(config->out_dir(), attempt_id),
                                           "); ended mpirun's process group"))
                  .message());
        }
      }
      if (std::optional<std::string> reason = startup()) return reason;
      return watchdog();
    });
    // Read before the markers go: a stop signal that came after the startup
    // watchdog ended mpirun (while its output drained) found no rank to save.
    const bool no_rank_started = startup.NoRankStartedYet();
    RemoveStartMarkersWithin(config->out_dir(), attempt_id, kStartMarkersLimit);
    if (!run.ok()) return run.status();
    const int code = run->code;
    // "mpirun exit status N", or that the watchdog ended it.
    const std::string ended = run->ended_by_watchdog.empty()
                                  ? absl::StrCat("mpirun exit status ", code)
                                  : std::string("mpirun killed by dropk launch past its grace");
    const std::optional<std::vector<std::string>> records =
        FailureRecordsOf(config->out_dir(), marks, ranks);
    const std::string reported = FirstFailureReported(config->out_dir(), records);
    if (code == kExitStopped && run->ended_by_watchdog.empty()) {
      // The ranks saved and stopped on a signal (forwarded from here, or
      // sent to them by a scheduler): not finished, and not a failure to
      // relaunch on. Exit 75 too (Cancelled), so that whatever started the
      // launcher sees the same.
      return StoppedAfterSaving(g_first_signal.load());
    }
    if (stopped_before_any_rank) return absl::CancelledError(run->ended_by_watchdog);
    if (g_signals > 0) {
      if (code == 0) return absl::OkStatus();
      // Nothing ran, nothing to lose: stopped (exit 75), not the watchdog's
      // failure (exit 1), which a scheduler would not resume.
      if (no_rank_started) {
        return StoppedBySignal(absl::StrCat(
            "before any rank of attempt ", attempt + 1, " started",
            run->ended_by_watchdog.empty() ? "" : " (mpirun had been ended: ",
            run->ended_by_watchdog, run->ended_by_watchdog.empty() ? "" : ")"));
      }
      // The watchdog's reason says why mpirun went (past a grace).
      return absl::AbortedError(
          run->ended_by_watchdog.empty()
              ? absl::StrCat("stopped by a signal (mpirun exit status ", code, ")")
              : run->ended_by_watchdog);
    }
    if (!run->ended_by_watchdog.empty()) {
      std::cerr << "dropk launch: " << run->ended_by_watchdog << std::endl;
    }
    // A lost host named in mpirun's output, else in the records (mpirun
    // ended by the watchdog printed no report of its own).
    std::string evidence = run->output;
    if (records) absl::StrAppend(&evidence, "\n", absl::StrJoin(*records, "\n"));
    if (code == 0) {
      std::cerr << "dropk launch: the job finished on " << hosts->size() << " host(s) after "
                << attempt << " restart(s)" << std::endl;
      return absl::OkStatus();
    }
    // mpirun could not start its daemon on some host (ssh refused, a name
    // that does not resolve: it fails at once) and no rank started: as when
    // every host stays silent, mpirun on each host alone tells which. It
    // said "the job failed ... without losing a host; not restarting".
    const bool daemons_failed =
        startup.silent().empty() && no_rank_started && hosts->size() > 1 &&
        run->output.find(kDaemonsNotStarted) != std::string::npos;
    if (!startup.silent().empty() || daemons_failed) {
      std::vector<std::string> silent = startup.silent();
      std::string named =
          absl::StrCat("no rank started on host(s) ", HostNamesForMessage(silent), " within ",
                       flags.startup_timeout_s, " s (--startup-timeout-s)");
      if (daemons_failed) {
        for (const HostEntry& h : *hosts) silent.push_back(h.host);
        named = absl::StrCat("mpirun could not start on every host (", ended, ", \"",
                             kDaemonsNotStarted, "\"; no rank started)");
      }
      if (silent.size() == hosts->size()) {
        // None started anywhere: the hosts mpirun alone cannot start on are
        // the ones that held the job up.
        std::cerr << "dropk launch: " << named << "; trying mpirun on each host alone (at most "
                  << flags.startup_timeout_s << " s)" << std::endl;
        const std::optional<std::vector<std::string>> cannot =
            HostsMpirunCannotStartOn(flags.mpirun, mpirun_options, *hosts, job_dir->path(),
                                     std::chrono::seconds(flags.startup_timeout_s));
        if (!cannot) {
          return StoppedBySignal(
              "while trying mpirun on each host alone (no rank had started within "
              "--startup-timeout-s); ended those mpirun runs' process groups");
        }
        silent = *cannot;
        if (silent.empty() || silent.size() == hosts->size()) {
          return absl::AbortedError(
              absl::StrCat(named, "; mpirun alone could start on ",
                           silent.empty() ? "every one of them, so no host is to blame"
                                          : "none of them, so none of the job's hosts is left",
                           "; check that mpirun reaches each (ssh, firewall) and that OUT_DIR ",
                           config->out_dir(), " is shared by all"));
        }
        named = absl::StrCat(named, "; mpirun alone cannot start on host(s) ",
                             HostNamesForMessage(silent), " either");
      }
      if (attempt >= flags.max_restarts) {
        return absl::AbortedError(absl::StrCat(named, ", and --max-restarts=", flags.max_restarts,
                                               " restart(s) are used up"));
      }
      std::erase_if(*hosts, [&](const HostEntry& h) {
        return std::find(silent.begin(), silent.end(), h.host) != silent.end();
      });
      if (absl::Status s = relaunch_refused(RanksOf(*hosts), named); !s.ok()) return s;
      std::cerr << "dropk launch: restart " << attempt + 1 << " of at most " << flags.max_restarts
                << ": " << named << "; relaunching on " << hosts->size() << " host(s), "
                << RanksOf(*hosts) << " rank(s), " << relaunch_from() << std::endl;
      continue;
    }
    const std::vector<std::string> named_lost = HostsNamedLost(evidence, *hosts);
    if (named_lost.empty()) {
      const std::string why = absl::StrCat("the job failed (", ended,
                                           ") without losing a host; not restarting", reported);
      // The job's own usage error (exit 2: a bad flag or config value) stays a
      // usage error, so `dropk launch` exits 2 as dropk-train would.
      return code == kExitUsage ? absl::InvalidArgumentError(why) : absl::AbortedError(why);
    }
    if (attempt >= flags.max_restarts) {
      return absl::AbortedError(absl::StrCat(
          named_lost.size() == 1 ? absl::StrCat("host ", named_lost.front())
                                 : absl::StrCat("one of hosts ", HostNamesForMessage(named_lost),
                                                " (named unreachable as often each)"),
          " lost (", ended, "), and --max-restarts=", flags.max_restarts, " restart(s) are used up",
          reported));
    }
    // A cut link between two hosts names each unreachable once: mpirun
    // alone, from here, tells which of them this side can still reach.
    std::vector<std::string> unanswering;
    const int probe_s = std::min<int>(flags.startup_timeout_s, kTieProbeLimit.count());
    if (named_lost.size() > 1) {
      std::vector<HostEntry> tied;
      std::copy_if(hosts->begin(), hosts->end(), std::back_inserter(tied), [&](const HostEntry& h) {
        return std::find(named_lost.begin(), named_lost.end(), h.host) != named_lost.end();
      });
      std::cerr << "dropk launch: the ranks named hosts " << HostNamesForMessage(named_lost)
                << " unreachable as often each; trying mpirun on each of them alone (at most "
                << probe_s << " s)" << std::endl;
      const std::optional<std::vector<std::string>> cannot = HostsMpirunCannotStartOn(
          flags.mpirun, mpirun_options, tied, job_dir->path(), std::chrono::seconds(probe_s));
      if (!cannot) {
        return StoppedBySignal(absl::StrCat("while trying mpirun on hosts ",
                                            HostNamesForMessage(named_lost),
                                            " alone (to tell which one is lost); ended those "
                                            "mpirun runs' process groups"));
      }
      unanswering = *cannot;
    }
    const LostHostChoice choice = BreakLostHostTie(named_lost, unanswering, probe_s);
    const std::string& lost = *choice.host;
    std::erase_if(*hosts, [&](const HostEntry& h) { return h.host == lost; });
    if (hosts->empty()) return absl::AbortedError(absl::StrCat("host ", lost, " lost: none left"));
    if (absl::Status s =
            relaunch_refused(RanksOf(*hosts), absl::StrCat("host ", lost, " lost (", ended, ")"));
        !s.ok()) {
      return s;
    }
    std::cerr << "dropk launch: restart " << attempt + 1 << " of at most " << flags.max_restarts
              << ": host " << lost << " lost (" << ended << (choice.reason.empty() ? "" : "; ")
              << choice.reason << "); relaunching on " << hosts->size() << " host(s), "
              << RanksOf(*hosts) << " rank(s), " << relaunch_from() << reported << std::endl;
  }
}

}  // namespace

void RegisterLaunchCommand(CLI::App& app, std::function<absl::Status()>& action) {
  CLI::App* launch = app.add_subcommand(
      "launch",
      "Run a training job with mpirun over a hostfile; when a host is lost, drop it and resume "
      "from the newest checkpoint on the rest, keeping the global batch");
  auto flags = std::make_shared<Flags>();
  launch->add_option("--hostfile", flags->hostfile, "Open MPI hostfile: HOST [slots=N] per line")
      ->required();
  launch->add_option("--max-restarts", flags->max_restarts, "Relaunches after lost hosts")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  launch->add_option("--mpirun", flags->mpirun, "The mpirun to run")->capture_default_str();
  launch->add_option("--mpirun-args", flags->mpirun_args,
                     "Extra mpirun options, split like a shell would (quotes allowed)");
  launch
      ->add_option("--failure-grace-s", flags->failure_grace_s,
                   "Seconds mpirun may run on after a rank recorded a fatal error in "
                   "OUT_DIR/failures before its process group is killed")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  launch
      ->add_option("--lost-host-grace-s", flags->lost_host_grace_s,
                   "The same when the record names a host lost (mpirun would wait on its "
                   "daemon); the job is then relaunched without that host")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  launch
      ->add_option("--startup-timeout-s", flags->startup_timeout_s,
                   "Seconds every host has for one of its ranks to start (mark it under "
                   "OUT_DIR/started); past it mpirun's process group is killed and the job "
                   "relaunched without the hosts on which none did")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  launch->add_option("command", flags->command, "-- dropk-train ARGS: the job")->required();
  launch->callback([&action, flags] { action = [flags] { return Launch(*flags); }; });
}

}  // namespace dropk
