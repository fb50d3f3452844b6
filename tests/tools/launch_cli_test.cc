// `dropk launch` on this machine (no lost hosts here: tests/cluster/ covers
// those): bad inputs are refused naming the culprit, a job that fails for a
// reason other than a lost host is not restarted, and SIGTERM reaches the
// ranks as a request to save and stop (the launch then exits 75, stopped).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/subprocess.h"
#include "trainer/prepare_data.h"

namespace dropk {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class LaunchCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per test: ctest may run them in parallel.
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("dropk_launch_cli_") +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "hosts") << "# this machine\nlocalhost slots=2\n";
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Dropk() const { return DROPK_BINARY_DIR "/bin/dropk"; }
  std::string TrainArgs(const std::string& extra) const {
    return std::string(DROPK_BINARY_DIR "/bin/dropk-train --config " DROPK_SOURCE_DIR
                                        "/configs/tiny_smoke.textproto --data_dir=") +
           (dir_ / "data").string() + " --out_dir=" + (dir_ / "run").string() +
           " --num_threads=1 --sample_tokens=0 " + extra;
  }
  // A stand-in for mpirun (for --mpirun), written to dir_/`name`: a shell
  // script that reads its -np into $np, --hostfile into $hostfile, -x
  // DROPK_LAUNCH_ATTEMPT=ID into $attempt and the job's --out_dir into $out,
  // then runs `body`.
  std::string StandInMpirun(const std::string& name, const std::string& body) {
    const std::filesystem::path path = dir_ / name;
    std::ofstream(path) << "#!/bin/sh\n"
                           "np= out= attempt= hostfile= prev=\n"
                           "for a in \"$@\"; do\n"
                           "  case \"$a\" in --out_dir=*) out=${a#--out_dir=};; esac\n"
                           "  [ \"$prev\" = -np ] && np=$a\n"
                           "  [ \"$prev\" = --hostfile ] && hostfile=$a\n"
                           "  [ \"$prev\" = -x ] && attempt=${a#DROPK_LAUNCH_ATTEMPT=}\n"
                           "  prev=$a\n"
                           "done\n"
                        << body;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    return path.string();
  }
  // For a StandInMpirun body: run with -np 1 (the relaunch on one host),
  // keep the hostfile given in OUT_DIR/relaunch-hosts and exit 0.
  static constexpr char kKeepTheRelaunchHostfile[] =
      "if [ \"$np\" = 1 ]; then mkdir -p \"$out\"; cp \"$hostfile\" \"$out/relaunch-hosts\"; "
      "exit 0; fi\n";
  // For a StandInMpirun body: the last argument in $last ("true" for the
  // launcher's runs of mpirun on one host alone).
  static constexpr char kLastArgument[] = "for last in \"$@\"; do :; done\n";
  // For a StandInMpirun body: what the ranks of 127.0.0.1 and 127.0.0.2
  // print when the link between them is cut (each names the other), and
  // mpirun's exit.
  static constexpr char kCutLinkBetweenTwoHosts[] =
      "echo 'rank 1 of 2: AllReduce #3: rank 0 (127.0.0.1) is unreachable (...)' >&2\n"
      "echo 'rank 0 of 2: AllReduce #3: rank 1 (127.0.0.2) is unreachable (...)' >&2\n"
      "exit 1\n";
  // A stand-in for mpirun that records `record` as rank 0's failure in the
  // job's --out_dir, starts a helper (its pid in OUT_DIR/helper.pid, its
  // own in OUT_DIR/mpirun.pid) and then hangs, as mpirun does when it waits
  // on a daemon; run with -np 1 it exits 0 at once.
  std::string HangingMpirun(const std::string& record) {
    return StandInMpirun("hanging-mpirun",
                         "[ \"$np\" = 1 ] && exit 0\n"
                         "mkdir -p \"$out/failures\"\n"
                         "echo $$ > \"$out/mpirun.pid\"\n"
                         "echo \"2026-12-02T00:00:00.000Z host h0 pid 1: rank 0 of 2: " +
                             record +
                             "\" >> \"$out/failures/rank-00000.log\"\n"
                             "sleep 3600 &\n"
                             "echo $! > \"$out/helper.pid\"\n"
                             "wait\n");
  }
  // Whether process `pid` has ended (gone, or a zombie no one reaped yet).
  static bool Ended(pid_t pid) {
    const std::string stat = test_util::ReadFile("/proc/" + std::to_string(pid) + "/stat");
    const size_t paren = stat.rfind(')');
    return stat.empty() || (paren != std::string::npos && stat.substr(paren + 2, 1) == "Z");
  }
  // Waits up to `limit` for `text` in file `log`; false if it did not come.
  static bool WaitForText(const std::string& log, const std::string& text, seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (test_util::ReadFile(log).find(text) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return true;
  }
  // The pids listed one a line in file `path`.
  static std::vector<pid_t> PidsIn(const std::string& path) {
    std::vector<pid_t> pids;
    std::istringstream in(test_util::ReadFile(path));
    for (pid_t pid; in >> pid;) pids.push_back(pid);
    return pids;
  }
  // Waits up to `limit` for at least `count` pids in file `path`; false if
  // they did not come.
  static bool WaitForPids(const std::string& path, size_t count, seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (PidsIn(path).size() < count) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return true;
  }
  test_util::CommandResult Launch(const std::string& args) {
    return test_util::RunCommand(Dropk() + " launch " + args);
  }
  std::filesystem::path dir_;
};

TEST_F(LaunchCliTest, BadInputsAreRefusedNamingThem) {
  test_util::CommandResult r = Launch("--hostfile " + (dir_ / "missing").string() + " -- true");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--hostfile " + (dir_ / "missing").string() + ": cannot read"),
            std::string::npos)
      << r.err;

  std::ofstream(dir_ / "bad") << "a slots=x\n";
  r = Launch("--hostfile " + (dir_ / "bad").string() + " -- true");
  EXPECT_NE(r.err.find("bad:1: slots=x must be a whole number >= 1"), std::string::npos) << r.err;

  r = Launch("--hostfile " + (dir_ / "hosts").string() + " --mpirun-args '\"unbalanced' -- true");
  EXPECT_NE(r.err.find("--mpirun-args \"\"unbalanced\": cannot split"), std::string::npos) << r.err;

  r = Launch("--hostfile " + (dir_ / "hosts").string() + " -- " + TrainArgs("--n_layer=0"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("n_layer=0"), std::string::npos) << r.err;
}

