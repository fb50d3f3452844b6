// Checkpoints and the GPU (issue 10): a run stopped and resumed on the GPU is
// bitwise the same as a straight GPU run (DESIGN invariant 3, on CUDA), and a
// checkpoint moves between the CPU and the GPU either way, the resumed run
// continuing the same trajectory (within fp32 rounding: the devices sum in
// other orders). Every test skips with one line where there is no GPU.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <string>

#include "model/kernels.h"
#include "support/relative_error.h"
#include "support/shakespeare_data.h"
#include "support/temp_dir.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

class GpuResumeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new test_util::ScopedTempDir("gpu_resume");
    dir_ = new fs::path(scratch_->path());
    ASSERT_TRUE(test_util::PrepareShakespeareData((*dir_ / "data").string()).ok());
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete scratch_;
  }

  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Kernels>> gpu = MakeKernels(Device::kCuda, KernelOptions{});
    if (!gpu.ok()) GTEST_SKIP() << "needs a GPU: " << gpu.status().message();
  }

  // tiny_smoke with dropout on; the schedule ends at step 20 whatever
  // max_iters is, so a run stopped at 10 and resumed matches a straight one.
  TrainConfig Config(const std::string& run, int max_iters, TrainConfig::Device device,
                     TrainConfig::Precision precision = TrainConfig::FP32) {
    TrainConfig c = DefaultTrainConfig();
    EXPECT_TRUE(MergeTrainConfigFile(DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto", &c).ok());
    c.set_data_dir((*dir_ / "data").string());
    c.set_out_dir((*dir_ / run).string());
    c.set_device(device);
    c.set_precision(precision);
    c.set_max_iters(max_iters);
    c.set_warmup_iters(5);
    c.set_lr_decay_iters(20);
    c.set_eval_interval(1000);
    c.set_eval_iters(2);
    c.set_sample_tokens(0);
    c.set_num_threads(1);
    EXPECT_TRUE(ValidateTrainConfig(c).ok());
    return c;
  }

  TrainSummary Train(const TrainConfig& c) {
    std::ostringstream log;
    absl::StatusOr<TrainSummary> s = RunTraining(c, *comm_, log);
    EXPECT_TRUE(s.ok()) << s.status() << "\n" << log.str();
    return s.ok() ? *std::move(s) : TrainSummary{};
  }

  // The run `first` saved at step 10, resumed for 10 more steps on `then`.
  TrainSummary SplitRun(const std::string& run, TrainConfig::Device first, TrainConfig::Device then,
                        TrainConfig::Precision precision = TrainConfig::FP32) {
    Train(Config(run, 10, first, precision));
    TrainConfig resumed = Config(run, 20, then, precision);
    resumed.set_resume("latest");
    return Train(resumed);
  }

  static test_util::ScopedTempDir* scratch_;
  static fs::path* dir_;
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
};
test_util::ScopedTempDir* GpuResumeTest::scratch_ = nullptr;
fs::path* GpuResumeTest::dir_ = nullptr;

TEST_F(GpuResumeTest, StopAndResumeOnTheGpuIsBitwiseTheSameAsStraight) {
  const TrainSummary straight = Train(Config("gpu_straight", 20, TrainConfig::CUDA));
  const TrainSummary split = SplitRun("gpu_split", TrainConfig::CUDA, TrainConfig::CUDA);
  ASSERT_EQ(split.steps, 20);
  EXPECT_EQ(straight.final_params, split.final_params) << "parameters differ after resume";
  EXPECT_EQ(straight.last_train_loss, split.last_train_loss);
}

// BF16 on the GPU: bf16 projections and, at tiny_smoke's head size 16, the
// flash attention kernels that training picks (dropout inside the kernels).
TEST_F(GpuResumeTest, StopAndResumeInBf16WithFlashAttentionIsBitwiseTheSame) {
  const TrainSummary straight =
      Train(Config("gpu_bf16_straight", 20, TrainConfig::CUDA, TrainConfig::BF16));
  const TrainSummary split =
      SplitRun("gpu_bf16_split", TrainConfig::CUDA, TrainConfig::CUDA, TrainConfig::BF16);
  ASSERT_EQ(split.steps, 20);
  EXPECT_EQ(straight.final_params, split.final_params) << "parameters differ after resume";
  EXPECT_EQ(straight.last_train_loss, split.last_train_loss);
}

TEST_F(GpuResumeTest, CheckpointsMoveBetweenCpuAndGpu) {
  const TrainSummary cpu = Train(Config("cpu_straight", 20, TrainConfig::CPU));
  const TrainSummary cpu_then_gpu = SplitRun("cpu_gpu", TrainConfig::CPU, TrainConfig::CUDA);
  const TrainSummary gpu_then_cpu = SplitRun("gpu_cpu", TrainConfig::CUDA, TrainConfig::CPU);
  ASSERT_EQ(cpu_then_gpu.steps, 20);
  ASSERT_EQ(gpu_then_cpu.steps, 20);
  // Masks are bitwise the same on both devices; what differs is rounding.
  EXPECT_LT(test_util::RelativeError(cpu_then_gpu.final_params, cpu.final_params), 1e-4);
  EXPECT_LT(test_util::RelativeError(gpu_then_cpu.final_params, cpu.final_params), 1e-4);
  EXPECT_NEAR(cpu_then_gpu.last_train_loss, cpu.last_train_loss, 1e-3);
  EXPECT_NEAR(gpu_then_cpu.last_train_loss, cpu.last_train_loss, 1e-3);
}

}  // namespace
}  // namespace dropk
