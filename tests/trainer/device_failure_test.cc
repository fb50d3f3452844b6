// A GPU that fails mid-run (DeviceError from the kernels) ends dropk-train's
// run with one clear status and exit code 1, saves nothing after the
// failure, leaves the last checkpoint intact and resumable, and releases the
// run directory. FailingKernels stands in for the GPU, so no GPU is needed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "base/exit_codes.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "support/failing_kernels.h"
#include "support/shakespeare_data.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

class DeviceFailureTest : public ::testing::TestWithParam<bool> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::path(::testing::TempDir()) /
                                     ("dropk_device_failure_" + std::to_string(getpid())));
    std::filesystem::remove_all(*dir_);
    ASSERT_TRUE(test_util::PrepareShakespeareData((*dir_ / "data").string()).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  // 20 steps of the tiny model, a checkpoint every 4 steps; async
  // checkpoints per the test's parameter.
  TrainConfig Config(const std::string& run) {
    TrainConfig c = DefaultTrainConfig();
    EXPECT_TRUE(MergeTrainConfigFile(DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto", &c).ok());
    c.set_data_dir((*dir_ / "data").string());
    c.set_out_dir((*dir_ / run).string());
    c.set_max_iters(20);
    c.set_lr_decay_iters(20);
    c.set_eval_interval(1000);
    c.set_log_interval(1);
    c.set_save_every(4);
    c.set_keep_last(10);
    c.set_sample_tokens(0);
    c.set_num_threads(2);
    c.set_seed(1234);
    c.set_gradient_accumulation_steps(1);
    c.set_async_checkpoints(GetParam());
    EXPECT_TRUE(ValidateTrainConfig(c).ok());
    return c;
  }
  static std::filesystem::path* dir_;
};
std::filesystem::path* DeviceFailureTest::dir_ = nullptr;

// Kernels that fail at the first AttentionBackward of step `step` (0-based)
// of the tiny model (2 layers, no gradient accumulation).
TrainingSeams FailAtStep(int step, test_util::FailingKernels** out) {
  TrainingSeams seams;
  seams.make_kernels =
      [step, out](Device,
                  const KernelOptions& options) -> absl::StatusOr<std::unique_ptr<Kernels>> {
    absl::StatusOr<std::unique_ptr<Kernels>> cpu = MakeKernels(Device::kCpu, options);
    if (!cpu.ok()) return cpu.status();
    auto failing = std::make_unique<test_util::FailingKernels>(*std::move(cpu), "AttentionBackward",
                                                               /*fail_on_call=*/2 * step + 1);
    *out = failing.get();
    return std::unique_ptr<Kernels>(std::move(failing));
  };
  return seams;
}

std::string ReadLatest(const std::string& checkpoints_dir) {
  std::ifstream in(checkpoints_dir + "/" + kLatestFileName);
  std::string s;
  std::getline(in, s);
  return s;
}

TEST_P(DeviceFailureTest, EndsWithOneLineExitOneAndTheLastCheckpointIntact) {
  const TrainConfig config = Config(GetParam() ? "async" : "sync");
  auto comm = MakeSingleProcessCommunicator();
  std::ostringstream log;
  test_util::FailingKernels* gpu = nullptr;
  // Steps 0..9 train; 4 and 8 are saved after steps 3 and 7; step 10 fails
  // in its backward pass.
  const absl::StatusOr<TrainSummary> run = RunTraining(config, *comm, log, FailAtStep(10, &gpu));
  ASSERT_NE(gpu, nullptr);
  EXPECT_TRUE(gpu->failed());
  ASSERT_FALSE(run.ok()) << log.str();
  EXPECT_EQ(ExitCodeFor(run.status()), kExitFailure);
  EXPECT_EQ(run.status().message(),
            std::string("the GPU failed: AttentionBackward on cuda:0: ") +
                test_util::kFakeIllegalAddress +
                "; checkpoints saved so far are intact, resume with --resume=latest")
      << run.status();
  // Nothing touched the broken device after the failure: no save, no
  // evaluation, no copy of the parameters.
  EXPECT_EQ(gpu->calls_after_failure(), 0);

  // The last checkpoint is the one before the failure, complete and verified.
  const std::string checkpoints = CheckpointsDirOf(config);
  const std::string latest = ReadLatest(checkpoints);
  ASSERT_FALSE(latest.empty()) << log.str();
  const std::string latest_dir = checkpoints + "/" + latest;
  absl::StatusOr<ValidatedManifest> manifest = OpenCheckpoint(latest_dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->manifest.step(), 8);
  EXPECT_TRUE(VerifyCheckpoint(latest_dir).ok());
  const std::vector<std::string> candidates = CheckpointCandidates(checkpoints, nullptr);
  for (const std::string& c : candidates) {
    EXPECT_LE(OpenCheckpoint(c)->manifest.step(), 8) << c << " was saved after the failure";
  }

  // The run directories were released and the run resumes where it was
  // saved, to the end, on working kernels.
  TrainConfig resume = config;
  resume.set_resume("latest");
  std::ostringstream resume_log;
  const absl::StatusOr<TrainSummary> resumed = RunTraining(resume, *comm, resume_log);
  ASSERT_TRUE(resumed.ok()) << resumed.status() << "\n" << resume_log.str();
  EXPECT_EQ(resumed->resumed_from, latest_dir);
  EXPECT_EQ(resumed->steps, 20);
}

INSTANTIATE_TEST_SUITE_P(AsyncAndSyncCheckpoints, DeviceFailureTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Async" : "Sync";
                         });

}  // namespace
}  // namespace dropk
