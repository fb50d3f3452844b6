// Asking the file system about a path the user named without the throwing
// std::filesystem overloads: a symlink loop, a name too long or a directory
// that may not be searched made `dropk sample --checkpoint loop` abort on an
// uncaught filesystem_error, and the error_code overloads read such a path
// as "does not exist". These say what the OS said, naming the path.
#ifndef DROPK_BASE_PATH_STATUS_H_
#define DROPK_BASE_PATH_STATUS_H_

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace dropk {

// The status for the OS error `ec` met on a path: "<what>: <the OS's
// reason>". `what` names the path, and the flag it came from when there is
// one ("--checkpoint run/loop"). A path that cannot name a file (a symlink
// loop, a name too long, a component that is not a directory, no search or
// write permission, a read-only file system) is the user's to fix:
// InvalidArgument (exit 2, base/exit_codes.h);
// a missing path is NotFound (exit 2); anything else (EIO, ...) Unavailable.
inline absl::Status PathError(const std::string& what, std::error_code ec) {
  const std::string message = absl::StrCat(what, ": ", ec.message());
  switch (ec.value()) {
    case ENOENT: return absl::NotFoundError(message);
    case ELOOP:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EACCES:
    case EPERM:
    case EROFS: return absl::InvalidArgumentError(message);
    default: return absl::UnavailableError(message);
  }
}

// The status of `path`, following symlinks; a path that does not exist (or
// under a regular file) gives file_type::not_found, not an error. Any other
// failure is PathError(what, ...). Never throws.
inline absl::StatusOr<std::filesystem::file_status> PathStatus(
    const std::filesystem::path& path, const std::string& what) {
  std::error_code ec;
  std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (ec && status.type() != std::filesystem::file_type::not_found) return PathError(what, ec);
  return status;
}

// Whether `path` exists (following symlinks); PathError(what, ...) when the
// OS cannot tell (see PathStatus). Never throws.
inline absl::StatusOr<bool> PathExists(const std::filesystem::path& path, const std::string& what) {
  absl::StatusOr<std::filesystem::file_status> status = PathStatus(path, what);
  if (!status.ok()) return status.status();
  return std::filesystem::exists(*status);
}

// For a directory creation that failed on `dir`: NotFound "<what>: LINK is a
// symbolic link to TARGET, which does not exist (a file system that is not
// mounted?)" when a component of `dir` (the whole path included) is such a
// link, else OK. mkdir says only "File exists" there, naming neither the
// link nor where it points. Never throws.
inline absl::Status DanglingLinkOnPath(const std::string& what, const std::filesystem::path& dir) {
  std::filesystem::path prefix;
  for (const std::filesystem::path& part : dir) {
    prefix /= part;
    std::error_code ec;
    if (!std::filesystem::is_symlink(std::filesystem::symlink_status(prefix, ec))) continue;
    if (std::filesystem::status(prefix, ec).type() != std::filesystem::file_type::not_found) {
      continue;
    }
    const std::filesystem::path target = std::filesystem::read_symlink(prefix, ec);
    return absl::NotFoundError(absl::StrCat(what, ": ", prefix.string(),
                                            " is a symbolic link to ", target.string(),
                                            ", which does not exist (a file system that is not "
                                            "mounted?)"));
  }
  return absl::OkStatus();
}

// The status for create_directories(dir) failing with `ec`, `what` naming
// the directory and the field or flag it came from ("out_dir=x: cannot
// create it"). A path the user can fix is exit 2 (base/exit_codes.h): a
// dangling symbolic link on it (DanglingLinkOnPath), a parent where no
// directory can be made (ENOENT: under /proc; a component removed meanwhile),
// a file in the way, no permission, a read-only file system (PathError).
// Anything else (EIO, ENOSPC) is PermissionDenied, exit 1. Never throws.
inline absl::Status DirectoryCreationError(const std::string& what,
                                           const std::filesystem::path& dir, std::error_code ec) {
  if (absl::Status s = DanglingLinkOnPath(what, dir); !s.ok()) return s;
  const absl::Status why = PathError(what, ec);
  return absl::IsInvalidArgument(why) || absl::IsNotFound(why)
             ? why
             : absl::PermissionDeniedError(why.message());
}

}  // namespace dropk

#endif  // DROPK_BASE_PATH_STATUS_H_
