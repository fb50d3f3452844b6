#include "trainer/failure_record.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dropk {
namespace {

// "2026-11-30T21:40:02.123Z": milliseconds, so that lines written within
// one second still sort in the order they were written.
std::string UtcNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  return absl::StrFormat("%s.%03dZ", text, static_cast<int>(millis));
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

// Appends `line` to `path` and fsyncs it; false on any failure.
bool AppendAndSync(const std::string& dir, const std::string& path, const std::string& line) {
  std::error_code ignored;  // the open below fails if the directory is not there
  std::filesystem::create_directories(dir, ignored);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) return false;
  // One write(2) of the whole line: with O_APPEND it lands in one piece.
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  const bool synced = written && ::fsync(fd) == 0;
  ::close(fd);
  return synced;
}

}  // namespace

std::string FailureRecordPath(const std::string& out_dir, int rank) {
  return absl::StrFormat("%s/failures/rank-%05d.log", out_dir, rank);
}

bool RecordFailure(const std::string& out_dir, int rank, const std::string& message,
                   std::chrono::milliseconds limit) noexcept {
  if (out_dir.empty()) return false;
  // Whatever goes wrong here (no memory, no thread), the caller must still
  // end the job: nothing escapes.
  try {
    const std::string line =
        absl::StrCat(UtcNow(), " host ", HostName(), " pid ", ::getpid(), ": ", message, "\n");
    // The write runs on a thread of its own so that a filesystem that never
    // answers cannot hold the caller; a thread left blocked there is ended
    // with the process, which is about to exit.
    auto done = std::make_shared<std::promise<bool>>();
    std::future<bool> written = done->get_future();
    std::thread([done, dir = out_dir + "/failures", path = FailureRecordPath(out_dir, rank), line] {
      bool ok = false;
      try {
        ok = AppendAndSync(dir, path, line);
      } catch (...) {  // an allocation in create_directories
      }
      done->set_value(ok);
    }).detach();
    return written.wait_for(limit) == std::future_status::ready && written.get();
  } catch (...) {
    return false;
  }
}

FailureRecordMarks MarkFailureRecords(const std::string& out_dir) {
  FailureRecordMarks marks;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(out_dir + "/failures", ec)) {
    std::error_code size_error;
    const uint64_t size = entry.file_size(size_error);
    if (!size_error && entry.path().extension() == ".log") marks[entry.path().string()] = size;
  }
  return marks;
}

std::vector<std::string> FailureRecordsSince(const std::string& out_dir,
                                             const FailureRecordMarks& marks) {
  std::vector<std::string> lines;
  for (const auto& [path, size] : MarkFailureRecords(out_dir)) {
    const auto mark = marks.find(path);
    const uint64_t from = mark != marks.end() && mark->second <= size ? mark->second : 0;
    std::ifstream in(path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(from));
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) lines.push_back(line);
    }
  }
  // By their leading UTC time alone: lines of one millisecond keep their
  // files' order.
  std::stable_sort(lines.begin(), lines.end(), [](const std::string& a, const std::string& b) {
    return a.substr(0, a.find(' ')) < b.substr(0, b.find(' '));
  });
  return lines;
}

}  // namespace dropk
