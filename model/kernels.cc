// MakeKernels: the one place that chooses a device implementation.
#include "model/kernels.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cpu/cpu_kernels.h"
// Declarations and constants only (no CUDA headers), so in every build.
#include "cuda/cuda_kernels.h"
#include "kernel_math.h"

namespace dropk {

AdamWConstants AdamWConstantsOf(const AdamWArgs& a) {
  AdamWConstants k;
  k.lr = a.lr;
  k.beta1 = a.beta1;
  k.beta2 = a.beta2;
  k.eps = a.eps;
  k.decay = 1.0f - a.lr * a.weight_decay;
  k.inv_bc1 = 1.0f / a.bias_correction1;
  k.inv_bc2 = 1.0f / a.bias_correction2;
  k.grad_scale = a.grad_scale;
  return k;
}

const char* MatmulPrecisionName(MatmulPrecision precision) {
  switch (precision) {
    case MatmulPrecision::kFp32: return "fp32";
    case MatmulPrecision::kTf32: return "tf32";
    case MatmulPrecision::kBf16: return "bf16";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Kernels>> MakeKernels(Device device, const KernelOptions& options) {
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError("num_threads must be >= 0");
  }
  switch (device) {
    case Device::kCpu: {
      if (options.precision == MatmulPrecision::kTf32) {
        return absl::InvalidArgumentError(
            "precision tf32 needs the cuda device (a tensor-core format); the cpu computes in "
            "fp32 or bf16");
      }
      std::unique_ptr<Bf16Matmul> bf16;
      if (options.precision == MatmulPrecision::kBf16) {
        absl::StatusOr<std::unique_ptr<Bf16Matmul>> made = Bf16Matmul::Create();
        if (!made.ok()) return made.status();
        bf16 = *std::move(made);
      }
      return std::unique_ptr<Kernels>(new CpuKernels(options.num_threads, std::move(bf16)));
    }
    case Device::kCuda:
#ifdef DROPK_HAS_CUDA
      return MakeCudaKernels(options);
#else
      return absl::FailedPreconditionError(
          "device cuda: this build of dropk has no CUDA kernels (no CUDA Toolkit was found at "
          "configure time, or it was configured with -DDROPK_CUDA=OFF); use the cpu device");
#endif
  }
  return absl::InvalidArgumentError("unknown device");
}

bool CudaCompiledIn() {
#ifdef DROPK_HAS_CUDA
  return true;
#else
  return false;
#endif
}

int CudaDeviceCount() {
#ifdef DROPK_HAS_CUDA
  return CudaDeviceCountOrZero();
#else
  return 0;
#endif
}

std::array<uint8_t, 16> CudaDeviceUuid(int ordinal) {
#ifdef DROPK_HAS_CUDA
  return CudaDeviceUuidOrZero(ordinal);
#else
  (void)ordinal;
  return {};
#endif
}

bool CudaFlashAttentionApplies(const KernelOptions& options, int hs) {
#ifdef DROPK_HAS_CUDA
  return CudaFlashAttentionAppliesOnDevice(options, hs);
#else
  (void)options;
  (void)hs;
  return false;
#endif
}

double CudaFreeBytes(int ordinal) {
#ifdef DROPK_HAS_CUDA
  return CudaFreeBytesOrNegative(ordinal);
#else
  (void)ordinal;
  return -1;
#endif
}

double CudaKernelsScratchBytes(int B, int T, int C, int NH, int V, bool attention_dropout,
                               bool bf16_operands, bool flash_attention) {
  // CudaKernels' scratch slots (cuda_kernels.cc) at their largest.
  const double btc = static_cast<double>(B) * T * C;
  const double scores = static_cast<double>(B) * NH * T * T;
  double floats = 0;
  if (flash_attention) {
    floats += static_cast<double>(B) * NH * T;  // kDelta
  } else {
    // kQ, kK, kV, kHeads (q, k, v, the output or its gradient), kDq, kDk, kDv.
    floats += 7 * btc;
    floats += scores;                         // kDatt
    if (attention_dropout) floats += scores;  // kWeights
  }
  // kColumns: two partial sums per column of the widest bias, the MLP's 4C.
  floats += 2.0 * kCudaColumnSumMaxParts * 4.0 * C;
  double bytes = floats * sizeof(float);
  // kTokenSort (EmbeddingBackward): three int32 arrays of B*T and CUB's
  // radix-sort workspace, about two more pairs of them plus its histograms;
  // an upper estimate, as the exact figure needs CUB.
  bytes += 7.0 * sizeof(int32_t) * B * T + (1 << 20);
  if (bf16_operands) {
    // kBf16Weight, kBf16Input, kBf16Output: 2 bytes an element, at the
    // widest projection (the MLP's 4C or the LM head's V).
    const double widest = std::max(4.0 * C, static_cast<double>(V));
    const double rows = static_cast<double>(B) * T;
    bytes += 2.0 * (widest * C + rows * 4.0 * C + rows * widest);
  }
  // And cuBLASLt's workspace (the sum of squares' 4 KiB of partials aside).
  return bytes + static_cast<double>(kCudaLtWorkspaceBytes);
}

absl::StatusOr<std::unique_ptr<Kernels>> MakeKernels(Device device, int num_threads) {
  KernelOptions options;
  options.num_threads = num_threads;
  return MakeKernels(device, options);
}

}  // namespace dropk
