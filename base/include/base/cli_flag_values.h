// A flag written without its value before another flag. CLI11 takes the
// argument after a flag that needs a value as that value, whatever it is:
// `dropk-train --resume --max_iters=5` resumed from a checkpoint named
// "--max_iters=5" and dropped max_iters; `dropk data prepare --out
// --threads=2 in.txt` wrote into a directory named "--threads=2".
#ifndef DROPK_BASE_CLI_FLAG_VALUES_H_
#define DROPK_BASE_CLI_FLAG_VALUES_H_

#include <functional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace dropk {

// The usage error for the first argument of `args` (those after the
// program's name) that names a long flag needing a value and is followed by
// an argument that names a flag itself (up to its '='), or "" when there is
// none. Flags are those of `app` and of the subcommands the words of `args`
// name so far ("dropk data prepare --out"). Stops at "--": what follows is
// another command's. A value that only starts with '-' ("-1", "--x" naming
// no flag) stays a value.
inline std::string FlagMissingItsValue(const CLI::App& app, const std::vector<std::string>& args) {
  std::vector<const CLI::Option*> options = app.get_options();
  const CLI::App* command = &app;
  const auto find = [&](const std::string& arg) -> const CLI::Option* {
    if (arg.size() < 2 || arg[0] != '-') return nullptr;
    const std::string name = arg.substr(0, arg.find('='));
    for (const CLI::Option* option : options) {
      if (option->check_name(name)) return option;
    }
    return nullptr;
  };
  for (size_t i = 0; i < args.size() && args[i] != "--"; ++i) {
    if (!args[i].starts_with("-")) {
      for (const CLI::App* sub : command->get_subcommands(std::function<bool(const CLI::App*)>())) {
        if (!sub->check_name(args[i])) continue;
        command = sub;
        for (const CLI::Option* option : sub->get_options()) options.push_back(option);
        break;
      }
      continue;
    }
    if (i + 1 == args.size() || !args[i].starts_with("--") ||
        args[i].find('=') != std::string::npos) {
      continue;
    }
    const CLI::Option* option = find(args[i]);
    if (option == nullptr || option->get_items_expected_min() < 1 || find(args[i + 1]) == nullptr) {
      continue;
    }
    return args[i] + ": no value given (the next argument, " + args[i + 1] +
           ", is a flag); write " + args[i] + "=VALUE, which also takes a value starting with --";
  }
  return "";
}

}  // namespace dropk

#endif  // DROPK_BASE_CLI_FLAG_VALUES_H_
