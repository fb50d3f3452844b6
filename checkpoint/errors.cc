#include "errors.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/tokenizer.h"

namespace dropk::checkpoint_internal {

absl::Status CheckpointError(const std::string& where, const std::string& file,
                             const std::string& tensor, const std::string& message) {
  std::string text = absl::StrCat("checkpoint ", where);
  if (!file.empty()) absl::StrAppend(&text, ": file ", file);
  if (!tensor.empty()) absl::StrAppend(&text, ": tensor ", tensor);
  absl::StrAppend(&text, ": ", message);
  return absl::DataLossError(text);
}

absl::Status CheckpointReadError(const std::string& where, const std::string& file,
                                 const std::string& tensor, const absl::Status& cause,
                                 const std::string& prefix) {
  absl::Status error = CheckpointError(where, file, tensor, absl::StrCat(prefix, cause.message()));
  if (!absl::IsPermissionDenied(cause)) return error;
  return absl::PermissionDeniedError(error.message());
}

absl::StatusOr<GptConfig> ShapeOf(const TrainConfig& config, const Tokenizer& tokenizer) {
  absl::StatusOr<TextTokenizer> tok = TextTokenizer::FromProto(tokenizer);
  if (!tok.ok()) return tok.status();
  GptConfig shape{tok->vocab_size(), config.block_size(), config.n_layer(), config.n_head(),
                  config.n_embd()};
  if (absl::Status s = shape.Validate(); !s.ok()) return s;
  return shape;
}

bool HostAddressable(const Kernels* kernels) { return kernels->device() == Device::kCpu; }

std::vector<char> MakeBuffer(size_t bytes) {
  bytes = std::max<size_t>(kFloatBytes, bytes / kFloatBytes * kFloatBytes);
  return std::vector<char>(bytes, 0);
}

}  // namespace dropk::checkpoint_internal
