// A fault-injecting Env for tests, after leveldb's db/fault_injection_test.cc:
// it wraps a real Env to fail the n-th mutating call or to forget what was
// never fsynced, so a test can prove that a checkpoint save interrupted at
// any point leaves the previous checkpoint loadable. Test-only: production
// code never links it (tests/support/).
#ifndef DROPK_TESTS_SUPPORT_FAULT_INJECTION_ENV_H_
#define DROPK_TESTS_SUPPORT_FAULT_INJECTION_ENV_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/env.h"
#include "support/forwarding_env.h"

namespace dropk {

// Wraps another Env (which it does not own) and injects faults for tests:
// - FailWritesAfter(n): the n+1-th and later mutating calls (Append, Sync,
//   Close, CreateDir, NewWritableFile, Rename, Remove, SyncDir) fail with
//   Unavailable "injected fault"; -1 disables. Count them with ops().
// - SimulateCrash(): every file written through this Env loses the bytes
//   appended since its last successful Sync() (truncated back), and files
//   created since the last SyncDir of their directory are deleted, as after
//   a power cut. A rename of a file over an existing one is undone (the old
//   contents come back) unless its directory was synced after it. Renames
//   of directories are not undone, which is the weaker model leveldb's test
//   uses too.
class FaultInjectionEnv : public ForwardingEnv {
 public:
  explicit FaultInjectionEnv(Env* base) : ForwardingEnv(base) {}

  void FailWritesAfter(int64_t n);
  int64_t ops() const;
  void SimulateCrash();

  absl::Status CreateDir(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  absl::Status RenameFile(const std::string& from, const std::string& to) override;
  absl::Status RemoveFile(const std::string& path) override;
  absl::Status RemoveDirRecursively(const std::string& path) override;
  absl::Status SyncDir(const std::string& path) override;

  // Called by its files.
  absl::Status MaybeFail(const char* op, const std::string& path);
  void RecordSynced(const std::string& path, uint64_t size);

 private:
  struct FileState {
    uint64_t synced_size = 0;
    bool dir_synced = false;  // its directory entry is durable
  };
  mutable std::mutex mu_;
  int64_t fail_after_ = -1;
  int64_t ops_ = 0;
  std::map<std::string, FileState> files_;  // written through this Env, by current path
  struct ReplacedFile {
    std::string path;
    std::string old_contents;
  };
  std::vector<ReplacedFile> replaced_;  // renames over existing files, dir not yet synced
};

}  // namespace dropk

#endif  // DROPK_TESTS_SUPPORT_FAULT_INJECTION_ENV_H_
