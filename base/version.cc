#include "base/version.h"

#include <string>
#include <string_view>

namespace dropk {

std::string VersionLine(std::string_view program) {
  std::string line = std::string(program) + " " + kVersion;
  if (const std::string_view revision = GitRevision(); !revision.empty()) {
    line += " (git " + std::string(revision) + ")";
  }
  return line;
}

}  // namespace dropk
