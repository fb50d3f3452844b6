// --resume=PATH from outside checkpoint_dir, into a checkpoint_dir that
// already holds checkpoints: refused before training, with nothing there
// changed. It used to train, point LATEST at the other run's continuation
// and let keep_last delete the checkpoints already there.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>

#include "support/shakespeare_data.h"
#include "support/temp_dir.h"
#include "support/tiny_smoke_run.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

class ResumeIntoAnotherRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test_util::PrepareShakespeareData(tmp_.Path("data")).ok());
  }

  // The tiny smoke model trained to max_iters into tmp/run, saving every step.
  TrainConfig Config(const std::string& run, int max_iters) {
    TrainConfig c =
        test_util::TinySmokeEveryStepConfig(tmp_.Path("data"), tmp_.Path(run), max_iters);
    c.set_keep_last(1);
    return c;
  }

  absl::Status Train(const TrainConfig& c, std::ostringstream* log) {
    return RunTraining(c, *comm_, *log).status();
  }

  // Every entry of run/checkpoints, with LATEST's content.
  std::set<std::string> Listing(const std::string& run) {
    std::set<std::string> names;
    const std::filesystem::path dir = tmp_.Path(run) + "/checkpoints";
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      names.insert(entry.path().filename().string());
    }
    std::ifstream latest(dir / "LATEST");
    names.insert("LATEST -> " + std::string(std::istreambuf_iterator<char>(latest), {}));
    return names;
  }

  test_util::ScopedTempDir tmp_{"resume_other_run"};
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
};

TEST_F(ResumeIntoAnotherRunTest, IsRefusedNamingBothAndChangesNothing) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config("a", 2), &log).ok()) << log.str();
  TrainConfig b = Config("b", 3);
  b.set_seed(7);
  ASSERT_TRUE(Train(b, &log).ok()) << log.str();
  const std::set<std::string> before = Listing("b");

  TrainConfig resume = Config("b", 4);
  const std::string from = tmp_.Path("a") + "/checkpoints/step-00000002";
  resume.set_resume(from);
  std::ostringstream resume_log;
  const absl::Status s = Train(resume, &resume_log);
  ASSERT_FALSE(s.ok()) << resume_log.str();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("--resume=" + from), std::string::npos) << s;
  EXPECT_NE(s.message().find("checkpoint_dir " + tmp_.Path("b") + "/checkpoints"),
            std::string::npos)
      << s;
  EXPECT_NE(s.message().find("--resume=latest"), std::string::npos) << s;
  EXPECT_EQ(resume_log.str().find("| loss "), std::string::npos) << resume_log.str();
  EXPECT_EQ(Listing("b"), before);
}

TEST_F(ResumeIntoAnotherRunTest, OwnCheckpointsAndAnEmptyDirectoryAreStillResumedFrom) {
  std::ostringstream log;
  TrainConfig a = Config("a", 3);
  a.set_keep_last(3);
  ASSERT_TRUE(Train(a, &log).ok()) << log.str();
  // Back to an older checkpoint of the same directory (the advice after a
  // divergence), named with a trailing slash, and through the run directory.
  TrainConfig rewind = Config("a", 4);
  rewind.set_keep_last(3);
  rewind.set_resume(tmp_.Path("a") + "/checkpoints/step-00000002/");
  ASSERT_TRUE(Train(rewind, &log).ok()) << log.str();
  TrainConfig run_dir = Config("a", 5);
  run_dir.set_resume(tmp_.Path("a"));
  ASSERT_TRUE(Train(run_dir, &log).ok()) << log.str();
  // Into a run of its own: nothing there to mix with.
  TrainConfig fork = Config("c", 6);
  fork.set_resume(tmp_.Path("a") + "/checkpoints/step-00000005");
  ASSERT_TRUE(Train(fork, &log).ok()) << log.str();
  EXPECT_NE(log.str().find("resumed from " + tmp_.Path("a") + "/checkpoints/step-00000005"),
            std::string::npos)
      << log.str();
}

}  // namespace
}  // namespace dropk
