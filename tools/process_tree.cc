#include "tools/process_tree.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"

namespace dropk {
namespace {

// The parent of process `pid` from /proc/PID/stat, -1 when it is gone. The
// command name (field 2) is in parentheses and may hold spaces and ')': the
// fields after the last ')' are read.
pid_t ParentOf(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  const std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  // ") S PPID ..."
  const size_t start = stat.find(' ', paren + 2);
  if (start == std::string::npos) return -1;
  const size_t end = stat.find(' ', start + 1);
  int parent = -1;
  if (!absl::SimpleAtoi(stat.substr(start + 1, end - start - 1), &parent)) return -1;
  return parent;
}

}  // namespace

std::vector<pid_t> DescendantsOf(pid_t root) {
  std::multimap<pid_t, pid_t> children;  // parent -> child
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    int pid = 0;
    if (!absl::SimpleAtoi(name, &pid)) continue;
    if (const pid_t parent = ParentOf(name); parent > 0) children.emplace(parent, pid);
  }
  std::vector<pid_t> below;
  std::vector<pid_t> frontier = {root};
  while (!frontier.empty()) {
    const pid_t parent = frontier.back();
    frontier.pop_back();
    const auto [first, last] = children.equal_range(parent);
    for (auto it = first; it != last; ++it) {
      below.push_back(it->second);
      frontier.push_back(it->second);
    }
  }
  return below;
}

bool AdoptOrphansOfDescendants() { return prctl(PR_SET_CHILD_SUBREAPER, 1) == 0; }

void KillDescendants() {
  // Killed processes end at once (one in uninterruptible sleep, on a dead
  // NFS server say, may not: it is not waited on past the second). One
  // that forked between a scan and its kill leaves a child: scanned again.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (;;) {
    const std::vector<pid_t> below = DescendantsOf(getpid());
    for (const pid_t pid : below) kill(pid, SIGKILL);
    pid_t reaped;
    while ((reaped = waitpid(-1, nullptr, WNOHANG)) > 0 || (reaped < 0 && errno == EINTR)) {
    }
    if (reaped < 0 && below.empty()) return;  // ECHILD, and nothing left below
    if (std::chrono::steady_clock::now() > deadline) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace dropk
