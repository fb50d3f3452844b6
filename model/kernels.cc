// MakeKernels: the one place that chooses a device implementation.
#include "model/kernels.h"

#include "cpu/cpu_kernels.h"

namespace dropk {

absl::StatusOr<std::unique_ptr<Kernels>> MakeKernels(Device device, int num_threads) {
  if (num_threads < 0) {
    return absl::InvalidArgumentError("num_threads must be >= 0");
  }
  switch (device) {
    case Device::kCpu:
      return std::unique_ptr<Kernels>(new CpuKernels(num_threads));
    case Device::kCuda:
      return absl::UnimplementedError(
          "device cuda: this build has no CUDA kernels yet (configure with -DDROPK_CUDA=ON once "
          "model/cuda/ exists); use the cpu device");
  }
  return absl::InvalidArgumentError("unknown device");
}

}  // namespace dropk
