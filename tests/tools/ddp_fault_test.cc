// A failing rank brings the whole mpirun job down within seconds, with a
// message naming the rank and the cause; never a hang.
#include <gtest/gtest.h>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "checkpoint/format.h"
#include "support/shakespeare_data.h"
#include "support/subprocess.h"

namespace dropk {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class DdpFaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::filesystem::path(std::filesystem::path(::testing::TempDir()) /
                                      ("dropk_ddp_fault_" + std::to_string(getpid())));
    std::filesystem::remove_all(*root_);
    ASSERT_TRUE(test_util::PrepareShakespeareData((*root_ / "data").string()).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*root_);
    delete root_;
  }
  // The dropk-train arguments of a long tiny run writing to out_dir.
  static std::vector<std::string> TrainArgs(const std::string& out_dir,
                                            const std::string& data_dir) {
    return {DROPK_BINARY_DIR "/bin/dropk-train",
            "--config",
            DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto",
            "--data_dir=" + data_dir,
            "--out_dir=" + out_dir,
            "--max_iters=1000000",
            "--lr_decay_iters=1000000",
            "--log_interval=1",
            "--eval_interval=1000000",
            "--sample_tokens=0",
            "--comm_timeout_s=600"};
  }
  // An MPMD mpirun of two ranks of TrainArgs on the bundled data, rank 1
  // with rank1_extra appended.
  static std::vector<std::string> TwoRanksSecondWith(const std::string& out_dir,
                                                     const std::string& rank1_extra) {
    const std::string data = (*root_ / "data").string();
    std::vector<std::string> argv = {"mpirun", "--oversubscribe", "-np", "1"};
    for (const std::string& a : TrainArgs(out_dir, data)) argv.push_back(a);
    argv.insert(argv.end(), {":", "-np", "1"});
    for (const std::string& a : TrainArgs(out_dir, data)) argv.push_back(a);
    argv.push_back(rank1_extra);
    return argv;
  }
  // mpirun of two ranks of TrainArgs into out_dir, saving only at the end
  // (or on a stop signal).
  static std::vector<std::string> TwoRanksSavingOnlyAtTheEnd(const std::string& out_dir) {
    std::vector<std::string> argv = {"mpirun", "-np", "2", "--oversubscribe"};
    for (const std::string& a : TrainArgs(out_dir, (*root_ / "data").string())) argv.push_back(a);
    argv.push_back("--save_every=0");
    return argv;
  }
  // Returns once `job` logged five steps in out_dir/metrics.jsonl; a fatal
  // failure (naming `log`) when it ended first or 120 s passed.
  static void WaitForFiveSteps(test_util::ChildProcess& job, const std::string& out_dir,
                               const std::string& log) {
    const auto started = std::chrono::steady_clock::now();
    while (Lines(out_dir + "/metrics.jsonl") < 5) {
      ASSERT_FALSE(job.WaitFor(milliseconds(100)).has_value()) << "the job ended early:\n"
                                                               << test_util::ReadFile(log);
      ASSERT_LT(std::chrono::steady_clock::now() - started, seconds(120))
          << "training never started";
    }
  }
  static size_t Lines(const std::string& path) {
    const std::string text = test_util::ReadFile(path);
    return std::count(text.begin(), text.end(), '\n');
  }
  static std::filesystem::path* root_;
};
std::filesystem::path* DdpFaultTest::root_ = nullptr;

TEST_F(DdpFaultTest, SigkillOfOneRankEndsTheJobNonZeroWithin30Seconds) {
  const std::string out = (*root_ / "sigkill_run").string();
  std::vector<std::string> argv = {"mpirun", "-np", "2", "--oversubscribe"};
  for (const std::string& a : TrainArgs(out, (*root_ / "data").string())) argv.push_back(a);
  test_util::ChildProcess job(argv, (*root_ / "sigkill.log").string());

  // Wait until both ranks are training.
  const auto started = std::chrono::steady_clock::now();
  while (Lines(out + "/metrics.jsonl") < 5) {
    ASSERT_FALSE(job.WaitFor(milliseconds(100)).has_value())
        << "the job ended early:\n"
        << test_util::ReadFile((*root_ / "sigkill.log").string());
    ASSERT_LT(std::chrono::steady_clock::now() - started, seconds(120)) << "training never started";
  }
  const std::vector<pid_t> rank1 = test_util::FindProcesses(out, "OMPI_COMM_WORLD_RANK=1");
  ASSERT_EQ(rank1.size(), 1u);
  ASSERT_EQ(kill(rank1[0], SIGKILL), 0);

  const auto killed = std::chrono::steady_clock::now();
  const std::optional<int> code = job.WaitFor(seconds(30));
  ASSERT_TRUE(code.has_value()) << "mpirun still running 30 s after a rank died";
  EXPECT_NE(*code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - killed, seconds(30));
  EXPECT_TRUE(test_util::FindProcesses(out, "OMPI_COMM_WORLD_RANK=0").empty())
      << "rank 0 outlived the job";
}