// localhost and this machine's name are one machine to Open MPI: refused
// before mpirun runs (`echo` stands in for it), naming both lines.
TEST_F(LaunchCliTest, ThisMachineListedTwiceIsRefused) {
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  std::ofstream(dir_ / "twice") << "localhost slots=1\n" << host << " slots=1\n";
  const test_util::CommandResult r = Launch("--hostfile " + (dir_ / "twice").string() +
                                            " --mpirun echo -- " + TrainArgs(""));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("lines 'localhost slots=1' and '" + std::string(host) +
                       " slots=1' both name this machine"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.out.find("dropk-train"), std::string::npos) << "mpirun ran:\n" << r.out;
}

// A relaunch on fewer ranks raises gradient_accumulation_steps to keep the
// global batch; past the trainer's caps the relaunched job exited 2 mid-run
// (and the first attempt had trained for nothing). It is refused before
// mpirun runs (`echo` stands in for it: it would exit 0).
// An -np in --mpirun-args won over the launcher's (mpirun takes the last):
// the job ran 1 rank where the launcher counted 2 for the relaunch's batch.
TEST_F(LaunchCliTest, AnMpirunOptionTheLauncherSetsIsRefused) {
  const std::string mpirun = StandInMpirun("ok-mpirun", "exit 0\n");
  const test_util::CommandResult r = Launch(
      "--hostfile " + (dir_ / "hosts").string() + " --mpirun " + mpirun +
      " --mpirun-args '--oversubscribe -np 1' -- dropk-train --out_dir=" + (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("dropk: --mpirun-args: -np sets the rank count, which dropk launch sets"),
            std::string::npos)
      << r.err;
}

TEST_F(LaunchCliTest, ARelaunchPastTheAccumulationCapsIsRefusedUpFront) {
  std::ofstream(dir_ / "two") << "h1 slots=1\nh2 slots=1\n";
  const std::string launch = "--hostfile " + (dir_ / "two").string() + " --mpirun echo ";
  test_util::CommandResult r =
      Launch(launch + "-- dropk-train --gradient_accumulation_steps=40000");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("--max-restarts=3: a relaunch may run on as few as 1 of 2 rank(s)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("gradient_accumulation_steps=80000: must be at most 65536"),
            std::string::npos)
      << r.err;
  // max_iters x the raised accumulation past 2^32 with PER_RANK dropout.
  r = Launch(launch +
             "-- dropk-train --gradient_accumulation_steps=1000 --max_iters=3000000 "
             "--lr_decay_iters=3000000 --dropout=0.1 --dropout_stream=per_rank");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("max_iters=3000000 x gradient_accumulation_steps=2000"), std::string::npos)
      << r.err;
  // Without restarts, or with a job that fits on one rank, it launches.
  r = Launch("--max-restarts 0 " + launch + "-- dropk-train --gradient_accumulation_steps=40000");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Launch(launch + "-- dropk-train --gradient_accumulation_steps=32768");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// A relaunch keeps the global batch only where a step's micro-batches divide
// among the ranks left; where some loss would leave a count they do not
// divide among, the job still launches, with a warning naming that count.
TEST_F(LaunchCliTest, AGlobalBatchSomeLossCannotKeepIsWarnedOfButLaunched) {
  std::ofstream(dir_ / "uneven") << "h1 slots=2\nh2 slots=1\n";
  const std::string launch = "--hostfile " + (dir_ / "uneven").string() + " --mpirun echo ";
  // 1 x 3 micro-batches: losing h2 leaves 2 ranks, which 3 does not divide
  // among; losing h1 leaves 1, which it does.
  test_util::CommandResult r = Launch(launch + "-- dropk-train --gradient_accumulation_steps=1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: a step's 3 micro-batches (gradient_accumulation_steps 1 x 3 "
                       "rank(s)) do not divide among 2 rank(s)"),
            std::string::npos)
      << r.err;
  // 2 x 3 = 6 divide among 1 and 2.
  r = Launch(launch + "-- dropk-train --gradient_accumulation_steps=2");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
}

// A loss the global batch cannot survive (3 micro-batches on the 2 ranks
// left) said "relaunching on 1 host(s), 2 rank(s)" and then refused the
// relaunch, with no word of the checkpoints kept. Now one line, no
// "relaunching".
TEST_F(LaunchCliTest, ALossTheGlobalBatchCannotSurviveSaysSoWithoutRelaunching) {
  std::ofstream(dir_ / "uneven") << "127.0.0.1 slots=2\n127.0.0.2 slots=1\n";
  const std::string mpirun = StandInMpirun(
      "losing-mpirun",
      "echo 'rank 0 of 3: AllReduce #3: rank 2 (127.0.0.2) is unreachable (...)' >&2\nexit 1\n");
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "uneven").string() + " --mpirun " + mpirun +
             " -- dropk-train --gradient_accumulation_steps=1 --out_dir=" +
             (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err.find("relaunching"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("dropk: host 127.0.0.2 lost (mpirun exit status 1); not relaunched: "
                       "cannot keep the global batch on 2 rank(s): gradient_accumulation_steps 1 "
                       "x 3 rank(s) = 3 micro-batches per step does not divide among them; the "
                       "checkpoints in " +
                       (dir_ / "run" / "checkpoints").string() + " are kept"),
            std::string::npos)
      << r.err;
}

// An mpirun deaf to signals (busy starting hundreds of ranks, here one that
// ignores them) kept the launcher running after any number of Ctrl-Cs. The
// third kills mpirun's process group.
TEST_F(LaunchCliTest, AThirdStopSignalKillsAnMpirunDeafToTheFirstTwo) {
  const std::string pids = (dir_ / "mpirun.pid").string();
  const std::string mpirun = StandInMpirun(
      "deaf-mpirun", "trap '' USR1 TERM INT\n"
                     "mkdir -p \"$out/started/$attempt\"\n"  // a rank started: a stop saves
                     "echo localhost > \"$out/started/$attempt/rank-00000\"\n"
                     "echo $$ > " + pids + "\nwhile :; do sleep 1; done\n");
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job({Dropk(), "launch", "--hostfile", (dir_ / "hosts").string(),
                               "--mpirun", mpirun, "--", "dropk-train",
                               "--out_dir=" + (dir_ / "run").string()},
                              log);
  WaitForPids(pids, 1, seconds(30));
  ASSERT_EQ(PidsIn(pids).size(), 1u) << test_util::ReadFile(log);
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(kill(job.pid(), SIGTERM), 0);
    std::this_thread::sleep_for(milliseconds(1500));  // past the launcher's 1 s checks
  }
  EXPECT_FALSE(Ended(PidsIn(pids).front())) << "the stand-in should ignore the first two";
  ASSERT_EQ(kill(job.pid(), SIGTERM), 0);
  const auto third = std::chrono::steady_clock::now();
  const std::optional<int> code = job.WaitFor(seconds(30));
  const bool stand_in_ended = Ended(PidsIn(pids).front());
  kill(PidsIn(pids).front(), SIGKILL);  // it ignores every other signal
  ASSERT_TRUE(code.has_value()) << test_util::ReadFile(log);
  EXPECT_LT(std::chrono::steady_clock::now() - third, seconds(10)) << test_util::ReadFile(log);
  EXPECT_TRUE(stand_in_ended);
  EXPECT_NE(*code, 0) << test_util::ReadFile(log);
}

