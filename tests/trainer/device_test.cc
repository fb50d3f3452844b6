// Device and precision come from the config: what this build cannot run is
// refused at validation with one line naming the field.
#include "trainer/device.h"

#include <gtest/gtest.h>

#include "trainer/config.h"

namespace dropk {
namespace {

TEST(DeviceTest, CpuIsTheDefaultAndItsMemoryIsHost) {
  TrainConfig config = DefaultTrainConfig();
  EXPECT_EQ(TrainingDevice(config), Device::kCpu);
  EXPECT_EQ(MemoryKindOf(TrainingDevice(config)), MemoryKind::kHost);
  EXPECT_TRUE(DeviceProblems(config).empty());
  config.set_device(TrainConfig::CPU);
  config.set_precision(TrainConfig::FP32);
  EXPECT_TRUE(ValidateTrainConfig(config).ok());
}

TEST(DeviceTest, CudaIsRefusedInABuildWithoutIt) {
  if (CudaCompiledIn()) GTEST_SKIP() << "this build has the CUDA kernels";
  TrainConfig config = DefaultTrainConfig();
  config.set_device(TrainConfig::CUDA);
  EXPECT_EQ(TrainingDevice(config), Device::kCuda);
  EXPECT_EQ(MemoryKindOf(Device::kCuda), MemoryKind::kCuda);
  const absl::Status s = ValidateTrainConfig(config);
  ASSERT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("device: CUDA is not available in this build (built without CUDA)"),
            std::string::npos)
      << s;
}

TEST(DeviceTest, CudaIsAcceptedInABuildWithIt) {
  if (!CudaCompiledIn()) GTEST_SKIP() << "this build has no CUDA kernels";
  TrainConfig config = DefaultTrainConfig();
  config.set_device(TrainConfig::CUDA);
  for (auto precision : {TrainConfig::FP32, TrainConfig::TF32, TrainConfig::BF16}) {
    config.set_precision(precision);
    EXPECT_TRUE(DeviceProblems(config).empty()) << TrainConfig::Precision_Name(precision);
  }
  EXPECT_EQ(TrainingKernelOptions(config, 3, 0).precision, MatmulPrecision::kBf16);
  EXPECT_EQ(TrainingKernelOptions(config, 3, 0).num_threads, 3);
  // Training takes the flash attention kernels where they apply, unless the
  // config asks for the materialised ones.
  EXPECT_TRUE(TrainingKernelOptions(config, 3, 0).flash_attention);
  config.set_attention_kernels(TrainConfig::FLASH_WHERE_SUPPORTED);
  EXPECT_TRUE(TrainingKernelOptions(config, 3, 0).flash_attention);
  config.set_attention_kernels(TrainConfig::MATERIALISED);
  EXPECT_FALSE(TrainingKernelOptions(config, 3, 0).flash_attention);
  EXPECT_FALSE(TrainingKernelOptions(config, 3, 0).flash_bf16_tensor_cores);
  // The bf16 tensor-core flash kernels only when asked for by name.
  config.set_attention_kernels(TrainConfig::FLASH_BF16_TENSOR_CORES);
  EXPECT_TRUE(DeviceProblems(config).empty());
  EXPECT_TRUE(TrainingKernelOptions(config, 3, 0).flash_attention);
  EXPECT_TRUE(TrainingKernelOptions(config, 3, 0).flash_bf16_tensor_cores);
}

// FLASH_BF16_TENSOR_CORES names bf16 CUDA kernels: with another precision,
// or on the CPU, the config is refused naming both fields.
TEST(DeviceTest, Bf16TensorCoreFlashNeedsCudaAndBf16) {
  TrainConfig config = DefaultTrainConfig();
  config.set_attention_kernels(TrainConfig::FLASH_BF16_TENSOR_CORES);
  config.set_precision(TrainConfig::BF16);
  const absl::Status s = ValidateTrainConfig(config);  // the CPU
  ASSERT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("attention_kernels: FLASH_BF16_TENSOR_CORES needs device: CUDA and "
                             "precision: BF16"),
            std::string::npos)
      << s;
  if (!CudaCompiledIn()) return;
  config.set_device(TrainConfig::CUDA);
  config.set_precision(TrainConfig::TF32);
  EXPECT_EQ(DeviceProblems(config).size(), 1u);
  config.set_precision(TrainConfig::BF16);
  EXPECT_TRUE(DeviceProblems(config).empty());
}

TEST(DeviceTest, Tf32IsRefusedOnTheCpuNamingTheField) {
  TrainConfig config = DefaultTrainConfig();
  config.set_precision(TrainConfig::TF32);
  const absl::Status s = ValidateTrainConfig(config);
  ASSERT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("precision: TF32 needs device: CUDA"), std::string::npos) << s;
  config.set_precision(TrainConfig::FP32);
  EXPECT_EQ(TrainingKernelOptions(config, 2, 5).precision, MatmulPrecision::kFp32);
  EXPECT_EQ(TrainingKernelOptions(config, 2, 5).cuda_device, 0);
}

TEST(DeviceTest, Bf16IsAcceptedOnTheCpu) {
  TrainConfig config = DefaultTrainConfig();
  config.set_precision(TrainConfig::BF16);
  EXPECT_TRUE(DeviceProblems(config).empty());
  EXPECT_EQ(TrainingKernelOptions(config, 2, 0).precision, MatmulPrecision::kBf16);
}

}  // namespace
}  // namespace dropk
