#include "tools/study/gnuplot.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace dropk {

std::string GnuplotQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

absl::Status RunGnuplot(const std::string& script_path, const std::string& script) {
  {
    std::ofstream out(script_path, std::ios::trunc);
    out << script;
    if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", script_path));
  }
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    return absl::FailedPreconditionError(
        "gnuplot is not installed (Debian: apt-get install gnuplot-nox; tools/setup.sh does)");
  }
  // Single-quote the path for the shell; gnuplot's messages come back on the pipe.
  std::string quoted = "'";
  for (char c : script_path) quoted += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  quoted += "'";
  FILE* pipe = popen(absl::StrCat("gnuplot ", quoted, " 2>&1").c_str(), "r");
  if (pipe == nullptr) return absl::InternalError("cannot start gnuplot");
  std::string messages;
  std::array<char, 512> buffer;
  while (size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe))
    messages.append(buffer.data(), n);
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    // gnuplot echoes the failing command with a caret under it and ends with
    // the reason: that last line keeps the error to one line.
    const std::vector<absl::string_view> lines =
        absl::StrSplit(messages, '\n', absl::SkipWhitespace());
    return absl::InternalError(absl::StrCat("gnuplot failed on ", script_path, ": ",
                                            lines.empty() ? "no message" : lines.back()));
  }
  return absl::OkStatus();
}

}  // namespace dropk
