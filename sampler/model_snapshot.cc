#include "sampler/model_snapshot.h"

#include <cmath>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

#include "base/path_status.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"

namespace dropk {

absl::StatusOr<std::shared_ptr<const ModelSnapshot>> MakeSnapshot(const GptConfig& config,
                                                                  TextTokenizer tokenizer,
                                                                  std::vector<float> params,
                                                                  int64_t step, std::string id,
                                                                  std::string path) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (tokenizer.vocab_size() != config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer vocab ", tokenizer.vocab_size(),
                                                   " differs from the model's vocab_size ",
                                                   config.vocab_size));
  }
  const ParamLayout layout(config);
  if (params.size() != layout.num_params()) {
    return absl::InvalidArgumentError(
        absl::StrCat("params: ", params.size(), " values, the config needs ", layout.num_params()));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (!std::isfinite(params[i])) {
      return absl::InvalidArgumentError(absl::StrCat("params: value ", i, " is not finite"));
    }
  }
  auto snapshot = std::make_shared<ModelSnapshot>(ModelSnapshot{
      config, std::move(tokenizer), std::move(params), step, std::move(id), std::move(path)});
  return std::shared_ptr<const ModelSnapshot>(std::move(snapshot));
}

absl::StatusOr<std::shared_ptr<const ModelSnapshot>> LoadCheckpointSnapshot(
    const std::string& checkpoint_dir) {
  ReadCheckpointOptions options;
  options.weights_only = true;
  absl::StatusOr<CheckpointData> data = ReadCheckpoint(checkpoint_dir, options);
  if (!data.ok()) return data.status();
  absl::StatusOr<TextTokenizer> tokenizer = TextTokenizer::FromProto(data->tokenizer);
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(checkpoint_dir, ": tokenizer: ", tokenizer.status().message()));
  }
  const GptConfig config{tokenizer->vocab_size(), data->config.block_size(), data->config.n_layer(),
                         data->config.n_head(), data->config.n_embd()};
  auto snapshot = MakeSnapshot(config, *std::move(tokenizer), std::move(data->params), data->step,
                               absl::StrFormat("dropk-step-%08d", data->step), checkpoint_dir);
  if (!snapshot.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(checkpoint_dir, ": ", snapshot.status().message()));
  }
  return snapshot;
}

absl::StatusOr<std::string> FindServableCheckpoint(const std::string& checkpoints_dir,
                                                   std::vector<std::string>* skipped) {
  if (checkpoints_dir.empty()) {  // said ": does not exist"
    return absl::InvalidArgumentError(
        "the checkpoints directory is empty; name a run's checkpoints directory (run/checkpoints)");
  }
  // Verified as it is read (LoadCheckpointSnapshot): the manifest whole and
  // the weights' CRCs. The optimizer state, which serving never reads, is
  // not: a corrupt optimizer file (resume refuses it) does not stop the
  // weights beside it from being served, and a scan no longer reads
  // gigabytes of moments for nothing.
  ReadCheckpointOptions weights_only;
  weights_only.weights_only = true;
  absl::StatusOr<std::string> found =
      FindLatestValidCheckpoint(checkpoints_dir, skipped, weights_only);
  if (found.ok()) return found;
  // A path that is not there, or a run directory (the trainer's out_dir)
  // given for its checkpoints directory, read only "no valid checkpoint in".
  // A symlink loop or a directory that may not be searched read "does not
  // exist": the OS's reason is said instead.
  std::filesystem::path dir = std::filesystem::path(checkpoints_dir).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();
  absl::StatusOr<bool> exists = PathExists(dir, checkpoints_dir);
  if (!exists.ok()) return exists.status();
  if (!*exists) return absl::NotFoundError(absl::StrCat(checkpoints_dir, ": does not exist"));
  if (std::string hint = CheckpointsDirHint(checkpoints_dir); !hint.empty()) {
    return absl::Status(found.status().code(),
                        absl::StrCat(found.status().message(), " (", hint, ")"));
  }
  return found;
}

std::optional<std::string> RunDirectoryCheckpoints(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "run/"
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec) ||
      std::filesystem::exists(dir / kLatestFileName, ec) ||
      std::filesystem::exists(dir / kManifestFileName, ec) ||
      !std::filesystem::is_directory(dir / "checkpoints", ec)) {
    return std::nullopt;
  }
  return (dir / "checkpoints").string();
}

