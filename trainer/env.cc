#include "trainer/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"

namespace dropk {
namespace {

absl::Status PosixError(const std::string& what, const std::string& path, int err) {
  const std::string message = absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  if (err == ENOSPC) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

std::string Parent(const std::string& path) {
  const std::string p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  absl::Status Append(const void* data, size_t n) override {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return PosixError("write", path_, errno);
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    if (::fdatasync(fd_) != 0) return PosixError("fdatasync", path_, errno);
    return absl::OkStatus();
  }
  absl::Status Close() override {
    const int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) return PosixError("close", path_, errno);
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int fd_;
};

class PosixEnv : public Env {
 public:
  absl::Status CreateDir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) == 0) return absl::OkStatus();
    if (errno == EEXIST && IsDirectory(path)) return absl::OkStatus();
    return PosixError("mkdir", path, errno);
  }
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return PosixError("open for writing", path, errno);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return PosixError(absl::StrCat("rename to ", to), from, errno);
    }
    return absl::OkStatus();
  }
  absl::Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return PosixError("unlink", path, errno);
    return absl::OkStatus();
  }
  absl::Status RemoveDirRecursively(const std::string& path) override {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) return absl::InternalError(absl::StrCat(path, ": remove: ", ec.message()));
    return absl::OkStatus();
  }
  absl::Status SyncDir(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return PosixError("open directory", path, errno);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return PosixError("fsync directory", path, err);
    return absl::OkStatus();
  }
  absl::Status ReadFileRange(const std::string& path, uint64_t offset, size_t n,
                             void* out) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return PosixError("open", path, errno);
    char* p = static_cast<char*>(out);
    size_t done = 0;
    absl::Status status;
    while (done < n) {
      const ssize_t r = ::pread(fd, p + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        status = PosixError("read", path, errno);
        break;
      }
      if (r == 0) {
        status = absl::OutOfRangeError(absl::StrCat(path, ": file ends at byte ", offset + done,
                                                    ", expected ", n, " bytes from byte ",
                                                    offset));
        break;
      }
      done += static_cast<size_t>(r);
    }
    ::close(fd);
    return status;
  }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return PosixError("list directory", path, errno);
    std::vector<std::string> names;
    while (const dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(dir);
    return names;
  }
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return PosixError("stat", path, errno);
    if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
    return static_cast<uint64_t>(st.st_size);
  }
  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }
  bool IsDirectory(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }
};

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

Env* Env::Default() {
  static Env* env = new PosixEnv;
  return env;
}

absl::StatusOr<std::string> ReadSmallFile(Env* env, const std::string& path, uint64_t max_bytes) {
  absl::StatusOr<uint64_t> size = env->FileSize(path);
  if (!size.ok()) return size.status();
  if (*size > max_bytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", *size, " bytes, more than the ", max_bytes, " allowed"));
  }
  std::string contents(*size, '\0');
  if (absl::Status s = env->ReadFileRange(path, 0, contents.size(), contents.data()); !s.ok()) {
    return s;
  }
  return contents;
}

absl::Status WriteDurableFile(Env* env, const std::string& path, std::string_view bytes) {
  absl::StatusOr<std::unique_ptr<WritableFile>> file = env->NewWritableFile(path);
  if (!file.ok()) return file.status();
  if (absl::Status s = (*file)->Append(bytes.data(), bytes.size()); !s.ok()) return s;
  if (absl::Status s = (*file)->Sync(); !s.ok()) return s;
  return (*file)->Close();
}

absl::Status ReplaceFileAtomically(Env* env, const std::string& path,
                                   const std::function<absl::Status(WritableFile&)>& write) {
  const std::string tmp = path + ".tmp";
  absl::Status status = [&]() -> absl::Status {
    absl::StatusOr<std::unique_ptr<WritableFile>> file = env->NewWritableFile(tmp);
    if (!file.ok()) return file.status();
    if (absl::Status s = write(**file); !s.ok()) return s;
    if (absl::Status s = (*file)->Sync(); !s.ok()) return s;
    if (absl::Status s = (*file)->Close(); !s.ok()) return s;
    if (absl::Status s = env->RenameFile(tmp, path); !s.ok()) return s;
    const size_t slash = path.find_last_of('/');
    return env->SyncDir(slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash));
  }();
  if (!status.ok()) {
    if (env->FileExists(tmp)) env->RemoveFile(tmp).IgnoreError();
    if (status.message().find(path) == std::string_view::npos) {
      return absl::Status(status.code(), absl::StrCat("cannot write ", path, ": ", status.message()));
    }
  }
  return status;
}

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
    return absl::UnavailableError(absl::StrCat(path, ": ", op, ": injected fault (operation ",
                                               ops_, ")"));
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
