#include "tools/study/gnuplot.h"

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>

#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/cut_for_message.h"

namespace dropk {

namespace {

// `text`, which holds no control character and does not start with ', as
// a single-quoted gnuplot string: no escapes, no backquote or macro
// substitution; ' is doubled. (gnuplot reads '''x' as '' followed by 'x'.)
std::string SingleQuoted(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

bool IsControl(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; }

}  // namespace

std::string GnuplotQuote(const std::string& text) {
  if (std::none_of(text.begin(), text.end(), IsControl) && !text.starts_with('\'')) {
    return SingleQuoted(text);
  }
  // A newline would end the command in the middle of the string, and what
  // follows it would run as gnuplot's next command (`!cmd` runs a shell): a
  // run directory named "run\n!cmd" ran cmd. A single-quoted string cannot
  // hold one, so each control character is its own double-quoted octal
  // escape, and each ' a "'", joined to the text around them by gnuplot's
  // `.`, in parentheses: every place dropk puts a string (set output, set
  // title, plot's file and title, labels, tics) takes such an expression. A
  // NUL, which would end the string, is left out.
  std::vector<std::string> parts;
  std::string run;
  for (char c : text) {
    if (!IsControl(c) && c != '\'') {
      run += c;
      continue;
    }
    if (!run.empty()) parts.push_back(SingleQuoted(run));
    run.clear();
    if (c == '\'') {
      parts.push_back("\"'\"");
    } else if (c != '\0') {
      parts.push_back(absl::StrFormat("\"\\%03o\"", static_cast<unsigned char>(c)));
    }
  }
  if (!run.empty()) parts.push_back(SingleQuoted(run));
  if (parts.empty()) return "''";
  return absl::StrCat("(", absl::StrJoin(parts, "."), ")");
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
    return absl::InternalError(absl::StrCat("gnuplot failed on ", EscapeForMessage(script_path),
                                            ": ", lines.empty() ? "no message" : lines.back()));
  }
  return absl::OkStatus();
}

}  // namespace dropk
