#include "checkpoint/reader.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "errors.h"
#include "stream_entries.h"

namespace dropk {

using namespace checkpoint_internal;  // NOLINT: the library's own private helpers

namespace {

// Whether `path` is a directory, or one this user may not look at (stat
// says Permission denied: a link into another user's directory), which
// OpenCheckpoint names as PermissionDenied. Left out of the candidates, such
// a checkpoint was passed over in silence, and --resume's saves replaced it.
bool DirectoryOrUnreachable(Env* env, const std::string& path) {
  return env->IsDirectory(path) || absl::IsPermissionDenied(env->FileSize(path).status());
}

}  // namespace

absl::StatusOr<ValidatedManifest> OpenCheckpoint(const std::string& dir, Env* env,
                                                 bool weights_only) {
  if (env == nullptr) env = Env::Default();
  if (!env->IsDirectory(dir)) {
    // A directory under one that may not be searched (or a link into one)
    // cannot be looked at: that is a permission problem, not a checkpoint
    // that "does not exist", which callers pass over like a corrupt one.
    if (absl::StatusOr<uint64_t> seen = env->FileSize(dir);
        absl::IsPermissionDenied(seen.status())) {
      return CheckpointReadError(dir, "", "", seen.status());
    }
    // LATEST naming a checkpoint deleted by hand read "not a directory".
    return CheckpointError(dir, "", "",
                           env->FileExists(dir) ? "not a directory" : "does not exist");
  }
  absl::StatusOr<std::string> bytes =
      ReadSmallFile(env, PathJoin(dir, kManifestFileName), kMaxManifestBytes);
  if (!bytes.ok()) {
    return CheckpointReadError(dir, kManifestFileName, "", bytes.status());
  }
  absl::StatusOr<CheckpointManifest> manifest = ParseManifestFile(*bytes, dir);
  if (!manifest.ok()) return manifest.status();
  std::map<std::string, uint64_t> pinned;  // the manifest's sizes of optimizer files
  if (weights_only) {
    for (const DataFileInfo& f : manifest->data_files()) {
      if (absl::StartsWith(f.name(), "optim-")) pinned.emplace(f.name(), f.size());
    }
  }
  return ValidateManifest(
      *manifest, dir, [&](const std::string& file) -> absl::StatusOr<uint64_t> {
        absl::StatusOr<uint64_t> size = env->FileSize(PathJoin(dir, file));
        const auto pinned_size = pinned.find(file);
        if (absl::IsNotFound(size.status()) && pinned_size != pinned.end()) {
          return pinned_size->second;
        }
        return size;
      });
}

absl::Status VerifyCheckpoint(const std::string& dir, Env* env,
                              const ReadCheckpointOptions& options) {
  if (env == nullptr) env = Env::Default();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(dir, env, options.weights_only);
  if (!vm.ok()) return vm.status();
  return StreamEntries(dir, *vm, env, 8u << 20, options.weights_only, nullptr);
}

absl::StatusOr<CheckpointManifest> LoadCheckpointInto(const std::string& dir,
                                                      const CheckpointLoadTarget& target, Env* env,
                                                      size_t buffer_bytes) {
  if (env == nullptr) env = Env::Default();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(dir, env);
  if (!vm.ok()) return vm.status();
  if (vm->num_params != target.num_params) {
    return CheckpointError(
        dir, "", "",
        absl::StrCat("holds ", vm->num_params, " parameters, the model has ", target.num_params));
  }
  float* dest[3] = {target.params, target.adam_m, target.adam_v};
  const bool weights_only = target.adam_m == nullptr || target.adam_v == nullptr;
  DirectFn direct;
  if (HostAddressable(target.kernels)) {
    direct = [&](int which, size_t element) {
      return reinterpret_cast<char*>(dest[which] + element);
    };
  }
  absl::Status s = StreamEntries(
      dir, *vm, env, buffer_bytes, weights_only,
      [&](int which, size_t element, const char* data, size_t bytes) {
        target.kernels->CopyToDevice(dest[which] + element, data, bytes);
      },
      direct);
  // Direct reads wrote host-addressable device memory behind the kernels'
  // back: let them drop anything derived from it (CPU bf16 weight copies).
  // Done on failure too, since a part may have been written.
  if (direct) {
    for (float* d : dest) {
      if (d != nullptr) target.kernels->NoteExternalWrite(d, target.num_params * sizeof(float));
    }
  }
  if (!s.ok()) return s;
  return std::move(vm->manifest);
}

absl::StatusOr<CheckpointData> ReadCheckpoint(const std::string& dir,
                                              const ReadCheckpointOptions& options) {
  Env* env = Env::Default();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(dir, env, options.weights_only);
  if (!vm.ok()) return vm.status();
  CheckpointData data;
  const CheckpointManifest& m = vm->manifest;
  data.config = m.config();
  data.tokenizer = m.tokenizer();
  data.step = m.step();
  data.tokens_seen = m.tokens_seen();
  data.world_size = m.world_size();
  data.optimizer_step = m.optimizer_step();
  // Sizes were checked against the files, so these allocations are what the
  // files really hold.
  data.params.resize(vm->num_params);
  if (!options.weights_only) {
    data.adam_m.resize(vm->num_params);
    data.adam_v.resize(vm->num_params);
  }
  std::vector<float>* dest[3] = {&data.params, &data.adam_m, &data.adam_v};
  absl::Status s = StreamEntries(dir, *vm, env, 8u << 20, options.weights_only, nullptr,
                                 [&](int which, size_t element) {
                                   return reinterpret_cast<char*>(dest[which]->data() + element);
                                 });
  if (!s.ok()) return s;
  return data;
}

absl::StatusOr<std::string> ReadLatestFile(const std::string& latest_path, Env* env) {
  if (env == nullptr) env = Env::Default();
  absl::StatusOr<std::string> latest = ReadSmallFile(env, latest_path, kMaxLatestBytes);
  // A LATEST linked to its step directory, as other tools keep a "latest"
  // link, read only "LATEST: not a regular file", with no word of what it
  // must be.
  if (latest.ok() || !env->IsDirectory(latest_path)) return latest;
  return absl::FailedPreconditionError(absl::StrCat(
      latest_path, ": not a regular file but a directory (or a link to one); ", kLatestFileName,
      " must be a file holding the checkpoint directory's name (e.g. \"", CheckpointDirName(100),
      "\"): remove it and write one, echo step-N > ", latest_path));
}

int64_t LatestCheckpointStep(const std::string& checkpoints_dir, Env* env) {
  absl::StatusOr<std::string> latest =
      ReadLatestFile(PathJoin(checkpoints_dir, kLatestFileName), env);
  if (!latest.ok()) return -1;
  return ParseStepDirName(std::string(absl::StripAsciiWhitespace(*latest)));
}

std::vector<std::string> CheckpointCandidates(const std::string& checkpoints_dir,
                                              std::vector<std::string>* skipped, Env* env) {
  if (env == nullptr) env = Env::Default();
  auto skip = [&](std::string reason) {
    if (skipped != nullptr) skipped->push_back(std::move(reason));
  };
  std::vector<std::string> candidates;
  const std::string latest_path = PathJoin(checkpoints_dir, kLatestFileName);
  std::string latest_name;
  if (env->FileExists(latest_path)) {
    absl::StatusOr<std::string> latest = ReadLatestFile(latest_path, env);
    if (!latest.ok()) {
      skip(std::string(latest.status().message()));  // it names latest_path already
    } else {
      const std::string name(absl::StripAsciiWhitespace(*latest));
      if (name.empty()) {
        skip(absl::StrCat(latest_path, ": empty"));
      } else if (ParseStepDirName(name) < 0) {
        skip(absl::StrCat(latest_path, ": does not name a checkpoint (\"",
                          absl::CHexEscape(name.substr(0, 64)), "\")"));
      } else {
        latest_name = name;
        candidates.push_back(PathJoin(checkpoints_dir, name));
      }
    }
  }
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(checkpoints_dir);
  if (names.ok()) {
    std::vector<std::pair<int64_t, std::string>> steps;
    for (const std::string& name : *names) {
      const int64_t step = ParseStepDirName(name);
      if (step >= 0 && name != latest_name &&
          DirectoryOrUnreachable(env, PathJoin(checkpoints_dir, name))) {
        steps.push_back({step, name});
      }
    }
    std::sort(steps.rbegin(), steps.rend());
    for (const auto& [step, name] : steps) candidates.push_back(PathJoin(checkpoints_dir, name));
  } else if (env->IsDirectory(checkpoints_dir)) {
    // A directory that may not be listed read "no valid checkpoint in DIR"
    // alone, as if it held none.
    skip(std::string(names.status().message()));  // "DIR: list directory: Permission denied"
  }
  return candidates;
}

std::string NewerCheckpointThanLatest(const std::string& checkpoints_dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  if (!env->FileExists(PathJoin(checkpoints_dir, kLatestFileName))) return "";
  std::vector<std::string> latest_problems;
  const std::vector<std::string> candidates =
      CheckpointCandidates(checkpoints_dir, &latest_problems, env);
  if (!latest_problems.empty() || candidates.empty()) return "";
  const auto step_of = [](const std::string& dir) {
    return ParseStepDirName(dir.substr(dir.rfind('/') + 1));
  };
  // candidates.front() is LATEST's; the rest follow newest first.
  const int64_t latest_step = step_of(candidates.front());
  for (size_t i = 1; i < candidates.size() && step_of(candidates[i]) > latest_step; ++i) {
    if (OpenCheckpoint(candidates[i], env).ok()) return candidates[i];
  }
  return "";
}

absl::StatusOr<std::string> FindLatestValidCheckpoint(const std::string& checkpoints_dir,
                                                      std::vector<std::string>* skipped,
                                                      const ReadCheckpointOptions& options) {
  std::vector<std::string> reasons;
  for (const std::string& dir : CheckpointCandidates(checkpoints_dir, &reasons)) {
    absl::Status s = VerifyCheckpoint(dir, nullptr, options);
    if (s.ok()) {
      if (skipped != nullptr) skipped->insert(skipped->end(), reasons.begin(), reasons.end());
      return dir;
    }
    // Most reasons name the checkpoint already ("checkpoint DIR: ...").
    reasons.push_back(absl::StrContains(s.message(), dir)
                          ? std::string(s.message())
                          : absl::StrCat(dir, ": ", s.message()));
  }
  if (skipped != nullptr) skipped->insert(skipped->end(), reasons.begin(), reasons.end());
  // The newest few, not all: a directory of hundreds of broken checkpoints
  // made one error line of tens of kilobytes.
  constexpr size_t kReasonsShown = 5;
  std::string why;
  if (!reasons.empty()) {
    const size_t shown = std::min(reasons.size(), kReasonsShown);
    why = absl::StrCat(
        " (", absl::StrJoin(reasons.begin(), reasons.begin() + shown, "; "),
        reasons.size() > shown ? absl::StrCat("; and ", reasons.size() - shown, " more") : "", ")");
  }
  return absl::NotFoundError(absl::StrCat("no valid checkpoint in ", checkpoints_dir, why));
}

bool IsCheckpointsDir(const std::string& dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  const std::filesystem::path path(dir);
  if (absl::StatusOr<std::string> latest = ReadLatestFile((path / kLatestFileName).string(), env);
      latest.ok()) {
    const std::string name(absl::StripAsciiWhitespace(*latest));
    if (ParseStepDirName(name) >= 0 && env->IsDirectory((path / name).string())) return true;
  }
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(dir);
  for (const std::string& name : names.ok() ? *names : std::vector<std::string>()) {
    if (ParseStepDirName(name) >= 0 &&
        env->FileExists((path / name / kManifestFileName).string())) {
      return true;
    }
  }
  return false;
}

std::string CheckpointStepDirAround(const std::string& dir, Env* env) {
  std::error_code ec;
  std::filesystem::path at = std::filesystem::weakly_canonical(std::filesystem::absolute(dir, ec), ec);
  if (ec) return "";
  for (; at.has_relative_path(); at = at.parent_path()) {
    const std::string name = at.filename().string();
    const bool step_dir = ParseStepDirName(name) >= 0 ||
                          (name.rfind("step-", 0) == 0 && name.find(".tmp-") != std::string::npos);
    if (step_dir && IsCheckpointsDir(at.parent_path().string(), env)) return at.string();
  }
  return "";
}

}  // namespace dropk
