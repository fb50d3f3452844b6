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

uint32_t FormatVersionCrc32c(uint32_t version) {
  const unsigned char bytes[4] = {
      static_cast<unsigned char>(version), static_cast<unsigned char>(version >> 8),
      static_cast<unsigned char>(version >> 16), static_cast<unsigned char>(version >> 24)};
  return crc32c::Value(reinterpret_cast<const char*>(bytes), sizeof(bytes));
}

namespace {

// Why the format version that `file` declares cannot be trusted (a corrupt
// version field); "" when it can: it matches its CRC32C or, without one,
// it is a version that dropk wrote before it recorded that CRC.
std::string FormatVersionProblem(const CheckpointManifestFile& file) {
  const uint32_t version = file.format_version();
  if (file.has_format_version_crc32c()) {
    const uint32_t crc = FormatVersionCrc32c(version);
    if (crc == file.format_version_crc32c()) return "";
    return absl::StrFormat(
        "format version %d does not match its CRC32C (stored 0x%08x, computed 0x%08x): a corrupt "
        "version field",
        version, file.format_version_crc32c(), crc);
  }
  if (version <= kLastFormatVersionWithoutItsCrc) return "";
  return absl::StrCat("format version ", version,
                      " without the CRC32C that every dropk writing a version above ",
                      kLastFormatVersionWithoutItsCrc,
                      " records: a corrupt version field, not a newer dropk's checkpoint");
}

}  // namespace

std::string SerializeManifestFile(const CheckpointManifest& manifest) {
  CheckpointManifestFile file;
  file.set_magic(kCheckpointMagic);
  file.set_format_version(kCheckpointFormatVersion);
  file.set_format_version_crc32c(FormatVersionCrc32c(kCheckpointFormatVersion));
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
  if (!FormatVersionProblem(file).empty()) return 0;
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
  if (const std::string problem = FormatVersionProblem(file); !problem.empty()) {
    return fail(problem);
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