// Open MPI's ssh agents run in process groups of their own: killing
// mpirun's group missed them, and once mpirun ended they were init's and
// ran on after the launcher. What an attempt leaves is ended with it.
TEST_F(LaunchCliTest, WhatMpirunLeavesOutsideItsGroupIsEndedWithTheAttempt) {
  const std::string agent_pid = (dir_ / "agent.pid").string();
  const std::string mpirun = StandInMpirun(
      "agent-leaving-mpirun",
      "setsid sh -c 'echo $$ > " + agent_pid + "; exec sleep 3600' </dev/null >/dev/null 2>&1 &\n"
      "while [ ! -s " + agent_pid + " ]; do sleep 0.05; done\n"
      "echo 'rank 0 of 2: a failure naming no host' >&2\n"
      "exit 1\n");
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "hosts").string() + " --mpirun " + mpirun +
             " -- dropk-train --out_dir=" + (dir_ / "run").string());
  ASSERT_EQ(PidsIn(agent_pid).size(), 1u) << r.err;
  const pid_t agent = PidsIn(agent_pid).front();
  const bool agent_ended = Ended(agent);
  if (!agent_ended) kill(agent, SIGKILL);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(agent_ended) << "the agent outlived the launcher; " << r.err;
}

// A wrapper before dropk-train (`env VAR=1 dropk-train ...`) was refused:
// its words were read as training flags ("unexpected argument
// 'OMP_NUM_THREADS=1'"). The flags are read from the dropk-train word on,
// and mpirun runs the command as given; a bad flag after it is still named.
TEST_F(LaunchCliTest, AWrapperBeforeTheTrainerIsRunAsGiven) {
  const std::string launch = "--hostfile " + (dir_ / "hosts").string() + " --mpirun echo -- ";
  test_util::CommandResult r =
      Launch(launch + "env OMP_NUM_THREADS=1 /opt/bin/dropk-train --out_dir=" +
             (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(" env OMP_NUM_THREADS=1 /opt/bin/dropk-train --out_dir="), std::string::npos)
      << r.out;
  r = Launch(launch + "env OMP_NUM_THREADS=1 dropk-train --no_such_flag=1");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--no_such_flag"), std::string::npos) << r.err;
}

// A missing mpirun printed the child's "cannot run", then "the job failed
// (mpirun exit status 127) without losing a host", and exited 1.
TEST_F(LaunchCliTest, AMissingMpirunIsOneLineNamingTheFlag) {
  for (const std::string& mpirun : {std::string("/nonexistent/mpirun"),
                                    std::string("no-such-mpirun-here")}) {
    const test_util::CommandResult r = Launch("--hostfile " + (dir_ / "hosts").string() +
                                              " --mpirun " + mpirun + " -- " + TrainArgs(""));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err.rfind("dropk: --mpirun " + mpirun + ": ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// The job's hostfile was written beside the user's: a hostfile in a
// read-only place (a Kubernetes ConfigMap, /etc) failed every launch with
// "HOSTFILE.dropk-launch-PID: cannot write".
TEST_F(LaunchCliTest, AHostfileInAReadOnlyDirectoryIsUsable) {
  std::filesystem::create_directories(dir_ / "ro");
  std::ofstream(dir_ / "ro" / "hosts") << "localhost slots=2\n";
  std::filesystem::permissions(dir_ / "ro", std::filesystem::perms::owner_read |
                                                std::filesystem::perms::owner_exec |
                                                std::filesystem::perms::others_read |
                                                std::filesystem::perms::others_exec);
  // Root writes anywhere: the command then runs as nobody.
  const std::string as =
      ::geteuid() != 0 ? "" : "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  if (!as.empty() && std::system("command -v setpriv > /dev/null") != 0) {
    GTEST_SKIP() << "running as root without setpriv: cannot make a directory read-only";
  }
  // `echo` stands in for mpirun: it prints the arguments it was given.
  const test_util::CommandResult r = test_util::RunCommand(
      as + Dropk() + " launch --hostfile " + (dir_ / "ro" / "hosts").string() +
      " --mpirun echo -- dropk-train");
  std::filesystem::permissions(dir_ / "ro", std::filesystem::perms::owner_all);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(" -np 2 "), std::string::npos) << r.out;
  // The job's hostfile is gone with its directory once the job ends.
  const size_t at = r.out.find("--hostfile ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string job_hostfile = r.out.substr(at + 11, r.out.find(' ', at + 11) - at - 11);
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(job_hostfile).parent_path()))
      << job_hostfile;
}

// The range check printed DBL_MAX in full: a 300-digit line.
TEST_F(LaunchCliTest, ANegativeMaxRestartsIsAShortUsageError) {
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "hosts").string() + " --max-restarts -1 -- true");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--max-restarts"), std::string::npos) << r.err;
  EXPECT_LT(r.err.size(), 160u) << r.err;
}

// --hostfile /dev/zero read until memory ran out; a directory "listed no
// host".
TEST_F(LaunchCliTest, AHostfileThatIsNotASmallRegularFileIsRefused) {
  for (const std::string& path : {std::string("/dev/zero"), dir_.string()}) {
    const test_util::CommandResult r =
        test_util::RunCommand("ulimit -v 4000000; " + Dropk() + " launch --hostfile " + path +
                              " -- true");
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("--hostfile " + path + ": cannot read: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << r.err;
  }
}

// `--hostfile <(...)` (a hostfile a command prints) was refused as "not a
// regular file": it is read once and mpirun is given its own copy.
TEST_F(LaunchCliTest, AHostfileFromAPipeIsReadOnce) {
  const test_util::CommandResult r = test_util::RunCommand(
      "bash -c \"" + Dropk() + " launch --hostfile <(printf 'localhost slots=3\\n') --mpirun echo "
      "-- dropk-train --out_dir=" + (dir_ / "run").string() + "\"");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(" -np 3 "), std::string::npos) << r.out;
}

TEST_F(LaunchCliTest, AFailureWithoutALostHostIsNotRestarted) {
  // The data directory does not exist: every rank fails the same way.
  test_util::CommandResult r = Launch("--hostfile " + (dir_ / "hosts").string() +
                                      " --mpirun-args --oversubscribe -- " + TrainArgs(""));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("without losing a host; not restarting"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("attempt 2"), std::string::npos) << r.err;
  // Its last line names the cause, from the ranks' failure records, so it
  // need not be dug out of every rank's output above it.
  const size_t last_line = r.err.rfind("dropk: ");
  ASSERT_NE(last_line, std::string::npos) << r.err;
  const std::string last = r.err.substr(last_line);
  EXPECT_NE(last.find("first failure a rank reported (" + (dir_ / "run").string() + "/failures): "),
            std::string::npos)
      << r.err;
  EXPECT_NE(last.find((dir_ / "data").string()), std::string::npos) << r.err;
}

