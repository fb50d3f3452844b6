#include "trainer/device.h"

#include "absl/strings/str_cat.h"

// Set by trainer/CMakeLists.txt from DROPK_CUDA.
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
  if (config.precision() != TrainConfig::FP32 &&
      config.precision() != TrainConfig::PRECISION_UNSPECIFIED) {
    problems.push_back(absl::StrCat("precision: ", TrainConfig::Precision_Name(config.precision()),
                                    " is not implemented for device ", cuda ? "CUDA" : "CPU",
                                    " yet"));
  }
  return problems;
}

}  // namespace dropk
