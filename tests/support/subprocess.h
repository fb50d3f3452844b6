// Running the real binaries from tests (tests/support): a command to
// completion with its output captured, or a child process to watch, signal
// and time.
#ifndef DROPK_TESTS_SUPPORT_SUBPROCESS_H_
#define DROPK_TESTS_SUPPORT_SUBPROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dropk::test_util {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct CommandResult {
  int exit_code;    // -1 when killed by a signal
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `command` through /bin/sh (arguments already quoted) to completion and
// returns its exit code, stdout and stderr (captured in a private temporary
// directory, removed afterwards). Add "2>&1" to the command for one stream
// in order. The one helper every test uses to run a command.
inline CommandResult RunCommand(const std::string& command) {
  std::string scratch = (std::filesystem::temp_directory_path() / "dropk_cmd_XXXXXX").string();
  if (mkdtemp(scratch.data()) == nullptr) return {-1, "", "RunCommand: mkdtemp failed"};
  const std::string out = scratch + "/stdout", err = scratch + "/stderr";
  const int status = std::system(("(" + command + ") >'" + out + "' 2>'" + err + "'").c_str());
  CommandResult result{WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(out), ReadFile(err)};
  std::error_code ec;
  std::filesystem::remove_all(scratch, ec);
  return result;
}

// A child process running argv with stdout and stderr appended to log_path,
// in its own process group (so the test can end everything it started).
// Killed with its group on destruction if still running.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_path) {
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      // Open MPI refuses to start as root (CI runs as root) unless told.
      setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
      setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
  }
  ~ChildProcess() {
    if (!exit_code_) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }

  // The exit code once the child has ended within `timeout` (128 + signal
  // when killed), or nullopt if it is still running.
  std::optional<int> WaitFor(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exit_code_) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return exit_code_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

// Processes whose command line contains `marker` and whose environment has
// NAME=VALUE (e.g. OMPI_COMM_WORLD_RANK=1): how a test finds one rank of a
// job it launched through mpirun.
inline std::vector<pid_t> FindProcesses(const std::string& marker, const std::string& env_entry) {
  std::vector<pid_t> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = ReadFile(entry.path() / "cmdline");
    std::string environ = ReadFile(entry.path() / "environ");
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    if (cmdline.find(marker) == std::string::npos) continue;
    if (cmdline.find("mpirun") != std::string::npos) continue;
    environ.insert(environ.begin(), '\0');
    if (environ.find('\0' + env_entry + '\0') != std::string::npos) {
      found.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return found;
}

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_SUBPROCESS_H_