TEST_F(LaunchCliTest, OnlyThisAttemptsFailuresAreReported) {
  // An earlier run's record in the same run directory is not this one's cause.
  std::filesystem::create_directories(dir_ / "run" / "failures");
  std::ofstream(dir_ / "run" / "failures" / "rank-00000.log")
      << "2020-01-01T00:00:00Z host old pid 1: rank 0 of 2: an earlier failure\n";
  test_util::CommandResult r = Launch("--hostfile " + (dir_ / "hosts").string() +
                                      " --mpirun-args --oversubscribe -- " + TrainArgs(""));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.find("an earlier failure"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("first failure a rank reported"), std::string::npos) << r.err;
}

TEST_F(LaunchCliTest, SigtermMakesTheRanksSaveAndStop) {
  PrepareOptions prepare;
  prepare.inputs = {DROPK_SOURCE_DIR "/data/tinyshakespeare.txt"};
  prepare.out_dir = (dir_ / "data").string();
  ASSERT_TRUE(PrepareData(prepare).ok());
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job(
      {"/bin/sh", "-c",
       "exec " + Dropk() + " launch --hostfile " + (dir_ / "hosts").string() +
           " --mpirun-args --oversubscribe -- " +
           TrainArgs("--max_iters=1000000 --lr_decay_iters=1000000 --eval_interval=1000000 "
                     "--log_interval=1")},
      log);
  const auto start = std::chrono::steady_clock::now();
  while (test_util::ReadFile(log).find("step 3/") == std::string::npos) {
    ASSERT_FALSE(job.WaitFor(milliseconds(100)).has_value()) << test_util::ReadFile(log);
    ASSERT_LT(std::chrono::steady_clock::now() - start, seconds(60)) << test_util::ReadFile(log);
  }
  ASSERT_EQ(kill(job.pid(), SIGTERM), 0);
  const std::optional<int> code = job.WaitFor(seconds(60));
  ASSERT_TRUE(code.has_value()) << "dropk launch still running 60 s after SIGTERM";
  const std::string text = test_util::ReadFile(log);
  // Stopped, not done (it was 0, and a scheduler took the run for finished),
  // said once, and not relaunched.
  EXPECT_EQ(*code, 75) << text;
  EXPECT_NE(text.find("stopped by signal after step"), std::string::npos) << text;
  const std::string stopped =
      "dropk: stopped by SIGTERM: the ranks saved a checkpoint (unless they had not trained a "
      "step yet) and exited 75; resume with this dropk launch command and --resume=latest\n";
  const size_t at = text.find(stopped);
  EXPECT_NE(at, std::string::npos) << text;
  EXPECT_EQ(text.find("dropk: stopped", at + 1), std::string::npos) << text;
  EXPECT_EQ(text.find("attempt 2"), std::string::npos) << text;
  EXPECT_TRUE(std::filesystem::exists(dir_ / "run" / "checkpoints" / "LATEST"));
}

// Ranks stopped by a signal the launcher never got (a preempted MPIJob
// worker passes SIGTERM to its ranks as SIGUSR1; a scheduler may signal the
// ranks) exit 75 through mpirun: the launch ended "the job failed (mpirun
// exit status 75) ... not restarting", exit 1. It now ends stopped, 75,
// without a relaunch.
TEST_F(LaunchCliTest, RanksStoppedByASignalOfTheirOwnEndTheLaunchStopped) {
  const std::string mpirun = StandInMpirun(
      "stopped-mpirun",
      "echo run >> \"$out.attempts\"\n"
      "echo 'dropk-train: stopped by signal after step 7, checkpoint saved; resume with "
      "--resume=latest' >&2\n"
      "exit 75\n");
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "hosts").string() + " --mpirun " + mpirun +
             " -- dropk-train --out_dir=" + (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 75) << r.err;
  EXPECT_NE(r.err.find("dropk: stopped by a signal to the ranks: the ranks saved a checkpoint"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("not restarting"), std::string::npos) << r.err;
  EXPECT_EQ(test_util::ReadFile((dir_ / "run").string() + ".attempts"), "run\n");
}

