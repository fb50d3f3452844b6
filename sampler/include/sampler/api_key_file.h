#ifndef DROPK_SAMPLER_API_KEY_FILE_H_
#define DROPK_SAMPLER_API_KEY_FILE_H_

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"

namespace dropk {

// The key in `path`: one key on one line, whitespace around it trimmed, at
// most 4096 bytes, no control character inside. An error's message names
// the file and what is wrong ("--api-key-file F: empty key").
absl::StatusOr<std::string> ReadApiKeyFile(const std::string& path);

// The key of an --api-key-file, re-read when the file changes, so that an
// operator who rotates the key (writes the file, or renames a new one over
// it) has the old key refused from then on, without a restart. A file that
// changes into something that is not a key (empty, removed, unreadable)
// keeps the previous key, logged once to stderr naming the file.
// Thread-safe.
class ApiKeyFile {
 public:
  // Reads `path` once; its errors are ReadApiKeyFile's.
  static absl::StatusOr<std::shared_ptr<ApiKeyFile>> Open(const std::string& path);

  // The key now: one stat of the file, and a read when its identity, size
  // or times changed since the last look.
  std::string Current();

 private:
  struct Stamp {
    unsigned long long dev = 0, ino = 0, size = 0;
    long long mtime_ns = 0, ctime_ns = 0;
    bool present = false;
    bool operator==(const Stamp&) const = default;
  };
  static Stamp StampOf(const std::string& path);

  ApiKeyFile(std::string path, std::string key, Stamp stamp)
      : path_(std::move(path)), key_(std::move(key)), stamp_(stamp) {}

  const std::string path_;
  std::mutex mu_;
  std::string key_;  // guarded by mu_
  Stamp stamp_;      // guarded by mu_: the file as last looked at
};

}  // namespace dropk

#endif  // DROPK_SAMPLER_API_KEY_FILE_H_
