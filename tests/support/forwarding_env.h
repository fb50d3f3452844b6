// An Env that passes every call to another Env, for test Envs that change a
// few calls and keep the rest (leveldb's EnvWrapper). Test-only
// (tests/support/).
#ifndef DROPK_TESTS_SUPPORT_FORWARDING_ENV_H_
#define DROPK_TESTS_SUPPORT_FORWARDING_ENV_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/env.h"

namespace dropk {

// Forwards every call to `base`, which it does not own and which must
// outlive it. Derived Envs override what they change and reach the real
// calls through base_.
class ForwardingEnv : public Env {
 public:
  explicit ForwardingEnv(Env* base) : base_(base) {}

  absl::Status CreateDir(const std::string& path) override { return base_->CreateDir(path); }
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    return base_->NewWritableFile(path);
  }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    return base_->RenameFile(from, to);
  }
  absl::Status RemoveFile(const std::string& path) override { return base_->RemoveFile(path); }
  absl::Status RemoveDirRecursively(const std::string& path) override {
    return base_->RemoveDirRecursively(path);
  }
  absl::Status SyncDir(const std::string& path) override { return base_->SyncDir(path); }
  absl::Status ReadFileRange(const std::string& path, uint64_t offset, size_t n,
                             void* out) override {
    return base_->ReadFileRange(path, offset, n, out);
  }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    return base_->ListDir(path);
  }
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    return base_->FileSize(path);
  }
  bool FileExists(const std::string& path) override { return base_->FileExists(path); }
  bool IsDirectory(const std::string& path) override { return base_->IsDirectory(path); }

 protected:
  Env* const base_;
};

}  // namespace dropk

#endif  // DROPK_TESTS_SUPPORT_FORWARDING_ENV_H_
