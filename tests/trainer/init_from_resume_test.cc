// A fine-tuning job restarted with its own command (--init_from and
// --resume=latest) resumes from its checkpoint without reading init_from,
// which the checkpoint overrides anyway. It read the whole file first, and
// a file gone since (scratch space, another node) kept the run from
// resuming at all.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "support/shakespeare_data.h"
#include "support/temp_dir.h"
#include "support/tiny_smoke_run.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

class InitFromResumeTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(test_util::PrepareShakespeareData(tmp_.Path("data")).ok()); }

  // max_iters steps into tmp/run, resuming from its newest checkpoint when
  // there is one, starting from a weights file that is not there.
  TrainConfig Config(int max_iters) {
    TrainConfig c =
        test_util::TinySmokeEveryStepConfig(tmp_.Path("data"), tmp_.Path("run"), max_iters);
    c.set_resume("latest");
    c.set_init_from(Gone());
    return c;
  }

  std::string Gone() { return tmp_.Path("gone/model.safetensors"); }

  test_util::ScopedTempDir tmp_{"init_from_resume"};
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
};

TEST_F(InitFromResumeTest, AResumeDoesNotReadInitFrom) {
  TrainConfig first = Config(2);
  first.clear_init_from();
  std::ostringstream log;
  ASSERT_TRUE(RunTraining(first, *comm_, log).ok()) << log.str();

  std::ostringstream resume_log;
  absl::StatusOr<TrainSummary> resumed = RunTraining(Config(3), *comm_, resume_log);
  ASSERT_TRUE(resumed.ok()) << resumed.status() << "\n" << resume_log.str();
  EXPECT_EQ(resumed->resumed_from, tmp_.Path("run") + "/checkpoints/step-00000002");
  EXPECT_NE(resume_log.str().find("init_from=" + Gone() +
                                  " not read: --resume=latest resumes from a checkpoint"),
            std::string::npos)
      << resume_log.str();
}

TEST_F(InitFromResumeTest, AFreshStartStillReadsIt) {
  std::ostringstream log;
  const absl::Status s = RunTraining(Config(2), *comm_, log).status();
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_NE(s.message().find("init_from=" + Gone()), std::string::npos) << s;
}

}  // namespace
}  // namespace dropk
