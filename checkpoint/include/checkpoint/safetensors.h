// The safetensors format (https://github.com/huggingface/safetensors), which
// PyTorch and Hugging Face use to share weights: an 8-byte little-endian
// header length, a JSON header mapping each tensor's name to its dtype,
// shape and [begin, end) byte range, with optional string metadata under
// "__metadata__", then the tensors' bytes, row-major, little-endian.
//
// dropk writes it (`dropk ckpt export --format safetensors`) and reads it
// (dropk-train's init_from). Hand-written: Debian packages no safetensors
// library for C++, and the format is a JSON header and a byte range each.
#ifndef DROPK_CHECKPOINT_SAFETENSORS_H_
#define DROPK_CHECKPOINT_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/env.h"

namespace dropk {

// One tensor to write: its name, safetensors dtype ("F32", "F16", "BF16",
// ...), shape, and its bytes.
struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// The file's first bytes, which the tensors' bytes follow in the order
// given: the header length and the JSON header, with `metadata` as
// "__metadata__" (string values only, as the format requires). The header
// is padded with spaces to a multiple of 8 bytes, so a tensor whose
// predecessors' sizes are multiples of 8 starts 8-byte aligned.
std::string SafetensorsHeader(const std::vector<SafetensorsTensor>& tensors,
                              const std::map<std::string, std::string>& metadata);

// A safetensors file's header, read and checked (ReadSafetensors); the
// tensors' bytes stay in the file until ReadTensorBytes reads them.
class SafetensorsFile {
 public:
  // One tensor of the file; ReadTensorBytes gives its data.
  struct Tensor {
    std::string dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // within the bytes after the header
  };

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  // Reads the bytes of the tensor called `name` from the file (those
  // alone: the file may be larger than memory). Precondition: `name` is a
  // key of tensors(). Every error names the file and the tensor: NotFound
  // when the file has gone since ReadSafetensors, DataLoss when it was cut
  // short since, PermissionDenied when this user may no longer read it,
  // Unavailable for another I/O error.
  absl::StatusOr<std::string> ReadTensorBytes(const std::string& name) const;

 private:
  friend absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path, Env* env);
  std::string path_;
  Env* env_ = nullptr;  // what ReadSafetensors read through; not owned
  uint64_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, Tensor> tensors_;
};

// Bytes per element of a safetensors dtype ("F32": 4, "BF16": 2, ...); 0
// for a name the format does not define.
int SafetensorsDtypeSize(std::string_view dtype);

// Reads the header of the file at `path` and checks it trusting no size: a header length
// within the file (and within the format's 100 MB), a JSON object, every
// tensor with a known dtype, a shape of non-negative sizes whose byte count
// is its range's length, and a range inside the file that overlaps no
// other tensor's. Errors name the file (and the tensor): InvalidArgument
// for what is wrong with the file or its path (not a safetensors file, a
// directory or FIFO), NotFound for a missing file, PermissionDenied for one
// this user may not read, Unavailable for another I/O error (EIO). Reads
// the header alone (at most 100 MB), whatever the file's size; nothing is
// allocated for a size the header claims. Reads through `env` (null:
// Env::Default()), which must outlive the result.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path, Env* env = nullptr);

}  // namespace dropk

#endif  // DROPK_CHECKPOINT_SAFETENSORS_H_
