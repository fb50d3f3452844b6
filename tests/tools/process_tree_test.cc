// What dropk launch ends after an attempt: every process below it, those in
// process groups and sessions of their own included, and orphans of its
// children, which it adopts.
#include "tools/process_tree.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace dropk {
namespace {

// Whether process `pid` is gone or a zombie.
bool Ended(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  const std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  return stat.empty() || (paren != std::string::npos && stat.substr(paren + 2, 1) == "Z");
}

// Run in a forked child (a death test's), which becomes the launcher: its
// child starts a grandchild in a session of its own and exits, leaving it
// orphaned. The grandchild must be found below and ended.
TEST(ProcessTreeDeathTest, AnOrphanInASessionOfItsOwnIsAdoptedAndEnded) {
  EXPECT_EXIT(
      {
        if (!AdoptOrphansOfDescendants()) std::exit(3);
        int pipe_fds[2];
        if (pipe(pipe_fds) != 0) std::exit(4);
        const pid_t child = fork();
        if (child == 0) {
          const pid_t grandchild = fork();
          if (grandchild == 0) {
            setsid();
            for (;;) pause();
          }
          if (write(pipe_fds[1], &grandchild, sizeof grandchild) != sizeof grandchild) _exit(1);
          _exit(0);
        }
        pid_t grandchild = 0;
        if (read(pipe_fds[0], &grandchild, sizeof grandchild) != sizeof grandchild) std::exit(5);
        waitpid(child, nullptr, 0);
        // Orphaned: adopted by this process, found below it.
        const std::vector<pid_t> below = DescendantsOf(getpid());
        if (std::find(below.begin(), below.end(), grandchild) == below.end()) std::exit(6);
        KillDescendants();
        std::exit(Ended(grandchild) && DescendantsOf(getpid()).empty() ? 0 : 7);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace dropk
