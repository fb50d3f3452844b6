#include "trainer/failure_record.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <system_error>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

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

// This machine's IPv4 addresses, each after a space ("" none readable).
std::string OwnAddresses() {
  std::string out;
  for (const std::string& address : ThisHostAddresses()) absl::StrAppend(&out, " ", address);
  return out;
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

// Runs `work` on a detached thread of its own; the future holds its result
// or what it threw. A thread no one waits for any more is left blocked, to
// end with the process. Throws only when no thread can be started.
template <typename T>
std::future<T> StartOnItsOwnThread(std::function<T()> work) {
  auto done = std::make_shared<std::promise<T>>();
  std::future<T> result = done->get_future();
  std::thread([done, work = std::move(work)] {
    try {
      done->set_value(work());
    } catch (...) {  // an allocation failure, in the filesystem library or here
      done->set_exception(std::current_exception());
    }
  }).detach();
  return result;
}

// `work`'s result, run on a thread of its own so that a filesystem that
// never answers cannot hold the caller: nullopt when it has not returned
// within `limit`, or threw. Throws only when no thread can be started.
template <typename T>
std::optional<T> WithinLimit(std::function<T()> work, std::chrono::milliseconds limit) {
  std::future<T> result = StartOnItsOwnThread<T>(std::move(work));
  if (result.wait_for(limit) != std::future_status::ready) return std::nullopt;
  try {
    return result.get();
  } catch (...) {
    return std::nullopt;
  }
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
        absl::StrCat(UtcNow(), " host ", ThisHostName(), " pid ", ::getpid(), ": ", message, "\n");
    return WithinLimit<bool>([dir = out_dir + "/failures", path = FailureRecordPath(out_dir, rank),
                              line] { return AppendAndSync(dir, path, line); },
                             limit)
        .value_or(false);
  } catch (...) {
    return false;
  }
}

FailureRecordMarks MarkFailureRecords(const std::string& out_dir, Env* env) {
  Env* const fs = env != nullptr ? env : Env::Default();
  FailureRecordMarks marks;
  const std::string dir = out_dir + "/failures";
  absl::StatusOr<std::vector<std::string>> names = fs->ListDir(dir);
  if (!names.ok()) return marks;
  for (const std::string& name : *names) {
    if (!absl::EndsWith(name, ".log")) continue;
    const std::string path = dir + "/" + name;
    absl::StatusOr<uint64_t> size = fs->FileSize(path);  // not a regular file: an error
    if (size.ok()) marks[path] = *size;
  }
  return marks;
}

std::vector<std::string> FailureRecordsSince(const std::string& out_dir,
                                             const FailureRecordMarks& marks, Env* env) {
  Env* const fs = env != nullptr ? env : Env::Default();
  std::vector<std::string> lines;
  for (const auto& [path, size] : MarkFailureRecords(out_dir, fs)) {
    const auto mark = marks.find(path);
    const uint64_t from = mark != marks.end() && mark->second <= size ? mark->second : 0;
    std::string text(static_cast<size_t>(size - from), '\0');
    if (!fs->ReadFileRange(path, from, text.size(), text.data()).ok()) continue;
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      lines.emplace_back(line);
    }
  }
  // By their leading UTC time alone: lines of one millisecond keep their
  // files' order.
  std::stable_sort(lines.begin(), lines.end(), [](const std::string& a, const std::string& b) {
    return a.substr(0, a.find(' ')) < b.substr(0, b.find(' '));
  });
  return lines;
}

std::optional<FailureRecordMarks> MarkFailureRecordsWithin(const std::string& out_dir,
                                                           std::chrono::milliseconds limit,
                                                           Env* env) {
  return WithinLimit<FailureRecordMarks>(
      [out_dir, env] { return MarkFailureRecords(out_dir, env); }, limit);
}

std::optional<std::vector<std::string>> FailureRecordsSinceWithin(const std::string& out_dir,
                                                                  const FailureRecordMarks& marks,
                                                                  std::chrono::milliseconds limit,
                                                                  Env* env) {
  return WithinLimit<std::vector<std::string>>(
      [out_dir, marks, env] { return FailureRecordsSince(out_dir, marks, env); }, limit);
}

