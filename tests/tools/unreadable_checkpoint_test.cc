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

#include <algorithm>
#include <filesystem>
#include <fstream>
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

// A checkpoint file or directory the user may not read or write is the
// user's to fix, as every path the OS refuses: exit 2, one line naming the
// file and the OS's reason. A manifest.pb, model.data or LATEST at mode 000
// exited 1, and the directory holding them 2; an export whose OUT.tmp may
// not be written exited 1 without naming --out.
TEST_F(UnreadableCheckpointTest, CkptPermissionProblemsExitTwoNamingTheFileAndReason) {
  const std::string exports = dir_.Path("exports");
  fs::create_directory(exports);
  fs::permissions(exports, fs::perms::all);
  for (const std::string& locked :
       {newest_ + "/manifest.pb", newest_ + "/model.data", dir_.Path("run/checkpoints/LATEST")}) {
    const fs::perms before = fs::status(locked).permissions();
    fs::permissions(locked, fs::perms::none);
    for (const char* verb : {"verify", "export"}) {
      SCOPED_TRACE(locked + " " + verb);
      const std::string out = std::string(verb) == "export" ? " --out " + exports + "/e.bin" : "";
      const CommandResult r =
          RunCommand(as_nobody_ + kBin + "dropk ckpt " + verb + " " + dir_.Path("run") + out);
      EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
      EXPECT_EQ(r.err.rfind("dropk: ", 0), 0u) << r.err;
      EXPECT_NE(r.err.find(locked + ": open: Permission denied\n"), std::string::npos) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    fs::permissions(locked, before);
  }
  EXPECT_FALSE(fs::exists(exports + "/e.bin"));
  // An --out directory that may not be written, whose lock file an earlier
  // export left writable: OUT.tmp cannot be made.
  std::ofstream(exports + "/.e.bin.export-lock").close();
  fs::permissions(exports + "/.e.bin.export-lock", fs::perms::all & ~exec_bits_);
  fs::permissions(exports, fs::perms::all & ~(fs::perms::owner_write | fs::perms::group_write |
                                              fs::perms::others_write));
  const CommandResult r = RunCommand(as_nobody_ + kBin + "dropk ckpt export " + dir_.Path("run") +
                                     " --out " + exports + "/e.bin");
  fs::permissions(exports, fs::perms::all);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.err, "dropk: --out " + exports + "/e.bin: " + exports +
                       "/e.bin.tmp: open for writing: Permission denied\n");
}

// A checkpoints directory without LATEST that may be searched but not
// listed (mode --x) read "holds no checkpoint": its newest step-N cannot be
// found, and the error says why, naming it.
TEST_F(UnreadableCheckpointTest, CkptSaysACheckpointsDirectoryCannotBeListed) {
  const std::string checkpoints = dir_.Path("run/checkpoints");
  fs::remove(checkpoints + "/LATEST");
  fs::permissions(checkpoints, exec_bits_);
  for (const std::string& path : {dir_.Path("run"), checkpoints}) {
    SCOPED_TRACE(path);
    const CommandResult r = RunCommand(as_nobody_ + kBin + "dropk ckpt inspect " + path);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_EQ(r.err, "dropk: " + checkpoints +
                         ": cannot be listed (Permission denied), and without LATEST its newest "
                         "step-N is found by listing it; give this user read access to it, or "
                         "name the checkpoint (" +
                         checkpoints + "/step-N)\n");
  }
  fs::permissions(checkpoints, fs::perms::all);
}

}  // namespace
}  // namespace dropk
