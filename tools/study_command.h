// `dropk study dropout|topk` and `dropk plot RUN_DIR` (tools/study/ does the
// work; this file only parses flags).
#ifndef DROPK_TOOLS_STUDY_COMMAND_H_
#define DROPK_TOOLS_STUDY_COMMAND_H_

#include <functional>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace dropk {

void RegisterStudyCommand(CLI::App& app, std::function<absl::Status()>& action);
void RegisterPlotCommand(CLI::App& app, std::function<absl::Status()>& action);

}  // namespace dropk

#endif  // DROPK_TOOLS_STUDY_COMMAND_H_
