// --resume=latest with a checkpoint newer than the one LATEST names (a save
// cut off between its rename and LATEST's update): the run goes by LATEST,
// and says so in one line naming the newer checkpoint and how to resume
// from it. It used to pass it over in silence.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "support/shakespeare_data.h"
#include "support/temp_dir.h"
#include "support/tiny_smoke_run.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

class NewerThanLatestTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(test_util::PrepareShakespeareData(tmp_.Path("data")).ok()); }

  // The tiny smoke model trained to max_iters into tmp/run, saving every
  // step and keeping every checkpoint.
  TrainConfig Config(int max_iters) {
    TrainConfig c =
        test_util::TinySmokeEveryStepConfig(tmp_.Path("data"), tmp_.Path("run"), max_iters);
    c.set_keep_last(10);
    return c;
  }

  absl::Status Train(const TrainConfig& c, std::ostringstream* log) {
    return RunTraining(c, *comm_, *log).status();
  }

  std::string Checkpoints() { return tmp_.Path("run") + "/checkpoints"; }

  // LATEST names step-N, as a save of step N + 1 cut off before its update
  // left it.
  void PointLatestAt(const std::string& name) {
    std::ofstream(Checkpoints() + "/LATEST", std::ios::trunc) << name << "\n";
  }

  test_util::ScopedTempDir tmp_{"newer_than_latest"};
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
};

TEST_F(NewerThanLatestTest, IsNamedWithHowToResumeFromIt) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config(3), &log).ok()) << log.str();
  PointLatestAt("step-00000001");

  TrainConfig resume = Config(4);
  resume.set_resume("latest");
  std::ostringstream resume_log;
  ASSERT_TRUE(Train(resume, &resume_log).ok()) << resume_log.str();
  const std::string out = resume_log.str();
  const std::string newest = Checkpoints() + "/step-00000003";
  EXPECT_NE(out.find("resumed from " + Checkpoints() + "/step-00000001 at step 1"),
            std::string::npos)
      << out;
  // The newest of the two newer ones, once, with the flag that resumes it.
  EXPECT_NE(out.find("warning: " + newest + " (step 3) is newer than"), std::string::npos) << out;
  EXPECT_NE(out.find("--resume=" + newest + "\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("step-00000002 (step 2)"), std::string::npos) << out;
}

TEST_F(NewerThanLatestTest, OnlyACheckpointThatOpensIsNamed) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config(3), &log).ok()) << log.str();
  PointLatestAt("step-00000001");
  // step-3 lost its manifest; step-2 still opens.
  std::filesystem::remove(Checkpoints() + "/step-00000003/manifest.pb");

  TrainConfig resume = Config(4);
  resume.set_resume("latest");
  std::ostringstream resume_log;
  ASSERT_TRUE(Train(resume, &resume_log).ok()) << resume_log.str();
  const std::string out = resume_log.str();
  EXPECT_EQ(out.find("step-00000003 (step 3)"), std::string::npos) << out;
  EXPECT_NE(out.find("--resume=" + Checkpoints() + "/step-00000002\n"), std::string::npos) << out;
}

TEST_F(NewerThanLatestTest, NothingIsSaidWhenLatestNamesTheNewest) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config(3), &log).ok()) << log.str();

  TrainConfig resume = Config(4);
  resume.set_resume("latest");
  std::ostringstream resume_log;
  ASSERT_TRUE(Train(resume, &resume_log).ok()) << resume_log.str();
  EXPECT_NE(resume_log.str().find("resumed from " + Checkpoints() + "/step-00000003"),
            std::string::npos)
      << resume_log.str();
  EXPECT_EQ(resume_log.str().find("is newer than"), std::string::npos) << resume_log.str();
}

}  // namespace
}  // namespace dropk
