#include "tools/hostfile_reader.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "checkpoint/env.h"

namespace dropk {
namespace {

// The text of the pipe open (non-blocking) as `fd`; see ReadHostfileText.
absl::StatusOr<std::string> ReadPipe(int fd, uint64_t max_bytes,
                                     std::chrono::milliseconds quiet_limit) {
  std::string text;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got > 0) {
      text.append(buffer, static_cast<size_t>(got));
      if (text.size() > max_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("a pipe that sent more than the ", max_bytes, " bytes allowed"));
      }
      continue;
    }
    if (got == 0) {
      // End of input: every writer closed it, or none ever opened it.
      if (text.empty()) {
        return absl::InvalidArgumentError(
            "a pipe that no program writes to (or that sent nothing); start its writer first, "
            "or name a file");
      }
      return text;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return absl::InvalidArgumentError(absl::StrCat("reading the pipe: ", std::strerror(errno)));
    }
    pollfd in = {fd, POLLIN, 0};
    const int ready = ::poll(&in, 1, static_cast<int>(quiet_limit.count()));
    if (ready == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("a pipe whose writer sent nothing for ", quiet_limit.count() / 1000.0,
                       " s (", text.size(), " bytes before); a hostfile must be written whole"));
    }
    if (ready < 0 && errno != EINTR) {
      return absl::InvalidArgumentError(absl::StrCat("waiting on the pipe: ", std::strerror(errno)));
    }
  }
}

}  // namespace

absl::StatusOr<std::string> ReadHostfileText(const std::string& path, uint64_t max_bytes,
                                             std::chrono::milliseconds quiet_limit) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISFIFO(st.st_mode)) {
    absl::StatusOr<std::string> text = ReadSmallFile(Env::Default(), path, max_bytes);
    if (text.ok() || absl::IsNotFound(text.status())) return text;
    return absl::InvalidArgumentError(text.status().message());
  }
  // Non-blocking: opening a FIFO no program writes to blocks for good.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot open the pipe: ", std::strerror(errno)));
  }
  absl::StatusOr<std::string> text = ReadPipe(fd, max_bytes, quiet_limit);
  ::close(fd);
  return text;
}

}  // namespace dropk
