// The CUDA implementation of Kernels: one GPU, one stream, cuBLASLt for the
// projections, cuBLAS strided-batched products for attention, and the
// kernels of model/cuda/*.cu for everything else. Private to model/; reach
// it through MakeKernels(Device::kCuda, options).
//
// Every op is enqueued on the object's stream and returns at once, except
// CopyToDevice, CopyToHost, SumSquares and Synchronize, which wait (and
// Allocate, which zeroes before returning). Memory comes from
// cudaMalloc. The object must be driven from one thread; the constructor
// makes its device current on that thread.
//
// A failing CUDA or cuBLAS call inside an op (an illegal address, a lost
// device, cuBLAS out of memory) is not recoverable mid-step: the op throws
// DeviceError (base/device_error.h) naming the op, the device, the call, the
// error's name and text and file:line, and the object must not be used
// again except to destroy it. Free and the destructor never throw.
#ifndef DROPK_MODEL_CUDA_CUDA_KERNELS_H_
#define DROPK_MODEL_CUDA_CUDA_KERNELS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/kernels.h"

namespace dropk {

// cuBLASLt's workspace: 32 MiB, what NVIDIA recommends for Hopper. Here so
// that CudaKernelsScratchBytes (model/kernels.cc, in every build) counts it.
inline constexpr size_t kCudaLtWorkspaceBytes = size_t{32} << 20;
// The most partial sums per column that the column sums (rows.cu) keep.
inline constexpr int kCudaColumnSumMaxParts = 128;

// Creates the kernels on options.cuda_device with options.precision. Fails
// with one line when there is no usable GPU (NoCudaDeviceReason), the
// ordinal is out of range, or a library handle cannot be created.
absl::StatusOr<std::unique_ptr<Kernels>> MakeCudaKernels(const KernelOptions& options);

// cudaGetDeviceCount, or 0 when it fails (no driver, no device).
int CudaDeviceCountOrZero();

// Why this process sees no GPU, as one line starting "no CUDA device: ",
// worded for the user's next step: no NVIDIA driver installed (libcuda.so.1
// absent), a driver older than this build's CUDA runtime (both versions),
// no GPU visible (CUDA_VISIBLE_DEVICES named when set), or CUDA's own error.
// Empty when there is at least one device.
std::string NoCudaDeviceReason();

// cudaDeviceProp::uuid of GPU `ordinal`, or all zeros when it fails.
std::array<uint8_t, 16> CudaDeviceUuidOrZero(int ordinal);

// cudaMemGetInfo's free bytes on GPU `ordinal`, or -1 when it fails. Makes
// `ordinal` the calling thread's current device (creating its primary
// context) and leaves it so: meant for the GPU the process goes on to use.
double CudaFreeBytesOrNegative(int ordinal);

// The flash attention rule (KernelOptions::flash_attention): wanted, at TF32
// or BF16, a head size the flash kernels take, and their shared memory
// within the GPU's opt-in shared memory per block. bf16_tensor_cores: the
// kernels asked for are the bf16 ones (KernelOptions::flash_bf16_tensor_cores,
// which apply at BF16 only; TF32 keeps the TF32 kernels).
bool FlashAttentionApplies(bool wanted, MatmulPrecision precision, int hs,
                           size_t max_shared_per_block, bool bf16_tensor_cores = false);
// Whether that rule, applying, picks the bf16 tensor-core kernels.
bool FlashUsesBf16TensorCores(bool bf16_tensor_cores, MatmulPrecision precision);
// The rule for GPU options.cuda_device; false when it cannot be asked.
bool CudaFlashAttentionAppliesOnDevice(const KernelOptions& options, int hs);

// Empty when cuBLAS and cuBLASLt load (cublas_loader.cc opens them on first
// use), else why not.
std::string CublasLoadError();

}  // namespace dropk

#endif  // DROPK_MODEL_CUDA_CUDA_KERNELS_H_
