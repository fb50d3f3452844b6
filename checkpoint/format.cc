#include "checkpoint/format.h"

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/crc32c.h"
#include "errors.h"

namespace dropk {

using checkpoint_internal::CheckpointError;
using checkpoint_internal::PathJoin;

std::string CheckpointDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

int64_t ParseStepDirName(const std::string& name) {
  if (name.size() < 13 || name.rfind("step-", 0) != 0) return -1;
  const std::string digits = name.substr(5);
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
  }
  int64_t step;
  if (!absl::SimpleAtoi(digits, &step)) return -1;
  return step;
}

std::string OptimizerDataFileName(int rank, int world_size) {
  return absl::StrFormat("optim-rank%05d-of-%05d.data", rank, world_size);
}

std::pair<size_t, size_t> OptimizerSlice(size_t num_params, int rank, int world_size) {
  const auto at = [&](int r) {
    return static_cast<size_t>(static_cast<unsigned __int128>(num_params) * r / world_size);
  };
  return {at(rank), at(rank + 1)};
}

std::string CheckpointsDirOf(const TrainConfig& config) {
  return config.checkpoint_dir().empty() ? PathJoin(config.out_dir(), "checkpoints")
                                         : config.checkpoint_dir();
}

std::string SerializeManifestFile(const CheckpointManifest& manifest) {
  CheckpointManifestFile file;
  file.set_magic(kCheckpointMagic);
  file.set_format_version(kCheckpointFormatVersion);
  std::string bytes;
  manifest.SerializeToString(&bytes);
  file.set_manifest_crc32c(crc32c::Value(bytes.data(), bytes.size()));
  file.set_manifest(std::move(bytes));
  std::string out;
  file.SerializeToString(&out);
  return out;
}

uint32_t DeclaredFormatVersion(const std::string& bytes) {
  CheckpointManifestFile file;
  if (!file.ParseFromString(bytes) || file.magic() != kCheckpointMagic) return 0;
  return file.format_version();
}

absl::StatusOr<CheckpointManifest> ParseManifestFile(const std::string& bytes,
                                                     const std::string& where) {
  const auto fail = [&](const std::string& message) {
    return CheckpointError(where, kManifestFileName, "", message);
  };
  CheckpointManifestFile file;
  if (bytes.empty()) return fail("empty file");
  if (!file.ParseFromString(bytes)) {
    return fail("not a dropk checkpoint manifest (does not parse)");
  }
  if (file.magic() != kCheckpointMagic) {
    return fail(absl::StrCat("wrong magic \"", absl::CHexEscape(file.magic().substr(0, 32)),
                             "\", expected \"", kCheckpointMagic, "\""));
  }
  if (file.format_version() < kOldestReadableFormatVersion ||
      file.format_version() > kCheckpointFormatVersion) {
    return fail(absl::StrCat("format version ", file.format_version(),
                             " is not supported (this build reads versions ",
                             kOldestReadableFormatVersion, " to ", kCheckpointFormatVersion, ")"));
  }
  const uint32_t crc = crc32c::Value(file.manifest().data(), file.manifest().size());
  if (crc != file.manifest_crc32c()) {
    return fail(absl::StrFormat("manifest CRC32C mismatch: stored 0x%08x, computed 0x%08x",
                                file.manifest_crc32c(), crc));
  }
  CheckpointManifest manifest;
  if (!manifest.ParseFromString(file.manifest())) return fail("manifest body does not parse");
  if (file.format_version() >= 2 && manifest.data_files_size() == 0) {
    return fail(absl::StrCat("format version ", file.format_version(),
                             " but the manifest lists no data files and their sizes"));
  }
  return manifest;
}

}  // namespace dropk
