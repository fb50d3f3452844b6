// The version of dropk, one for every binary (dropk, dropk-train,
// dropk-serve): each prints VersionLine("PROGRAM") for --version, on
// stdout, exit 0. Raise kVersion when a release changes what users see.
// The functions are in dropk_version (base/CMakeLists.txt).
#ifndef DROPK_BASE_VERSION_H_
#define DROPK_BASE_VERSION_H_

#include <string>
#include <string_view>

namespace dropk {

inline constexpr char kVersion[] = "0.1.0";

// The git revision of the checkout the binary was built from, as `git
// describe --always --dirty` names it at build time ("183d257",
// "183d257-dirty" with uncommitted changes), or "" when it was built
// outside a git checkout, without git, or with -DDROPK_GIT_REVISION=OFF.
const char* GitRevision();

// "PROGRAM 0.1.0 (git 183d257)", or "PROGRAM 0.1.0" without a revision.
std::string VersionLine(std::string_view program);

}  // namespace dropk

#endif  // DROPK_BASE_VERSION_H_