TEST_F(DdpFaultTest, ARankThatFailsEndsTheJobNamingItselfAndTheCause) {
  // MPMD launch: rank 1 is given a data directory that does not exist on
  // "its host".
  const std::string out = (*root_ / "missing_data_run").string();
  std::vector<std::string> argv = {"mpirun", "--oversubscribe", "-np", "1"};
  for (const std::string& a : TrainArgs(out, (*root_ / "data").string())) argv.push_back(a);
  argv.insert(argv.end(), {":", "-np", "1"});
  for (const std::string& a : TrainArgs(out, "/nonexistent/dropk_data")) argv.push_back(a);
  const std::string log = (*root_ / "missing.log").string();
  test_util::ChildProcess job(argv, log);
  const std::optional<int> code = job.WaitFor(seconds(30));
  ASSERT_TRUE(code.has_value()) << "the job hung:\n" << test_util::ReadFile(log);
  EXPECT_NE(*code, 0);
  const std::string text = test_util::ReadFile(log);
  EXPECT_NE(text.find("rank 1 of 2"), std::string::npos) << text;
  EXPECT_NE(text.find("/nonexistent/dropk_data"), std::string::npos) << text;
  // The same line is kept in the run directory, where mpirun cannot drop it.
  const std::string record = test_util::ReadFile(out + "/failures/rank-00001.log");
  EXPECT_NE(record.find("rank 1 of 2: "), std::string::npos) << record;
  EXPECT_NE(record.find("/nonexistent/dropk_data"), std::string::npos) << record;
}

TEST_F(DdpFaultTest, RanksStartedWithDifferentShapesEndTheJobNamingTheField) {
  // MPMD launch: rank 1 is given another n_layer. Its parameter buffers are
  // of another size, so the initial broadcast and the allreduces overran
  // rank 0's buffers (malloc: corrupted top size, SIGABRT).
  const std::string out = (*root_ / "mismatch_run").string();
  const std::string log = (*root_ / "mismatch.log").string();
  test_util::ChildProcess job(TwoRanksSecondWith(out, "--n_layer=3"), log);
  const std::optional<int> code = job.WaitFor(seconds(60));
  ASSERT_TRUE(code.has_value()) << "the job hung:\n" << test_util::ReadFile(log);
  EXPECT_NE(*code, 0);
  const std::string text = test_util::ReadFile(log);
  EXPECT_NE(text.find("n_layer is 2 on rank 0 but 3 on rank 1"), std::string::npos) << text;
  EXPECT_EQ(text.find("Signal:"), std::string::npos) << "a rank crashed:\n" << text;
}

// MPMD launch: only rank 1 is given a value validation refuses (a host
// whose config differs). That rank exited 2 without a word, since only
// rank 0 printed config problems, and mpirun said only "Exit code: 2".
TEST_F(DdpFaultTest, ABadConfigOnOneRankIsPrintedNamingThatRank) {
  const std::string out = (*root_ / "bad_config_run").string();
  const std::string log = (*root_ / "bad_config.log").string();
  test_util::ChildProcess job(TwoRanksSecondWith(out, "--n_layer=0"), log);
  const std::optional<int> code = job.WaitFor(seconds(60));
  ASSERT_TRUE(code.has_value()) << "the job hung:\n" << test_util::ReadFile(log);
  EXPECT_EQ(*code, 2) << test_util::ReadFile(log);
  const std::string text = test_util::ReadFile(log);
  EXPECT_NE(text.find("dropk-train: rank 1: n_layer=0: must be >= 1"), std::string::npos) << text;
}

