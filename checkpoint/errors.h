// Private helpers shared by the checkpoint library's sources.
#ifndef DROPK_CHECKPOINT_ERRORS_H_
#define DROPK_CHECKPOINT_ERRORS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config.pb.h"
#include "model/kernels.h"
#include "model/param_layout.h"
#include "tokenizer.pb.h"

namespace dropk::checkpoint_internal {

inline constexpr size_t kFloatBytes = sizeof(float);
// No model dropk can train has more parameters than this (16 TiB of fp32);
// a larger claim is corruption, refused before any arithmetic overflows.
inline constexpr unsigned __int128 kMaxParams = static_cast<unsigned __int128>(1) << 42;
inline constexpr int kMaxRank = 1 << 20;
// Which flat tensor an entry belongs to (ValidatedManifest::target).
inline constexpr int kTargetParams = 0, kTargetAdamM = 1, kTargetAdamV = 2;

inline std::string PathJoin(const std::string& dir, const std::string& name) {
  return dir + "/" + name;
}

// DataLoss "checkpoint DIR: file F: tensor T: message" (empty parts omitted).
absl::Status CheckpointError(const std::string& where, const std::string& file,
                             const std::string& tensor, const std::string& message);

// CheckpointError(where, file, tensor, cause's message) for a read that
// failed with `cause`, but PermissionDenied, not DataLoss, when the cause
// is: a file or directory the reader may not read (mode 000, another
// user's) is the operator's to fix, not a torn or corrupt checkpoint, and
// callers that pass over corrupt checkpoints must not pass over it.
absl::Status CheckpointReadError(const std::string& where, const std::string& file,
                                 const std::string& tensor, const absl::Status& cause,
                                 const std::string& prefix = "");

// The model shape a config and tokenizer describe (validated).
absl::StatusOr<GptConfig> ShapeOf(const TrainConfig& config, const Tokenizer& tokenizer);

// Whether `kernels`' device memory is ordinary host memory (the CPU
// kernels), so checkpoint I/O can read and write it in place instead of
// staging every byte through a buffer: one memory pass less per save and
// load. The one place the checkpoint code looks at the device.
bool HostAddressable(const Kernels* kernels);

// A zero-filled buffer of about `bytes` (a multiple of the float size, so
// chunks never split a float), every page touched now rather than mid-save.
std::vector<char> MakeBuffer(size_t bytes);

}  // namespace dropk::checkpoint_internal

#endif  // DROPK_CHECKPOINT_ERRORS_H_
