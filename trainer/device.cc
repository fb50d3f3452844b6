#include "trainer/device.h"

#include "absl/strings/str_cat.h"

// Set by trainer/CMakeLists.txt when the build has the CUDA kernels.
#ifndef DROPK_HAVE_CUDA
#define DROPK_HAVE_CUDA 0
#endif

namespace dropk {

Device TrainingDevice(const TrainConfig& config) {
  return config.device() == TrainConfig::CUDA ? Device::kCuda : Device::kCpu;
}

MemoryKind MemoryKindOf(Device device) {
  return device == Device::kCuda ? MemoryKind::kCuda : MemoryKind::kHost;
}

std::vector<std::string> DeviceProblems(const TrainConfig& config) {
  std::vector<std::string> problems;
  const bool cuda = config.device() == TrainConfig::CUDA;
  if (cuda && !DROPK_HAVE_CUDA) {
    problems.push_back("device: CUDA is not available in this build (built without CUDA)");
  }
  if (!cuda && config.precision() == TrainConfig::TF32) {
    problems.push_back(
        "precision: TF32 needs device: CUDA (a tensor-core format; the CPU offers fp32 and bf16)");
  }
  if (config.attention_kernels() == TrainConfig::FLASH_BF16_TENSOR_CORES &&
      !(cuda && config.precision() == TrainConfig::BF16)) {
    problems.push_back(
        "attention_kernels: FLASH_BF16_TENSOR_CORES needs device: CUDA and precision: BF16 (bf16 "
        "tensor-core kernels)");
  }
  return problems;
}

MatmulPrecision TrainingPrecision(const TrainConfig& config) {
  switch (config.precision()) {
    case TrainConfig::TF32: return MatmulPrecision::kTf32;
    case TrainConfig::BF16: return MatmulPrecision::kBf16;
    default: return MatmulPrecision::kFp32;
  }
}

KernelOptions TrainingKernelOptions(const TrainConfig& config, int num_threads, int local_rank) {
  KernelOptions options;
  options.num_threads = num_threads;
  options.precision = TrainingPrecision(config);
  if (config.device() == TrainConfig::CUDA) {
    // One GPU per rank of a node; ranks beyond the GPU count share them.
    const int gpus = CudaDeviceCount();
    options.cuda_device = gpus > 0 ? local_rank % gpus : 0;
    // Unless the config says MATERIALISED, flash attention wherever the
    // kernels take the shape (TF32 or BF16, head size 16, 32 or 64): on an
    // H200 it ran GPT-2 124M's bf16 step 3.5% faster than the materialised
    // kernels at dropout 0.1 and 2% slower at 0, and keeps no (B,NH,T,T)
    // probabilities (bench/GPU_NOTES.md).
    options.flash_attention = config.attention_kernels() != TrainConfig::MATERIALISED;
    options.flash_bf16_tensor_cores =
        config.attention_kernels() == TrainConfig::FLASH_BF16_TENSOR_CORES;
  }
  return options;
}

}  // namespace dropk