// MPMD launch: rank 1 reads a copy of the data in which one token was
// changed into another valid one (a host whose copy was damaged). Every
// rank checks the files it reads; the one that finds the change ends the
// job with exit 2 naming itself and the file, and no rank is left waiting.
TEST_F(DdpFaultTest, ADamagedTokenFileOnOneRankEndsTheJobNamingIt) {
  const std::string damaged = (*root_ / "damaged_data").string();
  std::filesystem::copy(*root_ / "data", damaged, std::filesystem::copy_options::recursive);
  ASSERT_TRUE(test_util::ChangeOneByteToken(damaged + "/train.bin", 500));
  const std::string out = (*root_ / "damaged_run").string();
  std::vector<std::string> argv = {"mpirun", "--oversubscribe", "-np", "1"};
  for (const std::string& a : TrainArgs(out, (*root_ / "data").string())) argv.push_back(a);
  argv.insert(argv.end(), {":", "-np", "1"});
  for (const std::string& a : TrainArgs(out, damaged)) argv.push_back(a);
  const std::string log = (*root_ / "damaged.log").string();
  test_util::ChildProcess job(argv, log);
  const std::optional<int> code = job.WaitFor(seconds(60));
  ASSERT_TRUE(code.has_value()) << "the job hung:\n" << test_util::ReadFile(log);
  EXPECT_EQ(*code, 2) << test_util::ReadFile(log);
  const std::string text = test_util::ReadFile(log);
  EXPECT_NE(
      text.find("rank 1 of 2: token file '" + damaged +
                "/train.bin' does not match its checksum recorded in " + damaged + "/tokenizer.pb"),
      std::string::npos)
      << text;
  EXPECT_EQ(text.find("Signal:"), std::string::npos) << "a rank crashed:\n" << text;
}

// A stop of a two-rank job (SIGUSR1 to mpirun, as dropk launch and the
// deploy recipes send it) exited 0, so that a scheduler took a preempted
// run for a finished one. mpirun now exits 75 (stopped), and only after
// every rank's part of the checkpoint is written: it verifies, and
// LATEST names it.
TEST_F(DdpFaultTest, AStopOfTwoRanksSavesEveryPartAndMpirunExits75) {
  const std::string out = (*root_ / "stop_run").string();
  const std::string log = (*root_ / "stop.log").string();
  test_util::ChildProcess job(TwoRanksSavingOnlyAtTheEnd(out), log);
  WaitForFiveSteps(job, out, log);
  if (HasFatalFailure()) return;
  ASSERT_EQ(kill(job.pid(), SIGUSR1), 0);  // mpirun passes it to every rank: save and stop

  const std::optional<int> code = job.WaitFor(seconds(60));
  ASSERT_TRUE(code.has_value()) << "mpirun still running 60 s after SIGUSR1:\n"
                                << test_util::ReadFile(log);
  const std::string text = test_util::ReadFile(log);
  EXPECT_EQ(*code, 75) << text;
  const size_t at = text.find("dropk-train: stopped by signal after step ");
  ASSERT_NE(at, std::string::npos) << text;
  const int64_t step = std::stoll(text.substr(at + 42));
  const std::string name = CheckpointDirName(step);
  EXPECT_EQ(test_util::ReadFile(out + "/checkpoints/LATEST"), name + "\n") << text;
  const test_util::CommandResult verify = test_util::RunCommand(
      std::string(DROPK_BINARY_DIR "/bin/dropk ckpt verify ") + out + "/checkpoints/" + name);
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_EQ(text.find("Signal:"), std::string::npos) << "a rank crashed:\n" << text;
}

// The checkpoints directory replaced by a file while two ranks train (a
// disk swapped, a directory removed by hand): the save that SIGUSR1 asks
// for cannot create its directory. Every rank took that failure (an
// Unavailable status) for a lost peer's, and waited 120 s "for the
// launcher to end the job" before aborting it. Only a lost peer waits now:
// the job ends at once, rank 0 naming the path and what the OS said.
TEST_F(DdpFaultTest, ACheckpointDirectoryGoneMidRunEndsTheJobAtOnceNamingIt) {
  const std::string out = (*root_ / "checkpoint_dir_gone_run").string();
  const std::string log = (*root_ / "checkpoint_dir_gone.log").string();
  test_util::ChildProcess job(TwoRanksSavingOnlyAtTheEnd(out), log);
  WaitForFiveSteps(job, out, log);
  if (HasFatalFailure()) return;
  const std::string checkpoints = out + "/checkpoints";
  std::filesystem::rename(checkpoints, out + "/checkpoints.moved");
  std::ofstream(checkpoints) << "not a directory\n";
  ASSERT_EQ(kill(job.pid(), SIGUSR1), 0);  // mpirun passes it to every rank: save and stop

  const std::optional<int> code = job.WaitFor(seconds(60));
  ASSERT_TRUE(code.has_value()) << "mpirun still running 60 s after the save failed:\n"
                                << test_util::ReadFile(log);
  EXPECT_EQ(*code, 1) << test_util::ReadFile(log);
  const std::string text = test_util::ReadFile(log);
  EXPECT_NE(text.find("rank 0 of 2: checkpoint: cannot create " + checkpoints + "/step-"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(checkpoints + ": mkdir: File exists"), std::string::npos) << text;
  EXPECT_EQ(text.find("waiting up to"), std::string::npos) << text;
}

}  // namespace
}  // namespace dropk