std::string CheckpointsDirHint(const std::string& checkpoints_dir) {
  std::filesystem::path dir = std::filesystem::path(checkpoints_dir).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "run/checkpoints/step-N/"
  std::error_code ec;
  // A file named for the directory (its LATEST, say) was "no valid
  // checkpoint in" it, exit 1, and with --watch was watched for good.
  const std::filesystem::file_status status = std::filesystem::status(dir, ec);
  if (std::filesystem::exists(status) && !std::filesystem::is_directory(status)) {
    return absl::StrCat(checkpoints_dir,
                        " is not a directory; give the run's checkpoints directory",
                        dir.has_parent_path() && dir.filename() == kLatestFileName
                            ? absl::StrCat(", ", dir.parent_path().string())
                            : std::string());
  }
  if (std::filesystem::exists(dir / kLatestFileName, ec)) return "";
  // An operator who names one checkpoint (run/checkpoints/step-N) instead
  // of the run's directory of them read only "no valid checkpoint in it".
  if (std::filesystem::exists(dir / kManifestFileName, ec)) {
    return absl::StrCat(checkpoints_dir,
                        " is itself a checkpoint; give the run's checkpoints directory that "
                        "holds it, ",
                        // step-N given relative to the directory that holds it
                        dir.has_parent_path() ? dir.parent_path().string() : std::string("."));
  }
  if (std::filesystem::is_directory(dir / "checkpoints", ec)) {
    return absl::StrCat(checkpoints_dir,
                        " looks like a run directory; give its checkpoints directory, ",
                        (dir / "checkpoints").string());
  }
  return "";
}

absl::StatusOr<std::string> ResolveCheckpointFlag(const std::string& path, const std::string& flag,
                                                  std::vector<std::string>* skipped) {
  const std::string what = absl::StrCat(flag, " ", path);
  // The path itself first, so that an error names it rather than LATEST.
  if (absl::Status s = PathStatus(path, what).status(); !s.ok()) return s;
  const std::filesystem::path latest = std::filesystem::path(path) / kLatestFileName;
  absl::StatusOr<bool> has_latest = PathExists(latest, absl::StrCat(what, ": ", latest.string()));
  if (!has_latest.ok()) return has_latest.status();
  const std::filesystem::path manifest = std::filesystem::path(path) / kManifestFileName;
  absl::StatusOr<bool> has_manifest =
      PathExists(manifest, absl::StrCat(what, ": ", manifest.string()));
  if (!has_manifest.ok()) return has_manifest.status();
  if (*has_manifest && !*has_latest) return path;
  // A run directory (the trainer's out_dir) stands for its checkpoints
  // directory: it was refused with "give its checkpoints directory".
  std::string checkpoints_dir = path;
  if (!*has_latest && !*has_manifest) {
    const std::filesystem::path nested = std::filesystem::path(path) / "checkpoints";
    absl::StatusOr<std::filesystem::file_status> nested_status =
        PathStatus(nested, absl::StrCat(what, ": ", nested.string()));
    if (!nested_status.ok()) return nested_status.status();
    if (std::filesystem::is_directory(*nested_status)) checkpoints_dir = nested.string();
  }
  absl::StatusOr<std::string> found = FindServableCheckpoint(checkpoints_dir, skipped);
  if (found.ok()) return found;
  // "PATH: does not exist" or "no valid checkpoint in PATH" named no flag,
  // unlike every other error of the command.
  const absl::string_view message = found.status().message();
  return absl::Status(found.status().code(),
                      absl::StartsWith(message, absl::StrCat(checkpoints_dir, ": "))
                          ? absl::StrCat(flag, " ", message)
                          : absl::StrCat(flag, ": ", message));
}

std::string PickedCheckpointLine(int64_t step, const std::string& checkpoint_dir,
                                 const std::vector<std::string>& skipped) {
  return absl::StrCat("using step ", step, " (", checkpoint_dir, ")",
                      skipped.empty() ? "" : "; skipped: ", absl::StrJoin(skipped, "; "));
}

}  // namespace dropk
