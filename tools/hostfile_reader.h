// Reading the hostfile `dropk launch --hostfile` names: a small regular
// file, or a pipe (`--hostfile <(scontrol show hostnames | ...)`, a FIFO a
// script writes), which the launcher reads once and hands to mpirun as a
// file of its own.
#ifndef DROPK_TOOLS_HOSTFILE_READER_H_
#define DROPK_TOOLS_HOSTFILE_READER_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace dropk {

// The text of hostfile `path`, at most `max_bytes` bytes. A pipe or FIFO is
// read to its end; it is refused at once when no program holds it open for
// writing and it is empty (a FIFO read before its writer opened it: the
// read blocked for good), and when its writer sends nothing for
// `quiet_limit`. Anything else is ReadSmallFile's (checkpoint/env.h): a
// directory, a device or a file past `max_bytes` is refused. Errors name
// no flag, only the reason; NotFound for a missing path, InvalidArgument
// otherwise. Never blocks past `quiet_limit` at a time.
absl::StatusOr<std::string> ReadHostfileText(const std::string& path, uint64_t max_bytes,
                                             std::chrono::milliseconds quiet_limit);

}  // namespace dropk

#endif  // DROPK_TOOLS_HOSTFILE_READER_H_
