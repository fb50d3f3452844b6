// The file-system seam of checkpoints, in the shape of leveldb's Env: every
// byte a checkpoint writes or reads goes through an Env, so tests can wrap
// the real one to fail the n-th write or to forget what was never fsynced
// (tests/support/fault_injection_env.h, after leveldb's
// db/fault_injection_test.cc).
//
// Errors are absl::Status values whose message names the path and the
// system's reason. Env objects are thread-safe; a WritableFile is used by
// one thread at a time.
#ifndef DROPK_CHECKPOINT_ENV_H_
#define DROPK_CHECKPOINT_ENV_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dropk {

// A file being written sequentially. Bytes are durable only after Sync().
class WritableFile {
 public:
  virtual ~WritableFile() = default;  // closes without syncing when not closed
  virtual absl::Status Append(const void* data, size_t n) = 0;
  virtual absl::Status Sync() = 0;  // fdatasync: the data is on disk
  virtual absl::Status Close() = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX Env; never deleted.
  static Env* Default();

  // Creates `path` (one level); OK when it already exists as a directory.
  virtual absl::Status CreateDir(const std::string& path) = 0;
  // Creates or truncates `path` for writing.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  // rename(2): atomic, replaces `to` (a file, or an empty directory).
  virtual absl::Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual absl::Status RemoveFile(const std::string& path) = 0;
  // Removes `path` and everything below it; OK when it does not exist.
  virtual absl::Status RemoveDirRecursively(const std::string& path) = 0;
  // fsync of a directory, making creations, renames and removals in it durable.
  virtual absl::Status SyncDir(const std::string& path) = 0;
  // Reads exactly n bytes at `offset` into out; a short file is OutOfRange.
  virtual absl::Status ReadFileRange(const std::string& path, uint64_t offset, size_t n,
                                     void* out) = 0;
  // Names (not paths) of the entries of directory `path`, without . and ..;
  // one that cannot be opened or read through (readdir failing) is an error
  // "PATH: list directory: <reason>", never a partial list.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) = 0;
  virtual absl::StatusOr<uint64_t> FileSize(const std::string& path) = 0;
  virtual bool FileExists(const std::string& path) = 0;
  virtual bool IsDirectory(const std::string& path) = 0;
};

// Reads a whole file of at most max_bytes (a larger one is an error naming
// the path and both sizes; nothing is allocated for it).
absl::StatusOr<std::string> ReadSmallFile(Env* env, const std::string& path, uint64_t max_bytes);

// Creates path with `bytes` and makes them durable: append, fsync, close.
absl::Status WriteDurableFile(Env* env, const std::string& path, std::string_view bytes);

// Replaces path atomically with what `write` appends: it goes to path.tmp,
// which is fsynced and renamed over path, then the directory is fsynced. A
// reader sees the old file or the whole new one, never a torn one. On
// failure path is unchanged and path.tmp removed; errors name the path.
absl::Status ReplaceFileAtomically(Env* env, const std::string& path,
                                   const std::function<absl::Status(WritableFile&)>& write);

}  // namespace dropk

#endif  // DROPK_CHECKPOINT_ENV_H_
