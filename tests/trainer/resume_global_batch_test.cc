// Resuming with another global batch (ranks x batch_size x
// gradient_accumulation_steps x block_size tokens per step) than the
// checkpoint's run: one warning line names both and the flags that keep the
// checkpoint's. It used to log only "config batch_size: 8 -> 16 (allowed)",
// and nothing at all when the number of ranks changed it (tests/mpi covers
// that case).
#include <gmock/gmock.h>
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

using ::testing::HasSubstr;
using ::testing::Not;

class ResumeGlobalBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test_util::PrepareShakespeareData(tmp_.Path("data")).ok());
    // One step of the tiny smoke model: 1 rank x batch_size=8 x
    // gradient_accumulation_steps=1 x block_size=32 = 256 tokens per step.
    std::ostringstream log;
    ASSERT_TRUE(RunTraining(Config(1), *comm_, log).ok()) << log.str();
  }

  TrainConfig Config(int max_iters) {
    return test_util::TinySmokeEveryStepConfig(tmp_.Path("data"), tmp_.Path("run"), max_iters);
  }

  // The log of resuming the run for one more step with another split of
  // each rank's batch.
  std::string Resume(int batch_size, int gradient_accumulation_steps) {
    TrainConfig resumed = Config(2);
    resumed.set_batch_size(batch_size);
    resumed.set_gradient_accumulation_steps(gradient_accumulation_steps);
    resumed.set_resume("latest");
    std::ostringstream log;
    EXPECT_TRUE(RunTraining(resumed, *comm_, log).ok()) << log.str();
    return log.str();
  }

  test_util::ScopedTempDir tmp_{"resume_global_batch"};
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
};

TEST_F(ResumeGlobalBatchTest, AnotherBatchSizeNamesBothGlobalBatchesAndTheFlagThatKeepsIt) {
  EXPECT_THAT(Resume(16, 1),
              HasSubstr("dropk-train: warning: resume: the global batch changes from 256 tokens "
                        "per step (1 rank(s) x batch_size=8 x gradient_accumulation_steps=1 x "
                        "block_size=32) to 512 (1 rank(s) x batch_size=16 x "
                        "gradient_accumulation_steps=1 x block_size=32); to keep 256 on 1 "
                        "rank(s), pass --batch_size=8\n"));
}

TEST_F(ResumeGlobalBatchTest, OffersBothFlagsWhereEitherKeepsIt) {
  EXPECT_THAT(Resume(2, 2), HasSubstr(" to 128 (1 rank(s) x batch_size=2 x "
                                      "gradient_accumulation_steps=2 x block_size=32); to keep 256 "
                                      "on 1 rank(s), pass --batch_size=4 or "
                                      "--gradient_accumulation_steps=4\n"));
}

TEST_F(ResumeGlobalBatchTest, TheSameGlobalBatchSplitOtherwiseLogsNoWarning) {
  const std::string log = Resume(4, 2);
  EXPECT_THAT(log, HasSubstr("config batch_size: 8 -> 4 (allowed)"));
  EXPECT_THAT(log, Not(HasSubstr("global batch")));
}

}  // namespace
}  // namespace dropk