// A rank that recorded a fatal error has ended the job, yet mpirun can hang
// on (a daemon it waits for): `dropk launch` waited with it for good. Past
// --failure-grace-s it kills mpirun's process group, helpers included, and
// ends naming the grace and the rank's record.
TEST_F(LaunchCliTest, AnMpirunHangingAfterARanksFailureIsKilledAfterTheGrace) {
  const std::string mpirun = HangingMpirun(
      "AllReduce #3 on rank 0 did not complete within 5 s: another rank is not taking part");
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job(
      {Dropk(), "launch", "--hostfile", (dir_ / "hosts").string(), "--mpirun", mpirun,
       "--failure-grace-s", "2", "--", "dropk-train", "--out_dir=" + (dir_ / "run").string()},
      log);
  const std::optional<int> code = job.WaitFor(seconds(90));
  ASSERT_TRUE(code.has_value()) << "dropk launch still waiting on a hung mpirun after 90 s:\n"
                                << test_util::ReadFile(log);
  EXPECT_EQ(*code, 1) << test_util::ReadFile(log);
  const std::string err = test_util::ReadFile(log);
  EXPECT_NE(err.find("mpirun still running 2 s (--failure-grace-s) after a rank recorded a fatal "
                     "error in " +
                     (dir_ / "run").string() + "/failures (2026-12-02T00:00:00.000Z host h0"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("the job failed (mpirun killed by dropk launch past its grace) without "
                     "losing a host"),
            std::string::npos)
      << err;
  const std::string helper = test_util::ReadFile((dir_ / "run" / "helper.pid").string());
  ASSERT_FALSE(helper.empty());
  EXPECT_TRUE(Ended(std::stoi(helper))) << "mpirun's helper " << helper << " outlived it";
}

// A rank that recorded a peer's host lost leaves ending the job to mpirun,
// which waits on that host's daemon until TCP keepalive gives up (20 s to
// minutes). After --lost-host-grace-s the launcher ends mpirun itself and
// relaunches without the host the record names.
TEST_F(LaunchCliTest, AHostARankRecordedLostIsDroppedWithoutWaitingForMpirun) {
  std::ofstream(dir_ / "two") << "127.0.0.1 slots=1\n127.0.0.2 slots=1\n";
  const std::string mpirun = HangingMpirun(
      "AllReduce #3 on rank 0 did not complete within 5 s: rank 1 (127.0.0.2) is unreachable "
      "(no answer within 2 s: link down or host lost)");
  const std::string log = (dir_ / "launch.log").string();
  const auto start = std::chrono::steady_clock::now();
  test_util::ChildProcess job(
      {Dropk(), "launch", "--hostfile", (dir_ / "two").string(), "--mpirun", mpirun,
       "--max-restarts", "1", "--lost-host-grace-s", "2", "--failure-grace-s", "3600", "--",
       "dropk-train", "--out_dir=" + (dir_ / "run").string()},
      log);
  const std::optional<int> code = job.WaitFor(seconds(90));
  ASSERT_TRUE(code.has_value()) << "dropk launch still waiting on a hung mpirun after 90 s:\n"
                                << test_util::ReadFile(log);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(60));
  const std::string err = test_util::ReadFile(log);
  EXPECT_EQ(*code, 0) << err;
  EXPECT_NE(err.find("mpirun still running 2 s (--lost-host-grace-s) after a rank recorded host "
                     "127.0.0.2 lost"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("restart 1 of at most 1: host 127.0.0.2 lost (mpirun killed by dropk launch "
                     "past its grace); relaunching on 1 host(s)"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("finished on 1 host(s) after 1 restart(s)"), std::string::npos) << err;
}

// A host lost before the job saved a checkpoint: the relaunch runs the
// command as given, keeping its --resume=PATH (--resume=latest found no
// checkpoint, and the job trained from random weights); once the job has
// saved one, it resumes from that (--resume=latest).
TEST_F(LaunchCliTest, ARelaunchKeepsTheCommandsResumeUntilTheJobHasSaved) {
  std::ofstream(dir_ / "two") << "127.0.0.1 slots=1\n127.0.0.2 slots=1\n";
  for (const bool saved : {false, true}) {
    SCOPED_TRACE(saved ? "saved before the host was lost" : "nothing saved yet");
    std::filesystem::remove_all(dir_ / "run");
    // Attempt 1 (-np 2) loses 127.0.0.2, after saving step 5 when `saved`;
    // the relaunch (-np 1) keeps its arguments in OUT_DIR/relaunch-args.
    const std::string mpirun = StandInMpirun(
        "losing-mpirun",
        std::string("mkdir -p \"$out/checkpoints\"\n"
                    "if [ \"$np\" = 1 ]; then echo \"$@\" > \"$out/relaunch-args\"; exit 0; fi\n") +
            (saved ? "echo step-00000005 > \"$out/checkpoints/LATEST\"\n" : "") +
            "echo 'rank 0 of 2: AllReduce #3: rank 1 (127.0.0.2) is unreachable (...)' >&2\n"
            "exit 1\n");
    const test_util::CommandResult r =
        Launch("--hostfile " + (dir_ / "two").string() + " --mpirun " + mpirun +
               " --max-restarts 1 -- dropk-train --out_dir=" + (dir_ / "run").string() +
               " --resume=/elsewhere/checkpoints/step-00000550 2>&1");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    const std::string args = test_util::ReadFile((dir_ / "run" / "relaunch-args").string());
    EXPECT_NE(args.find("--resume=/elsewhere/checkpoints/step-00000550"), std::string::npos)
        << args;
    if (saved) {
      EXPECT_NE(args.find("step-00000550 --resume=latest"), std::string::npos) << args;
      EXPECT_NE(r.out.find("rank(s), from the newest checkpoint"), std::string::npos) << r.out;
    } else {
      EXPECT_EQ(args.find("--resume=latest"), std::string::npos) << args;
      EXPECT_NE(r.out.find("rank(s), as attempt 1 was (no checkpoint saved yet in " +
                           (dir_ / "run" / "checkpoints").string()),
                std::string::npos)
          << r.out;
    }
  }
}

// A record in OUT_DIR/failures of another job size (an earlier, larger
// attempt's rank writing late) killed this healthy attempt past
// --lost-host-grace-s and dropped the host it named. Only records of a job
// of this attempt's size count.
TEST_F(LaunchCliTest, ALateRecordOfALargerJobDoesNotEndTheAttempt) {
  std::ofstream(dir_ / "two") << "127.0.0.1 slots=1\n127.0.0.2 slots=1\n";
  const std::string mpirun = StandInMpirun(
      "healthy-mpirun",
      "mkdir -p \"$out/failures\"\n"
      "echo \"2026-12-02T00:00:00.000Z host node03 pid 999: rank 2 of 3: AllReduce #50 on rank 2 "
      "did not complete within 30 s: rank 1 (127.0.0.2) is unreachable (...)\" >> "
      "\"$out/failures/rank-00002.log\"\n"
      "sleep 4\n"
      "exit 0\n");
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "two").string() + " --mpirun " + mpirun +
             " --lost-host-grace-s 1 -- dropk-train --out_dir=" + (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("the job finished on 2 host(s) after 0 restart(s)"), std::string::npos)
      << r.err;
}

// Start markers that cannot be read (here a file where the attempt's
// marker directory should be) cannot tell a silent host from a busy one:
// past --startup-timeout-s the launcher warns and leaves mpirun running
// rather than ending a job that may be training.
TEST_F(LaunchCliTest, StartMarkersThatCannotBeReadDoNotEndTheJob) {
  std::ofstream(dir_ / "two") << "h1 slots=1\nh2 slots=1\n";
  const std::string mpirun =
      StandInMpirun("unreadable-markers-mpirun", "mkdir -p \"$out/started\"\n"
                                                 "echo x > \"$out/started/$attempt\"\n"
                                                 "sleep 4\n"
                                                 "echo trained > \"$out/finished\"\n"
                                                 "exit 0\n");
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "two").string() + " --mpirun " + mpirun +
             " --max-restarts 1 --startup-timeout-s 1 -- dropk-train --out_dir=" +
             (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("no rank started on host(s)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("warning: the start markers in " + (dir_ / "run" / "started").string() +
                       "/"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("could not be read within 5 s"), std::string::npos) << r.err;
  EXPECT_EQ(test_util::ReadFile((dir_ / "run" / "finished").string()), "trained\n");
}

// A host whose daemon never reports back (a dead host at start) left mpirun
// waiting for good before any rank ran: no failure record, no output, and
// `dropk launch` waited with it. The stand-in mpirun here starts rank 0
// (its start marker names host h1) but never h2's, and hangs; with -np 1
// it keeps the relaunch's hostfile and exits 0. Past --startup-timeout-s
// the launcher names h2, drops it and relaunches on h1.
TEST_F(LaunchCliTest, AHostNoRankStartedOnIsDroppedAfterTheStartupTimeout) {
  std::ofstream(dir_ / "two") << "h1 slots=1\nh2 slots=1\n";
  const std::string mpirun =
      StandInMpirun("silent-host-mpirun", std::string(kKeepTheRelaunchHostfile) +
                                              "mkdir -p \"$out/started/$attempt\"\n"
                                              "echo h1 > \"$out/started/$attempt/rank-00000\"\n"
                                              "sleep 3600 &\n"
                                              "echo $! > \"$out/helper.pid\"\n"
                                              "wait\n");
  // A marker of an earlier attempt naming h2 does not count for this one.
  std::filesystem::create_directories(dir_ / "run" / "started" / "old");
  std::ofstream(dir_ / "run" / "started" / "old" / "rank-00001") << "h2\n";
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job({Dropk(), "launch", "--hostfile", (dir_ / "two").string(), "--mpirun",
                               mpirun, "--max-restarts", "1", "--startup-timeout-s", "2", "--",
                               "dropk-train", "--out_dir=" + (dir_ / "run").string()},
                              log);
  const std::optional<int> code = job.WaitFor(seconds(90));
  ASSERT_TRUE(code.has_value()) << "dropk launch still waiting on mpirun after 90 s:\n"
                                << test_util::ReadFile(log);
  const std::string err = test_util::ReadFile(log);
  EXPECT_EQ(*code, 0) << err;
  EXPECT_NE(err.find("no rank started on host(s) h2 within 2 s (--startup-timeout-s; no start "
                     "marker in " +
                     (dir_ / "run" / "started").string() + "/"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("restart 1 of at most 1: no rank started on host(s) h2 within 2 s "
                     "(--startup-timeout-s); relaunching on 1 host(s), 1 rank(s)"),
            std::string::npos)
      << err;
  EXPECT_EQ(test_util::ReadFile((dir_ / "run" / "relaunch-hosts").string()), "h1 slots=1\n");
  const std::string helper = test_util::ReadFile((dir_ / "run" / "helper.pid").string());
  ASSERT_FALSE(helper.empty());
  EXPECT_TRUE(Ended(std::stoi(helper))) << "mpirun's helper " << helper << " outlived it";
}

// Open MPI starts no rank until every host's daemon has reported: a dead
// host leaves every host without a started rank. The launcher then runs
// mpirun on each host alone (`-np 1 ... true`); the stand-in here hangs on
// h2 only, and on the job's 2 ranks. The relaunch runs on h1.
TEST_F(LaunchCliTest, WhenNoRankStartedAHostMpirunAloneCannotStartOnIsDropped) {
  std::ofstream(dir_ / "two") << "h1 slots=1\nh2 slots=1\n";
  const std::string mpirun = StandInMpirun(
      "dead-host-mpirun",
      std::string(kLastArgument) +
          std::string("if [ \"$last\" = true ]; then grep -q h2 \"$hostfile\" && exec sleep 3600; "
                      "exit 0; fi\n") +
          kKeepTheRelaunchHostfile + "exec sleep 3600\n");
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "two").string() + " --mpirun " + mpirun +
             " --startup-timeout-s 2 -- dropk-train --out_dir=" + (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("restart 1 of at most 3: no rank started on host(s) h1, h2 within 2 s "
                       "(--startup-timeout-s); mpirun alone cannot start on host(s) h2 either; "
                       "relaunching on 1 host(s), 1 rank(s)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(test_util::ReadFile((dir_ / "run" / "relaunch-hosts").string()), "h1 slots=1\n");
}

// A host whose daemon mpirun cannot start fails the job at once (ssh
// refused, a name that does not resolve: "ORTE was unable to reliably
// start one or more daemons", exit 255) rather than hanging it: that ended
// the launch as a failure "without losing a host". As when every host
// stays silent, mpirun on each host alone names it, and the job is
// relaunched without it (the stand-in fails on h2 alone, and the job).
TEST_F(LaunchCliTest, AHostMpirunCannotStartItsDaemonOnIsDropped) {
  std::ofstream(dir_ / "two") << "h1 slots=1\nh2 slots=1\n";
  const std::string mpirun = StandInMpirun(
      "refused-host-mpirun",
      std::string(kLastArgument) +
          "if [ \"$last\" = true ]; then grep -q h2 \"$hostfile\" && exit 255; exit 0; fi\n" +
          kKeepTheRelaunchHostfile +
          "echo 'ssh: connect to host h2 port 22: Connection refused' >&2\n"
          "echo 'ORTE was unable to reliably start one or more daemons.' >&2\n"
          "exit 255\n");
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "two").string() + " --mpirun " + mpirun +
             " -- dropk-train --out_dir=" + (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("restart 1 of at most 3: mpirun could not start on every host (mpirun "
                       "exit status 255, \"unable to reliably start one or more daemons\"; no "
                       "rank started); mpirun alone cannot start on host(s) h2 either; "
                       "relaunching on 1 host(s), 1 rank(s)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(test_util::ReadFile((dir_ / "run" / "relaunch-hosts").string()), "h1 slots=1\n");
}

// Where mpirun alone cannot start on any host either, the launcher ends
// with an error naming them all rather than relaunching on none.
TEST_F(LaunchCliTest, NoRankStartedAnywhereEndsTheLaunchNamingEveryHost) {
  std::ofstream(dir_ / "two") << "h1 slots=1\nh2 slots=1\n";
  const std::string mpirun = StandInMpirun("stuck-mpirun", "exec sleep 3600\n");
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "two").string() + " --mpirun " + mpirun +
             " --startup-timeout-s 1 -- dropk-train --out_dir=" + (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("dropk: no rank started on host(s) h1, h2 within 1 s "
                       "(--startup-timeout-s); mpirun alone could start on none of them, so none "
                       "of the job's hosts is left"),
            std::string::npos)
      << r.err;
}

// Ctrl-C while the launcher tried mpirun on each host alone (no rank had
// started) went unheard: the handler only counted signals while the job's
// mpirun ran, so the probes ran their full --startup-timeout-s (120 s by
// default) and the launch went on. It now ends within a second or two,
// the probes' process groups killed, with one line naming what it stopped.
TEST_F(LaunchCliTest, ASignalWhileEachHostIsTriedAloneEndsTheLaunchAtOnce) {
  std::ofstream(dir_ / "two") << "h1 slots=1\nh2 slots=1\n";
  const std::string probes = (dir_ / "probe.pids").string();
  const std::string mpirun = StandInMpirun(
      "stuck-mpirun", std::string(kLastArgument) + "[ \"$last\" = true ] && echo $$ >> " + probes +
                          "\nexec sleep 3600\n");
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job(
      {Dropk(), "launch", "--hostfile", (dir_ / "two").string(), "--mpirun", mpirun,
       "--startup-timeout-s", "8", "--", "dropk-train", "--out_dir=" + (dir_ / "run").string()},
      log);
  ASSERT_TRUE(WaitForText(log, "trying mpirun on each host alone", seconds(60)))
      << test_util::ReadFile(log);
  WaitForPids(probes, 2, seconds(5));
  ASSERT_EQ(PidsIn(probes).size(), 2u) << test_util::ReadFile(log);
  ASSERT_EQ(kill(job.pid(), SIGINT), 0);
  const auto signalled = std::chrono::steady_clock::now();
  const std::optional<int> code = job.WaitFor(seconds(30));
  ASSERT_TRUE(code.has_value()) << test_util::ReadFile(log);
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, seconds(2)) << test_util::ReadFile(log);
  EXPECT_EQ(*code, 75) << test_util::ReadFile(log);  // stopped, nothing lost
  const std::string err = test_util::ReadFile(log);
  EXPECT_NE(err.find("dropk: stopped by SIGINT while trying mpirun on each host alone (no rank "
                     "had started within --startup-timeout-s); ended those mpirun runs' process "
                     "groups\n"),
            std::string::npos)
      << err;
  for (const pid_t probe : PidsIn(probes)) EXPECT_TRUE(Ended(probe)) << "probe " << probe;
}

// A stop signal that comes after the startup timeout ended mpirun, while
// the launcher still reads what a helper of mpirun's holds open (Open MPI's
// ssh, in a session of its own), found no rank to save: it exited 1 with
// the timeout's failure, which a scheduler does not resume. Now 75.
TEST_F(LaunchCliTest, ASignalAfterTheStartupTimeoutEndedMpirunIsAStop) {
  std::ofstream(dir_ / "two") << "h1 slots=1\nh2 slots=1\n";
  const std::string pids = (dir_ / "mpirun.pids").string();
  const std::string mpirun = StandInMpirun(
      "silent-mpirun", "setsid sleep 30 &\necho $! > " + pids + ".helper\necho $$ > " + pids +
                           "\nexec sleep 3600\n");
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job(
      {Dropk(), "launch", "--hostfile", (dir_ / "two").string(), "--mpirun", mpirun,
       "--startup-timeout-s", "1", "--", "dropk-train", "--out_dir=" + (dir_ / "run").string()},
      log);
  const auto start = std::chrono::steady_clock::now();
  WaitForPids(pids, 1, seconds(30));
  ASSERT_EQ(PidsIn(pids).size(), 1u) << test_util::ReadFile(log);
  const pid_t stand_in = PidsIn(pids).front();
  while (!Ended(stand_in) && std::chrono::steady_clock::now() - start < seconds(30)) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_TRUE(Ended(stand_in)) << "the startup timeout did not end mpirun\n"
                               << test_util::ReadFile(log);
  ASSERT_EQ(kill(job.pid(), SIGTERM), 0);
  const std::optional<int> code = job.WaitFor(seconds(30));
  for (const pid_t helper : PidsIn(pids + ".helper")) kill(helper, SIGKILL);
  ASSERT_TRUE(code.has_value()) << test_util::ReadFile(log);
  const std::string err = test_util::ReadFile(log);
  EXPECT_EQ(*code, 75) << err;
  EXPECT_NE(err.find("dropk: stopped by SIGTERM before any rank of attempt 1 started (mpirun had "
                     "been ended: no rank started on host(s) h1, h2 within 1 s"),
            std::string::npos)
      << err;
}

// mpirun passes the first Ctrl-C on to the ranks (SIGUSR1: save and stop),
// but where no rank has started it waits on the hosts' daemons as before,
// and the launcher with it, up to --startup-timeout-s. With no start marker
// there is nothing to save: the launcher ends mpirun's group at once.
TEST_F(LaunchCliTest, ASignalBeforeAnyRankStartedEndsTheLaunchAtOnce) {
  const std::string pid_file = (dir_ / "mpirun.pid").string();
  // Like mpirun waiting on a daemon: SIGUSR1 (forwarded to no rank) does not end it.
  const std::string mpirun = StandInMpirun(
      "waiting-mpirun", "trap '' USR1\necho $$ > " + pid_file + "\nexec sleep 3600\n");
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job(
      {Dropk(), "launch", "--hostfile", (dir_ / "hosts").string(), "--mpirun", mpirun,
       "--startup-timeout-s", "60", "--", "dropk-train", "--out_dir=" + (dir_ / "run").string()},
      log);
  const auto start = std::chrono::steady_clock::now();
  while (PidsIn(pid_file).empty()) {
    ASSERT_LT(std::chrono::steady_clock::now() - start, seconds(60)) << test_util::ReadFile(log);
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_EQ(kill(job.pid(), SIGINT), 0);
  const auto signalled = std::chrono::steady_clock::now();
  const std::optional<int> code = job.WaitFor(seconds(90));
  ASSERT_TRUE(code.has_value()) << test_util::ReadFile(log);
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, seconds(4)) << test_util::ReadFile(log);
  EXPECT_EQ(*code, 75) << test_util::ReadFile(log);  // stopped, nothing lost
  const std::string err = test_util::ReadFile(log);
  EXPECT_NE(err.find("dropk: stopped by SIGINT before any rank of attempt 1 started (no start "
                     "marker in " +
                     (dir_ / "run" / "started").string() + "/"),
            std::string::npos)
      << err;
  EXPECT_TRUE(Ended(PidsIn(pid_file).front()));
}

// mpirun ended, but a process it left in its group (an ssh to a lost host,
// say) held its output pipes: the launcher read them for good and forwarded
// signals to the dead mpirun. It now reads 5 s more, then kills that group.
TEST_F(LaunchCliTest, AProcessHoldingMpirunsOutputAfterItEndedDoesNotHangTheLaunch) {
  const std::string pid_file = (dir_ / "helper.pid").string();
  const std::string mpirun =
      StandInMpirun("leaving-mpirun",
                    "sleep 3600 &\necho $! > " + pid_file + "\necho 'ranks failed' >&2\nexit 1\n");
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job(
      {Dropk(), "launch", "--hostfile", (dir_ / "hosts").string(), "--mpirun", mpirun, "--",
       "dropk-train", "--out_dir=" + (dir_ / "run").string()},
      log);
  const std::optional<int> code = job.WaitFor(seconds(30));
  ASSERT_TRUE(code.has_value()) << "dropk launch still reading mpirun's output 30 s after it "
                                   "ended:\n"
                                << test_util::ReadFile(log);
  EXPECT_EQ(*code, 1) << test_util::ReadFile(log);
  EXPECT_NE(test_util::ReadFile(log).find("the job failed (mpirun exit status 1) without losing a "
                                          "host"),
            std::string::npos)
      << test_util::ReadFile(log);
  ASSERT_FALSE(PidsIn(pid_file).empty());
  EXPECT_TRUE(Ended(PidsIn(pid_file).front())) << "the helper mpirun left outlived the launch";
}

// With two hosts a cut link makes each side's rank name the other
// unreachable, and the tie went to the first named: here the healthy host
// 127.0.0.1 (where mpirun runs) was dropped. The launcher now tries mpirun
// alone on each (the stand-in hangs on 127.0.0.2, the cut-off one) and
// drops the one it cannot start on.
TEST_F(LaunchCliTest, ACutLinkBetweenTwoHostsDropsTheOneMpirunAloneCannotReach) {
  std::ofstream(dir_ / "two") << "127.0.0.1 slots=1\n127.0.0.2 slots=1\n";
  const std::string mpirun = StandInMpirun(
      "cut-link-mpirun",
      std::string(kLastArgument) +
          "if [ \"$last\" = true ]; then grep -q '^127.0.0.2 ' \"$hostfile\" && exec sleep 3600; "
          "exit 0; fi\n" +
          kKeepTheRelaunchHostfile + kCutLinkBetweenTwoHosts);
  const test_util::CommandResult r =
      Launch("--hostfile " + (dir_ / "two").string() + " --mpirun " + mpirun +
             " --max-restarts 1 --startup-timeout-s 2 -- dropk-train --out_dir=" +
             (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("restart 1 of at most 1: host 127.0.0.2 lost (mpirun exit status 1; the "
                       "ranks named hosts 127.0.0.1, 127.0.0.2 unreachable as often each; mpirun "
                       "alone, run from here on each for at most 2 s, started on 127.0.0.1 but "
                       "not on 127.0.0.2); relaunching on 1 host(s)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(test_util::ReadFile((dir_ / "run" / "relaunch-hosts").string()), "127.0.0.1 slots=1\n");
}

// The same tie while neither host answers mpirun: a signal ends the wait.
TEST_F(LaunchCliTest, ASignalWhileATiedHostIsTriedEndsTheLaunchAtOnce) {
  std::ofstream(dir_ / "two") << "127.0.0.1 slots=1\n127.0.0.2 slots=1\n";
  const std::string mpirun = StandInMpirun(
      "cut-link-mpirun", std::string(kLastArgument) + "[ \"$last\" = true ] && exec sleep 3600\n" +
                             kCutLinkBetweenTwoHosts);
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job(
      {Dropk(), "launch", "--hostfile", (dir_ / "two").string(), "--mpirun", mpirun,
       "--max-restarts", "1", "--", "dropk-train", "--out_dir=" + (dir_ / "run").string()},
      log);
  ASSERT_TRUE(WaitForText(log, "trying mpirun on each of them alone (at most 30 s)", seconds(60)))
      << test_util::ReadFile(log);
  ASSERT_EQ(kill(job.pid(), SIGTERM), 0);
  const auto signalled = std::chrono::steady_clock::now();
  const std::optional<int> code = job.WaitFor(seconds(60));
  ASSERT_TRUE(code.has_value()) << test_util::ReadFile(log);
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, seconds(2)) << test_util::ReadFile(log);
  EXPECT_EQ(*code, 75) << test_util::ReadFile(log);  // stopped, nothing lost
  EXPECT_NE(test_util::ReadFile(log).find("dropk: stopped by SIGTERM while trying mpirun on hosts "
                                          "127.0.0.1, 127.0.0.2 alone (to tell which one is "
                                          "lost)"),
            std::string::npos)
      << test_util::ReadFile(log);
}

// Every start marker lists 127.0.0.1, so a hostfile line 127.0.0.1 counted
// as started by a rank on any host. Here the only rank runs on h1 (another
// machine): the 127.0.0.1 line, this machine, is the silent one.
TEST_F(LaunchCliTest, ALoopbackHostIsStartedOnlyByARankOnThisMachine) {
  std::ofstream(dir_ / "two") << "127.0.0.1 slots=1\nh1 slots=1\n";
  const std::string mpirun =
      StandInMpirun("remote-rank-mpirun",
                    std::string(kKeepTheRelaunchHostfile) +
                        "mkdir -p \"$out/started/$attempt\"\n"
                        "echo h1 127.0.0.1 10.254.0.7 > \"$out/started/$attempt/rank-00001\"\n"
                        "exec sleep 3600\n");
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job({Dropk(), "launch", "--hostfile", (dir_ / "two").string(), "--mpirun",
                               mpirun, "--max-restarts", "1", "--startup-timeout-s", "2", "--",
                               "dropk-train", "--out_dir=" + (dir_ / "run").string()},
                              log);
  const std::optional<int> code = job.WaitFor(seconds(60));
  ASSERT_TRUE(code.has_value()) << "dropk launch still waiting on mpirun after 60 s:\n"
                                << test_util::ReadFile(log);
  const std::string err = test_util::ReadFile(log);
  EXPECT_EQ(*code, 0) << err;
  EXPECT_NE(err.find("restart 1 of at most 1: no rank started on host(s) 127.0.0.1 within 2 s"),
            std::string::npos)
      << err;
  EXPECT_EQ(test_util::ReadFile((dir_ / "run" / "relaunch-hosts").string()), "h1 slots=1\n");
}

// mpirun runs in a process group of its own (so that the launcher can kill
// it with its ranks); a launcher killed outright must not leave it, and the
// job, running unsupervised.
TEST_F(LaunchCliTest, MpirunEndsWhenTheLauncherIsKilled) {
  const std::string mpirun = HangingMpirun("an error");
  const std::string log = (dir_ / "launch.log").string();
  test_util::ChildProcess job(
      {Dropk(), "launch", "--hostfile", (dir_ / "hosts").string(), "--mpirun", mpirun,
       "--failure-grace-s", "3600", "--", "dropk-train", "--out_dir=" + (dir_ / "run").string()},
      log);
  const std::filesystem::path pid_file = dir_ / "run" / "mpirun.pid";
  const auto start = std::chrono::steady_clock::now();
  while (test_util::ReadFile(pid_file.string()).empty()) {
    ASSERT_LT(std::chrono::steady_clock::now() - start, seconds(60)) << test_util::ReadFile(log);
    std::this_thread::sleep_for(milliseconds(50));
  }
  const pid_t mpirun_pid = std::stoi(test_util::ReadFile(pid_file.string()));
  ASSERT_EQ(kill(job.pid(), SIGKILL), 0);  // the launcher alone, not its group
  job.WaitFor(seconds(10));
  const auto killed = std::chrono::steady_clock::now();
  while (!Ended(mpirun_pid) && std::chrono::steady_clock::now() - killed < seconds(30)) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_TRUE(Ended(mpirun_pid)) << "mpirun " << mpirun_pid << " outlived its launcher by 30 s";
  if (!Ended(mpirun_pid)) kill(mpirun_pid, SIGKILL);
  // Its helper outlives a SIGTERMed shell; it is not mpirun's to end here.
  const std::string helper = test_util::ReadFile((dir_ / "run" / "helper.pid").string());
  if (!helper.empty()) kill(std::stoi(helper), SIGKILL);
}

}  // namespace
}  // namespace dropk
