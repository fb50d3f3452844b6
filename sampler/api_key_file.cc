#include "sampler/api_key_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dropk {

absl::StatusOr<std::string> ReadApiKeyFile(const std::string& path) {
  const std::string at = absl::StrCat("--api-key-file ", path, ": ");
  // A FIFO opened for reading waits for a writer, for good: the file is
  // opened without waiting and its type checked on that descriptor, so a
  // FIFO swapped in after a check by name cannot block a request. A
  // directory opens, and its read is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat(at, "cannot open (", std::strerror(errno), ")"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(at, "not a regular file"));
  }
  // One byte more than a key may hold tells a longer file from a full one.
  char buf[4097];
  size_t n = 0;
  int read_error = 0;  // a directory: EISDIR
  while (n < sizeof(buf)) {
    const ssize_t got = ::read(fd, buf + n, sizeof(buf) - n);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) read_error = errno;
    if (got <= 0) break;
    n += static_cast<size_t>(got);
  }
  ::close(fd);
  if (read_error != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(at, "cannot read (", std::strerror(read_error), ")"));
  }
  if (n == sizeof(buf)) {
    // It was cut to 4096 bytes without a word: no client key could match.
    return absl::InvalidArgumentError(absl::StrCat(at, "longer than 4096 bytes"));
  }
  // An HTTP field value loses its leading and trailing whitespace and holds
  // no line break, so a key with either could never be matched: every
  // request was a 401. The ends are trimmed; a control character inside
  // (a file of two lines, say) is refused.
  std::string key(absl::StripAsciiWhitespace(absl::string_view(buf, n)));
  if (key.empty()) return absl::InvalidArgumentError(absl::StrCat(at, "empty key"));
  for (size_t i = 0; i < key.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(key[i]);
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%sthe key holds a control character (0x%02x at byte %zu); the file must hold one key "
          "on one line",
          at, c, i));
    }
  }
  return key;
}

ApiKeyFile::Stamp ApiKeyFile::StampOf(const std::string& path) {
  Stamp s;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return s;
  s.present = true;
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.size = static_cast<unsigned long long>(st.st_size);
  s.mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
  s.ctime_ns = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
  return s;
}

absl::StatusOr<std::shared_ptr<ApiKeyFile>> ApiKeyFile::Open(const std::string& path) {
  // Stamped before the read: a write racing the read changes the stamp, so
  // the next look reads the file again.
  const Stamp stamp = StampOf(path);
  absl::StatusOr<std::string> key = ReadApiKeyFile(path);
  if (!key.ok()) return key.status();
  return std::shared_ptr<ApiKeyFile>(new ApiKeyFile(path, *std::move(key), stamp));
}

std::string ApiKeyFile::Current() {
  const Stamp now = StampOf(path_);
  std::lock_guard<std::mutex> lock(mu_);
  if (now == stamp_) return key_;
  stamp_ = now;
  absl::StatusOr<std::string> key = ReadApiKeyFile(path_);
  if (key.ok()) {
    if (*key != key_)
      std::fprintf(stderr, "dropk-serve: --api-key-file %s: new key in use\n", path_.c_str());
    key_ = *std::move(key);
  } else {
    // Logged once per change of the file, not per request.
    std::fprintf(stderr, "dropk-serve: %s; keeping the previous key\n",
                 std::string(key.status().message()).c_str());
  }
  return key_;
}

}  // namespace dropk
