#include "checkpoint/env.h"

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
    // O_NONBLOCK: opening a FIFO someone left at `path` for writing would
    // otherwise wait for a reader, maybe for ever; a regular file ignores it.
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0 && errno == ENXIO) {  // a FIFO without a reader
      return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
    }
    if (fd < 0) return PosixError("open for writing", path, errno);
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
    }
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
    // O_NONBLOCK: a FIFO at `path` must not block the open (pread then
    // fails on it); a regular file ignores it.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
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
                                                    ", expected ", n, " bytes from byte ", offset));
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
    // readdir says end and failure alike with null, failure by errno: a
    // failed read (EIO, a stale NFS handle) listed the entries before it,
    // maybe none, as if that were all.
    errno = 0;
    while (const dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
      errno = 0;
    }
    const int err = errno;
    ::closedir(dir);
    if (err != 0) return PosixError("list directory", path, err);
    return names;
  }
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return PosixError("stat", path, errno);
    if (!S_ISREG(st.st_mode))
      return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
    return static_cast<uint64_t>(st.st_size);
  }
  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }
  bool IsDirectory(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }
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
      return absl::Status(status.code(),
                          absl::StrCat("cannot write ", path, ": ", status.message()));
    }
  }
  return status;
}

}  // namespace dropk
