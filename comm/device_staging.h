// Staging of CUDA buffers through pinned host memory, for the MPI backend:
// a rank whose gradients live on a GPU can still reduce them over MPI (one
// GPU shared by several ranks, where NCCL refuses; or a build without NCCL).
// Private to comm/.
//
// Used from the MPI communication thread only (not thread-safe). Without
// CUDA in the build every call fails with Unimplemented.
#ifndef DROPK_COMM_DEVICE_STAGING_H_
#define DROPK_COMM_DEVICE_STAGING_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace dropk {

class DeviceStaging {
 public:
  static constexpr int kSlots = 2;  // an input and an output

  DeviceStaging() = default;
  ~DeviceStaging();
  DeviceStaging(const DeviceStaging&) = delete;
  DeviceStaging& operator=(const DeviceStaging&) = delete;

  // A host view of device buffer b in pinned staging slot `slot` (grown as
  // needed). With copy_in, the device bytes are copied there first. Both that
  // copy and StageOut's copy back come after ready_event (a cudaEvent_t, or
  // nullptr) has completed on the device, with or without copy_in.
  absl::StatusOr<Buffer> StageIn(const Buffer& b, int slot, bool copy_in, void* ready_event);
  // Copies the staging slot back into device buffer b; returns once done.
  absl::Status StageOut(const Buffer& b, int slot);

 private:
  void* host_[kSlots] = {nullptr, nullptr};
  size_t bytes_[kSlots] = {0, 0};
  void* stream_ = nullptr;  // cudaStream_t, on the device of the first buffer
  int device_ = -1;
};

}  // namespace dropk

#endif  // DROPK_COMM_DEVICE_STAGING_H_