FailureRecordPoller::FailureRecordPoller(std::string out_dir, FailureRecordMarks marks, Env* env)
    : out_dir_(std::move(out_dir)), marks_(std::move(marks)), env_(env) {}

std::optional<std::vector<std::string>> FailureRecordPoller::Poll(std::chrono::milliseconds wait) {
  if (!in_flight_.valid()) {
    try {
      in_flight_ = StartOnItsOwnThread<std::vector<std::string>>(
          [out_dir = out_dir_, marks = marks_, env = env_] {
            return FailureRecordsSince(out_dir, marks, env);
          });
    } catch (...) {  // no memory or no thread: nothing read this time
      in_flight_ = {};
      return std::nullopt;
    }
  }
  if (in_flight_.wait_for(wait) != std::future_status::ready) return std::nullopt;
  try {
    return in_flight_.get();  // leaves in_flight_ invalid: the next poll reads anew
  } catch (...) {
    return std::nullopt;
  }
}

std::string ThisHostName() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

std::vector<std::string> ThisHostAddresses() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return {};
  std::vector<std::string> out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof text);
    out.push_back(text);
  }
  freeifaddrs(list);
  return out;
}

std::string StartMarkerDir(const std::string& out_dir, const std::string& attempt) {
  return absl::StrCat(out_dir, "/started/", attempt);
}

bool RecordRankStarted(const std::string& out_dir, const std::string& attempt, int rank,
                       std::chrono::milliseconds limit) noexcept {
  if (out_dir.empty() || attempt.empty()) return false;
  try {
    const std::string dir = StartMarkerDir(out_dir, attempt);
    const std::string path = absl::StrFormat("%s/rank-%05d", dir, rank);
    const std::string line = absl::StrCat(ThisHostName(), OwnAddresses(), "\n");
    return WithinLimit<bool>([dir, path, line] { return AppendAndSync(dir, path, line); }, limit)
        .value_or(false);
  } catch (...) {
    return false;
  }
}

std::optional<std::vector<StartedRank>> StartedRanksWithin(const std::string& out_dir,
                                                           const std::string& attempt,
                                                           std::chrono::milliseconds limit) {
  const std::string dir = StartMarkerDir(out_dir, attempt);
  return WithinLimit<std::vector<StartedRank>>(
      [dir] {
        std::vector<StartedRank> ranks;
        // Absent: no rank has started. Any other error (not a directory, no
        // permission, an I/O error) cannot tell, and throws: nullopt.
        std::error_code ec;
        std::filesystem::directory_iterator entries(dir, ec);
        if (ec && ec != std::errc::no_such_file_or_directory) throw std::system_error(ec, dir);
        for (; !ec && entries != std::filesystem::directory_iterator(); entries.increment(ec)) {
          const std::filesystem::directory_entry& entry = *entries;
          const std::string name = entry.path().filename().string();
          StartedRank started;
          if (!absl::StartsWith(name, "rank-") ||
              !absl::SimpleAtoi(absl::string_view(name).substr(5), &started.rank)) {
            continue;
          }
          std::ifstream marker(entry.path());
          if (!marker) throw std::system_error(errno, std::generic_category(), entry.path().string());
          std::string line;
          std::getline(marker, line);
          std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
          if (words.empty()) continue;  // not written yet
          started.host = words[0];
          started.addresses.assign(words.begin() + 1, words.end());
          ranks.push_back(std::move(started));
        }
        return ranks;
      },
      limit);
}

void RemoveStartMarkersWithin(const std::string& out_dir, const std::string& attempt,
                              std::chrono::milliseconds limit) noexcept {
  try {
    WithinLimit<bool>(
        [out_dir, attempt] {
          std::error_code ignored;
          std::filesystem::remove_all(StartMarkerDir(out_dir, attempt), ignored);
          std::filesystem::remove(out_dir + "/started", ignored);  // only when empty
          return true;
        },
        limit);
  } catch (...) {
  }
}

}  // namespace dropk
