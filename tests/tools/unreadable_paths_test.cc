// Paths the OS cannot look at, given to every command that takes a
// checkpoint: a symlink loop and a name longer than PATH_MAX. The throwing
// std::filesystem::exists aborted `dropk sample` and `dropk study topk`
// (rc 134, an uncaught filesystem_error), and `dropk ckpt` and dropk-serve
// said "does not exist". Each must be one line naming the flag or path with
// the OS's reason, exit 2.
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace dropk {
namespace {

using test_util::CommandResult;
using test_util::RunCommand;

const std::string kBin = DROPK_BINARY_DIR "/bin/";

class UnreadablePathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // loop -> loop: every lookup through it fails with ELOOP.
    loop_ = dir_.Path("loop");
    ASSERT_EQ(::symlink(loop_.c_str(), loop_.c_str()), 0);
    long_ = dir_.Path(std::string(5000, 'a'));
  }

  // `r` is one line on stderr, starting `prefix`, ending with `reason`.
  static void ExpectOneLine(const CommandResult& r, int exit_code, const std::string& prefix,
                            const std::string& reason) {
    EXPECT_EQ(r.exit_code, exit_code) << r.out << r.err;
    EXPECT_EQ(r.err.rfind(prefix, 0), 0u) << r.err;
    EXPECT_NE(r.err.find(reason + "\n"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.find("does not exist"), std::string::npos) << r.err;
  }

  test_util::ScopedTempDir dir_{"unreadable_paths"};
  std::string loop_;
  std::string long_;
};

TEST_F(UnreadablePathTest, SampleNamesTheFlagAndTheReason) {
  ExpectOneLine(RunCommand(kBin + "dropk sample --prompt x --threads 1 --checkpoint " + loop_), 2,
                "dropk: --checkpoint " + loop_ + ": ", "Too many levels of symbolic links");
  ExpectOneLine(RunCommand(kBin + "dropk sample --prompt x --threads 1 --checkpoint " + long_), 2,
                "dropk: --checkpoint " + long_ + ": ", "File name too long");
}

TEST_F(UnreadablePathTest, StudyTopKNamesTheFlagAndTheReason) {
  const std::string out = " --out " + dir_.Path("out");
  ExpectOneLine(RunCommand(kBin + "dropk study topk --checkpoint " + loop_ + out), 2,
                "dropk: --checkpoint " + loop_ + ": ", "Too many levels of symbolic links");
  ExpectOneLine(RunCommand(kBin + "dropk study topk --checkpoint " + long_ + out), 2,
                "dropk: --checkpoint " + long_ + ": ", "File name too long");
  EXPECT_FALSE(std::filesystem::exists(dir_.Path("out")));
}

TEST_F(UnreadablePathTest, CkptSaysTheReasonNotDoesNotExist) {
  for (const char* verb : {"inspect", "verify"}) {
    ExpectOneLine(RunCommand(kBin + "dropk ckpt " + verb + " " + loop_), 2,
                  "dropk: checkpoint path " + loop_ + ": ", "Too many levels of symbolic links");
  }
  ExpectOneLine(RunCommand(kBin + "dropk ckpt export " + long_ + " --out " + dir_.Path("x.bin")),
                2, "dropk: checkpoint path " + long_ + ": ", "File name too long");
}

TEST_F(UnreadablePathTest, ServeSaysTheReasonNotDoesNotExist) {
  ExpectOneLine(
      RunCommand("timeout -k 1 30 " + kBin + "dropk-serve --port 0 --checkpoints " + loop_), 2,
      "dropk-serve: --checkpoints " + loop_ + ": ", "Too many levels of symbolic links");
}

// A run directory whose checkpoints/ is a symlink loop, and a checkpoints
// directory whose LATEST is one: `dropk ckpt` said "holds neither
// manifest.pb nor LATEST" (exit 2) for the first and passed the second
// over in silence, reading the newest step-N instead of the one LATEST was
// meant to name.
TEST_F(UnreadablePathTest, CkptSaysWhyARunsCheckpointsOrItsLatestCannotBeLookedAt) {
  const std::string run = dir_.Path("run");
  ASSERT_TRUE(std::filesystem::create_directory(run));
  ASSERT_EQ(::symlink((run + "/checkpoints").c_str(), (run + "/checkpoints").c_str()), 0);
  const std::string checkpoints = dir_.Path("checkpoints");
  ASSERT_TRUE(std::filesystem::create_directory(checkpoints));
  ASSERT_TRUE(std::filesystem::create_directory(checkpoints + "/step-00000001"));
  ASSERT_EQ(::symlink((checkpoints + "/LATEST").c_str(), (checkpoints + "/LATEST").c_str()), 0);
  for (const char* verb : {"inspect", "verify"}) {
    ExpectOneLine(RunCommand(kBin + "dropk ckpt " + verb + " " + run), 2,
                  "dropk: " + run + "/checkpoints/LATEST: ", "Too many levels of symbolic links");
    ExpectOneLine(RunCommand(kBin + "dropk ckpt " + verb + " " + checkpoints), 2,
                  "dropk: " + checkpoints + "/LATEST: ", "Too many levels of symbolic links");
  }
}

// The benchmark's --dir too: remove_all threw before, after allocating the
// model's buffers.
TEST_F(UnreadablePathTest, CheckpointBenchNamesItsDirAndTheReason) {
  ExpectOneLine(RunCommand(kBin + "dropk-checkpoint-bench --small --repeats 1 --dir " + loop_),
                2, "dropk-checkpoint-bench: --dir " + loop_ + ": ",
                "Too many levels of symbolic links");
}

}  // namespace
}  // namespace dropk
