// `dropk ckpt inspect|verify|export`: checkpoint tools (tools/ckpt_command.cc).
#ifndef DROPK_TOOLS_CKPT_COMMAND_H_
#define DROPK_TOOLS_CKPT_COMMAND_H_

#include <functional>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace dropk {

// Registers the `ckpt` command group on app; the chosen subcommand stores its
// work in `action`. A checkpoint that fails verification is DataLoss (exit 1).
void RegisterCkptCommand(CLI::App& app, std::function<absl::Status()>& action);

}  // namespace dropk

#endif  // DROPK_TOOLS_CKPT_COMMAND_H_
