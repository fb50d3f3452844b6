// A newest checkpoint that the run's user may not read (a directory or file
// at mode 000: a permission problem, not a torn write). --resume=latest
// skipped it like a corrupt one, resumed from the one before, and its save
// of that step replaced it. It is refused now, naming the checkpoint, the
// file and the system's reason, and kept; a corrupt one is still skipped.
// `dropk ckpt` said a checkpoint directory that may not be searched "holds
// neither manifest.pb nor LATEST". Root reads anything, so the commands run
// as nobody (setpriv).
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/tiny_smoke_run.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;
using test_util::CommandResult;
using test_util::RunCommand;

const std::string kBin = DROPK_BINARY_DIR "/bin/";

class UnreadableCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() == 0) {
      if (std::system("command -v setpriv > /dev/null") != 0) {
        GTEST_SKIP() << "running as root without setpriv: cannot make a checkpoint unreadable";
      }
      as_nobody_ = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
    }
    // step-00000001 and step-00000002, LATEST naming the second.
    ASSERT_TRUE(test_util::TrainTinySmokeRun(dir_.path(), 1).ok());
    // Nobody resumes the run: it writes the lock file and the saves.
    fs::permissions(dir_.path(), fs::perms::all);
    for (const fs::directory_entry& e : fs::recursive_directory_iterator(dir_.Path("run"))) {
      fs::permissions(e.path(), e.is_directory() ? fs::perms::all : fs::perms::all & ~exec_bits_);
    }
    fs::permissions(dir_.Path("run"), fs::perms::all);
  }

  // dropk-train --resume=latest of the run to step 3, as nobody.
  CommandResult ResumeLatest() {
    return RunCommand(as_nobody_ + kBin +
                      "dropk-train --config " DROPK_SOURCE_DIR
                      "/configs/tiny_smoke.textproto --data_dir=" +
                      dir_.Path("data") + " --out_dir=" + dir_.Path("run") +
                      " --max_iters=3 --lr_decay_iters=3 --warmup_iters=0 --save_every=1"
                      " --eval_iters=1 --sample_tokens=0 --num_threads=1 --resume=latest");
  }

  const fs::perms exec_bits_ =
      fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec;
  test_util::ScopedTempDir dir_{"unreadable_checkpoint"};
  std::string as_nobody_;
  std::string newest_ = dir_.Path("run/checkpoints/step-00000002");
};

TEST_F(UnreadableCheckpointTest, ResumeNamesItWithTheReasonAndKeepsIt) {
  struct Case {
    std::string locked;  // made mode 000
    std::string file;    // the file the refusal names
  };
  const Case cases[] = {
      {newest_, "manifest.pb"},
      {newest_ + "/manifest.pb", "manifest.pb"},
      {newest_ + "/model.data", "model.data"},
  };
  const std::string manifest = test_util::ReadFile(newest_ + "/manifest.pb");
  ASSERT_FALSE(manifest.empty());
  for (const Case& c : cases) {
    const fs::perms before = fs::status(c.locked).permissions();
    fs::permissions(c.locked, fs::perms::none);
    const CommandResult r = ResumeLatest();
    fs::permissions(c.locked, before);
    EXPECT_EQ(r.exit_code, 2) << c.locked << "\n" << r.out << r.err;
    EXPECT_EQ(r.err.rfind("dropk-train: --resume: checkpoint " + newest_ + ": file " + c.file, 0),
              0u)
        << c.locked << "\n"
        << r.err;
    EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
    EXPECT_EQ((r.out + r.err).find("resumed from"), std::string::npos) << r.out << r.err;
    EXPECT_TRUE(test_util::ReadFile(newest_ + "/manifest.pb") == manifest)
        << c.locked << ": the unreadable checkpoint was replaced";
    EXPECT_FALSE(fs::exists(dir_.Path("run/checkpoints/step-00000003"))) << c.locked;
  }
  // A corrupt one (truncated) is still skipped by name.
  fs::resize_file(newest_ + "/model.data", 100);
  const CommandResult r = ResumeLatest();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("dropk-train: skipped checkpoint " + newest_), std::string::npos)
      << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("resumed from " + dir_.Path("run/checkpoints/step-00000001")),
            std::string::npos)
      << r.out;
}

// A LATEST the run's user may not read was passed over: the run resumed
// from the newest step-* that verifies and its first save replaced LATEST,
// whatever it named. Refused like an unreadable checkpoint: exit 2, naming
// LATEST, the system's reason and the fix, with LATEST and the checkpoints
// kept.
TEST_F(UnreadableCheckpointTest, AnUnreadableLatestIsRefusedNamingItAndTheFix) {
  const std::string latest = dir_.Path("run/checkpoints/LATEST");
  const std::string named = test_util::ReadFile(latest);
  ASSERT_FALSE(named.empty());
  fs::permissions(latest, fs::perms::none);
  const CommandResult r = ResumeLatest();
  fs::permissions(latest, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                              fs::perms::others_read);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.err.rfind("dropk-train: --resume: " + latest + ": open: Permission denied", 0), 0u)
      << r.err;
  EXPECT_NE(r.err.find("give the run's user read access to " + latest + ", or remove it"),
            std::string::npos)
      << r.err;
  EXPECT_EQ((r.out + r.err).find("resumed from"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(test_util::ReadFile(latest), named);
  EXPECT_FALSE(fs::exists(dir_.Path("run/checkpoints/step-00000003")));
}

// A run directory whose checkpoints/ may not be searched read "holds
// neither manifest.pb nor LATEST", as if it were no run directory.
TEST_F(UnreadableCheckpointTest, CkptSaysWhyARunsCheckpointsCannotBeLookedAt) {
  const std::string checkpoints = dir_.Path("run/checkpoints");
  const fs::perms before = fs::status(checkpoints).permissions();
  fs::permissions(checkpoints, fs::perms::none);
  for (const char* verb : {"inspect", "verify"}) {
    const CommandResult r =
        RunCommand(as_nobody_ + kBin + "dropk ckpt " + verb + " " + dir_.Path("run"));
    EXPECT_EQ(r.exit_code, 2) << verb << "\n" << r.out << r.err;
    EXPECT_EQ(r.err, "dropk: " + checkpoints + "/LATEST: Permission denied\n") << verb;
  }
  fs::permissions(checkpoints, before);
}

TEST_F(UnreadableCheckpointTest, CkptSaysPermissionDeniedNotCorruptOrMissing) {
  const fs::perms before = fs::status(newest_).permissions();
  fs::permissions(newest_, fs::perms::none);
  for (const char* verb : {"inspect", "verify"}) {
    for (const std::string& path : {newest_, dir_.Path("run")}) {
      const CommandResult r = RunCommand(as_nobody_ + kBin + "dropk ckpt " + verb + " " + path);
      EXPECT_NE(r.exit_code, 0) << verb << " " << path << "\n" << r.out << r.err;
      EXPECT_NE(r.err.find(newest_), std::string::npos) << verb << " " << path << "\n" << r.err;
      EXPECT_NE(r.err.find("manifest.pb"), std::string::npos) << r.err;
      EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
      EXPECT_EQ(r.err.find("holds no checkpoint"), std::string::npos) << r.err;
    }
  }
  fs::permissions(newest_, before);
}

}  // namespace
}  // namespace dropk
