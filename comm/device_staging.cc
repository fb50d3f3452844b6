#include "device_staging.h"

#ifdef DROPK_HAS_CUDA
#include <cuda_runtime.h>
#endif

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace dropk {

#ifndef DROPK_HAS_CUDA

DeviceStaging::~DeviceStaging() = default;

absl::StatusOr<Buffer> DeviceStaging::StageIn(const Buffer&, int, bool, void*) {
  return absl::UnimplementedError("CUDA buffers: this build of dropk has no CUDA support");
}

absl::Status DeviceStaging::StageOut(const Buffer&, int) {
  return absl::UnimplementedError("CUDA buffers: this build of dropk has no CUDA support");
}

#else  // DROPK_HAS_CUDA

DeviceStaging::~DeviceStaging() {
  for (void* h : host_) {
    if (h != nullptr) cudaFreeHost(h);
  }
  if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

absl::StatusOr<Buffer> DeviceStaging::StageIn(const Buffer& b, int slot, bool copy_in,
                                              void* ready_event) {
  DROPK_CHECK(slot >= 0 && slot < kSlots) << "staging slot " << slot;
  if (device_ < 0) {
    // The communication thread works on the device that holds the buffers.
    cudaPointerAttributes attributes{};
    CUDA_CHECK(cudaPointerGetAttributes(&attributes, b.data));
    if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
      return absl::InvalidArgumentError(
          "a buffer marked MemoryKind::kCuda is not CUDA device memory");
    }
    device_ = attributes.device;
    CUDA_CHECK(cudaSetDevice(device_));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_ = stream;
  }
  const size_t bytes = b.bytes();
  if (bytes > bytes_[slot]) {
    if (host_[slot] != nullptr) CUDA_CHECK(cudaFreeHost(host_[slot]));
    host_[slot] = nullptr;
    bytes_[slot] = 0;
    CUDA_CHECK(cudaMallocHost(&host_[slot], bytes));
    bytes_[slot] = bytes;
  }
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  // The wait stays in the staging stream's order, so it orders the copy in
  // and also StageOut's later copy back: a buffer that is only written (a
  // broadcast's receivers) must not be overwritten while the compute stream
  // may still use it, as NCCL's stream-wide wait ensures.
  if (ready_event != nullptr) {
    CUDA_CHECK(cudaStreamWaitEvent(stream, static_cast<cudaEvent_t>(ready_event), 0));
  }
  if (copy_in && bytes > 0) {
    CUDA_CHECK(cudaMemcpyAsync(host_[slot], b.data, bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  Buffer host = b;
  host.data = host_[slot];
  host.memory = MemoryKind::kHost;
  return host;
}

absl::Status DeviceStaging::StageOut(const Buffer& b, int slot) {
  DROPK_CHECK(slot >= 0 && slot < kSlots) << "staging slot " << slot;
  // An empty buffer staged in never allocated its slot: nothing to copy back.
  if (b.bytes() == 0) return absl::OkStatus();
  DROPK_CHECK(host_[slot] != nullptr) << "staging slot " << slot << " was never staged in";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  CUDA_CHECK(cudaMemcpyAsync(b.data, host_[slot], b.bytes(), cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

#endif  // DROPK_HAS_CUDA

}  // namespace dropk
