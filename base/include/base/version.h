// The version of dropk, one for every binary (dropk, dropk-train,
// dropk-serve): each prints "PROGRAM VERSION" for --version, on stdout,
// exit 0. Raise it when a release changes what users see.
#ifndef DROPK_BASE_VERSION_H_
#define DROPK_BASE_VERSION_H_

namespace dropk {

inline constexpr char kVersion[] = "0.1.0";

}  // namespace dropk

#endif  // DROPK_BASE_VERSION_H_
