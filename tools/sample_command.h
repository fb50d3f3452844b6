// `dropk sample`: completions from a running dropk-serve (--url) or offline
// from a checkpoint (--checkpoint) through the same completions code, so the
// same request and seed print the same text (tools/sample_command.cc).
#ifndef DROPK_TOOLS_SAMPLE_COMMAND_H_
#define DROPK_TOOLS_SAMPLE_COMMAND_H_

#include <functional>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace dropk {

void RegisterSampleCommand(CLI::App& app, std::function<absl::Status()>& action);

}  // namespace dropk

#endif  // DROPK_TOOLS_SAMPLE_COMMAND_H_
