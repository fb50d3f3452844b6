#include "support/fault_injection_env.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>

#include "absl/strings/str_cat.h"

namespace dropk {
namespace {

std::string Parent(const std::string& path) {
  const std::string p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

// A file of a FaultInjectionEnv: counts and fails like the Env, records
// what was synced.
class FaultInjectionFile : public WritableFile {
 public:
  FaultInjectionFile(FaultInjectionEnv* env, std::string path, std::unique_ptr<WritableFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}
  absl::Status Append(const void* data, size_t n) override {
    if (absl::Status s = env_->MaybeFail("append", path_); !s.ok()) return s;
    if (absl::Status s = base_->Append(data, n); !s.ok()) return s;
    size_ += n;
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    if (absl::Status s = env_->MaybeFail("sync", path_); !s.ok()) return s;
    if (absl::Status s = base_->Sync(); !s.ok()) return s;
    env_->RecordSynced(path_, size_);
    return absl::OkStatus();
  }
  absl::Status Close() override {
    if (absl::Status s = env_->MaybeFail("close", path_); !s.ok()) {
      base_->Close().IgnoreError();
      return s;
    }
    return base_->Close();
  }

 private:
  FaultInjectionEnv* env_;
  std::string path_;
  std::unique_ptr<WritableFile> base_;
  uint64_t size_ = 0;
};

}  // namespace

void FaultInjectionEnv::FailWritesAfter(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_after_ = n;
  ops_ = 0;
}

int64_t FaultInjectionEnv::ops() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_;
}

absl::Status FaultInjectionEnv::MaybeFail(const char* op, const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  ++ops_;
  if (fail_after_ >= 0 && ops_ > fail_after_) {
    return absl::UnavailableError(
        absl::StrCat(path, ": ", op, ": injected fault (operation ", ops_, ")"));
  }
  return absl::OkStatus();
}

void FaultInjectionEnv::RecordSynced(const std::string& path, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  files_[path].synced_size = size;
}

absl::Status FaultInjectionEnv::CreateDir(const std::string& path) {
  if (absl::Status s = MaybeFail("mkdir", path); !s.ok()) return s;
  return base_->CreateDir(path);
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(
    const std::string& path) {
  if (absl::Status s = MaybeFail("create", path); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<WritableFile>> base = base_->NewWritableFile(path);
  if (!base.ok()) return base.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    files_[path] = FileState{};
  }
  return std::unique_ptr<WritableFile>(new FaultInjectionFile(this, path, *std::move(base)));
}

absl::Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  if (absl::Status s = MaybeFail("rename", from); !s.ok()) return s;
  // Keep what a crash before the next SyncDir would bring back.
  std::optional<std::string> old_contents;
  if (!base_->IsDirectory(to) && base_->FileExists(to)) {
    absl::StatusOr<std::string> old = ReadSmallFile(base_, to, 1u << 20);
    if (old.ok()) old_contents = *std::move(old);
  }
  if (absl::Status s = base_->RenameFile(from, to); !s.ok()) return s;
  // Move the state of `from`, or of every file below it when it is a directory.
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, FileState> moved;
  for (auto it = files_.begin(); it != files_.end();) {
    if (it->first == from) {
      moved[to] = it->second;
      it = files_.erase(it);
    } else if (it->first.rfind(from + "/", 0) == 0) {
      moved[to + it->first.substr(from.size())] = it->second;
      it = files_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [path, state] : moved) files_[path] = state;
  if (old_contents) replaced_.push_back({to, *std::move(old_contents)});
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  if (absl::Status s = MaybeFail("unlink", path); !s.ok()) return s;
  if (absl::Status s = base_->RemoveFile(path); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  files_.erase(path);
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::RemoveDirRecursively(const std::string& path) {
  if (absl::Status s = MaybeFail("remove", path); !s.ok()) return s;
  if (absl::Status s = base_->RemoveDirRecursively(path); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = files_.begin(); it != files_.end();) {
    it = it->first.rfind(path + "/", 0) == 0 ? files_.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::SyncDir(const std::string& path) {
  if (absl::Status s = MaybeFail("fsync directory", path); !s.ok()) return s;
  if (absl::Status s = base_->SyncDir(path); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [file, state] : files_) {
    if (Parent(file) == path) state.dir_synced = true;
  }
  std::erase_if(replaced_, [&](const ReplacedFile& r) { return Parent(r.path) == path; });
  return absl::OkStatus();
}

void FaultInjectionEnv::SimulateCrash() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [path, state] : files_) {
    std::error_code ec;
    if (!state.dir_synced) {
      std::filesystem::remove(path, ec);
    } else if (std::filesystem::exists(path, ec)) {
      std::filesystem::resize_file(path, state.synced_size, ec);
    }
  }
  // Undo unsynced renames over existing files, newest first.
  for (auto it = replaced_.rbegin(); it != replaced_.rend(); ++it) {
    std::ofstream out(it->path, std::ios::binary | std::ios::trunc);
    out << it->old_contents;
  }
  replaced_.clear();
  files_.clear();
  fail_after_ = -1;
}

}  // namespace dropk
