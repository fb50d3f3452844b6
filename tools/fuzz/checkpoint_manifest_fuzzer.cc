// libFuzzer target over checkpoint manifest parsing and entry validation
// (checkpoint/format.h ParseManifestFile, checkpoint/reader.h ValidateManifest).
//
// Input: one mode byte, then the bytes of a manifest.pb.
//   mode even: the whole manifest.pb path (magic, version, manifest CRC).
//   mode odd:  the envelope's CRC and magic are skipped so mutations reach
//              the entry checks; the data files are pretended to exist with
//              fixed sizes (model.data and optim-* files: 1 MiB).
// Properties beyond "no crash, no sanitizer report, no huge allocation": a
// manifest that validates never claims more bytes than its files hold, and
// its parameters fit the model entries.
//
// Built with -DDROPK_FUZZ=ON under clang; run by tools/run_fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "quiet_protobuf.h"

namespace {

constexpr uint64_t kFakeFileSize = 1u << 20;

absl::StatusOr<uint64_t> FakeFileSize(const std::string& file) {
  if (file == dropk::kModelDataFileName || file.rfind("optim-", 0) == 0) return kFakeFileSize;
  return absl::NotFoundError(file + ": no such file");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool deep = data[0] & 1;
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  dropk::CheckpointManifest manifest;
  if (deep) {
    dropk::CheckpointManifestFile file;
    if (!file.ParseFromString(bytes) || !manifest.ParseFromString(file.manifest())) return 0;
  } else {
    absl::StatusOr<dropk::CheckpointManifest> parsed = dropk::ParseManifestFile(bytes, "fuzz");
    if (!parsed.ok()) return 0;
    manifest = *std::move(parsed);
  }
  absl::StatusOr<dropk::ValidatedManifest> vm =
      dropk::ValidateManifest(manifest, "fuzz", FakeFileSize);
  if (!vm.ok()) return 0;
  std::map<std::string, uint64_t> claimed;
  uint64_t model_bytes = 0;
  for (const dropk::TensorEntry& e : vm->manifest.tensors()) {
    if (e.offset() + e.length() > kFakeFileSize) std::abort();  // past a file's end
    if (e.name().rfind(dropk::kModelTensorPrefix, 0) == 0) model_bytes += e.length();
  }
  if (vm->num_params * sizeof(float) != model_bytes) std::abort();
  return 0;
}
