// --checkpoint of `dropk sample` and `dropk study topk` takes one
// checkpoint, a run's checkpoints directory or the run directory itself (the
// trainer's out_dir); from a directory it picks LATEST's checkpoint and says
// "using step N" on stderr. A run directory was refused ("give its
// checkpoints directory"), and a checkpoints directory was used without
// saying which step.
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

using test_util::CommandResult;
using test_util::RunCommand;

const std::string kBin = DROPK_BINARY_DIR "/bin/";

class CheckpointFlagTest : public ::testing::Test {
 protected:
  // step-00000001 and step-00000002 in run/checkpoints, LATEST naming the
  // second; once for every test of the suite.
  static void SetUpTestSuite() {
    dir_ = new test_util::ScopedTempDir("checkpoint_flag");
    ASSERT_TRUE(test_util::TrainTinySmokeRun(dir_->path(), 1).ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  static CommandResult Sample(const std::string& checkpoint) {
    return RunCommand(kBin + "dropk sample --checkpoint " + checkpoint +
                      " --prompt a --max-tokens 2 --seed 1 --threads 1");
  }
  static std::string Path(const std::string& name) { return dir_->Path(name); }

  static test_util::ScopedTempDir* dir_;
};
test_util::ScopedTempDir* CheckpointFlagTest::dir_ = nullptr;

TEST_F(CheckpointFlagTest, SampleTakesARunOrCheckpointsDirectorySayingTheStepPicked) {
  const std::string picked =
      "dropk: using step 2 (" + Path("run/checkpoints/step-00000002") + ")\n";
  for (const std::string dir : {"run", "run/checkpoints"}) {
    SCOPED_TRACE(dir);
    const CommandResult r = Sample(Path(dir));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err.rfind(picked, 0), 0u) << r.err;
    EXPECT_NE(r.err.find("checkpoint step 2"), std::string::npos) << r.err;
  }
  // One checkpoint named: nothing was picked, nothing to say.
  const CommandResult one = Sample(Path("run/checkpoints/step-00000001"));
  EXPECT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.err.find("using step"), std::string::npos) << one.err;
  EXPECT_NE(one.err.find("checkpoint step 1"), std::string::npos) << one.err;
}

TEST_F(CheckpointFlagTest, ADirectoryWithoutACheckpointIsAUsageErrorNamingIt) {
  std::filesystem::create_directories(Path("empty"));
  std::filesystem::create_directories(Path("empty_run/checkpoints"));
  for (const auto& [given, named] : {std::pair{Path("empty"), Path("empty")},
                                     std::pair{Path("empty_run"), Path("empty_run/checkpoints")}}) {
    SCOPED_TRACE(given);
    const CommandResult r = Sample(given);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err.rfind("dropk: --checkpoint: no valid checkpoint in " + named, 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// A corrupt LATEST was passed over without a word: the text came from an
// older checkpoint, and only dropk-serve said why. Now the step picked is
// followed by the one skipped and its reason.
TEST_F(CheckpointFlagTest, SampleNamesANewerCheckpointItSkippedAndWhy) {
  namespace fs = std::filesystem;
  fs::copy(Path("run/checkpoints"), Path("corrupt"), fs::copy_options::recursive);
  const std::string weights = Path("corrupt/step-00000002/model.data");
  std::fstream file(weights, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(100);
  file.put('\xff');
  file.close();
  const CommandResult r = Sample(Path("corrupt"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.rfind("dropk: using step 1 (" + Path("corrupt/step-00000001") +
                            "); skipped: checkpoint " + Path("corrupt/step-00000002"),
                        0),
            0u)
      << r.err;
  EXPECT_NE(r.err.find("model.data: tensor model/transformer.wte.weight: CRC32C mismatch"),
            std::string::npos)
      << r.err;
}

// A checkpoint copied for sampling without its optimizer files (twice the
// weights' bytes, never read to sample) was refused: "optim-...: missing
// or unreadable". It samples as the whole one does; verify, which checks
// everything a resume needs, still names the missing file.
TEST_F(CheckpointFlagTest, SampleTakesACheckpointWithoutItsOptimizerFiles) {
  namespace fs = std::filesystem;
  fs::create_directories(Path("weights"));
  fs::copy(Path("run/checkpoints/step-00000002"), Path("weights/step-00000002"));
  for (const auto& entry : fs::directory_iterator(Path("weights/step-00000002"))) {
    if (entry.path().filename().string().rfind("optim-", 0) == 0) fs::remove(entry.path());
  }
  std::ofstream(Path("weights/LATEST")) << "step-00000002\n";
  const CommandResult whole = Sample(Path("run/checkpoints"));
  const CommandResult weights = Sample(Path("weights"));
  EXPECT_EQ(weights.exit_code, 0) << weights.err;
  EXPECT_EQ(weights.err.rfind("dropk: using step 2 (" + Path("weights/step-00000002") + ")\n", 0),
            0u)
      << weights.err;
  EXPECT_EQ(weights.out, whole.out);
  const CommandResult verify = RunCommand(kBin + "dropk ckpt verify " + Path("weights"));
  EXPECT_EQ(verify.exit_code, 1) << verify.err;
  EXPECT_NE(verify.err.find("optim-rank00000-of-00001.data"), std::string::npos) << verify.err;
}

TEST_F(CheckpointFlagTest, StudyTopKTakesARunDirectorySayingTheStepPicked) {
  const CommandResult r =
      RunCommand(kBin + "dropk study topk --checkpoint " + Path("run") + " --out " + Path("topk") +
                 " --prompt a --samples 2 --max-tokens 2 --ks 1 --temperatures 1 --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("dropk: using step 2 (" + Path("run/checkpoints/step-00000002") + ")\n"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace dropk
