// Flag values CLI11 takes wrongly without a word.
// A flag written without its value before another flag. CLI11 takes the
// argument after a flag that needs a value as that value, whatever it is:
// `dropk-train --resume --max_iters=5` resumed from a checkpoint named
// "--max_iters=5" and dropped max_iters; `dropk data prepare --out
// --threads=2 in.txt` wrote into a directory named "--threads=2".
// So is one written with '=' and nothing after it (`--out= in.txt`).
// And an integer out of range: CLI11 (2.1) reads a 64-bit one with strtoull
// or strtoll and keeps what they saturate or wrap to, and refuses a 32-bit
// one past its type as "Could not convert", naming no range.
#ifndef DROPK_BASE_CLI_FLAG_VALUES_H_
#define DROPK_BASE_CLI_FLAG_VALUES_H_

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/closest_name.h"
#include "base/number_text.h"

namespace dropk {

// The usage error for the value of `option`, written at args[i]
// ("--rates=0.1,,0.2", or "--rates" and the argument after it), when
// `option` takes a list split at a delimiter and an item of the value is
// empty; "" otherwise (`option` null, no delimiter, no value). CLI11 drops
// empty items without a word: `--rates 0.1,,0.2` studied two rates.
inline std::string ListValueWithAnEmptyItem(const CLI::Option* option,
                                            const std::vector<std::string>& args, size_t i) {
  if (option == nullptr || option->get_delimiter() == '\0' ||
      option->get_items_expected_min() < 1) {
    return "";
  }
  const size_t equals = args[i].find('=');
  if (equals == std::string::npos && i + 1 == args.size()) return "";
  const std::string value =
      equals != std::string::npos ? args[i].substr(equals + 1) : args[i + 1];
  const char delimiter = option->get_delimiter();
  size_t item = 1;
  for (size_t start = 0;; ++item) {
    const size_t end = std::min(value.find(delimiter, start), value.size());
    if (value.find_first_not_of(" \t", start) >= end) {
      return absl::StrCat(args[i].substr(0, equals), " ", value, ": item ", item,
                          " is empty; give every value, separated by single '",
                          std::string(1, delimiter), "'");
    }
    if (end == value.size()) return "";
    start = end + 1;
  }
}

// The usage error for the first argument of `args` (those after the
// program's name) that names a long flag needing a value and is followed by
// an argument that names a flag itself (up to its '='), or "" when there is
// none. Flags are those of `app` and of the subcommands the words of `args`
// name so far ("dropk data prepare --out"), or that is written "--flag=" with
// nothing after the '=' and followed by any argument; or, for a flag that
// takes a list, ListValueWithAnEmptyItem's error. Stops at "--": what
// follows is another command's. A value that only starts with '-' ("-1", "--x" naming
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
    // "--out=" with nothing after the '=': CLI11 takes the next argument as
    // the value, so `dropk data prepare --out= in.txt` wrote into in.txt's
    // name and said "input is required".
    if (i + 1 < args.size() && args[i].starts_with("--") && args[i].ends_with("=")) {
      const CLI::Option* option = find(args[i]);
      if (option != nullptr && option->get_items_expected_min() >= 1) {
        return args[i] + " gives no value after its '=' (the next argument, " + args[i + 1] +
               ", would be taken as it); give the value after '='";
      }
    }
    if (const std::string empty_item = ListValueWithAnEmptyItem(find(args[i]), args, i);
        !empty_item.empty()) {
      return empty_item;
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

// A CLI11 check for an integer flag read into `Int` (int, int64_t,
// uint64_t, size_t...), which refuses every text that is not an integer in
// [min, max] as written: "must be an integer in [MIN, MAX], got TEXT" (CLI11
// puts the flag first). It runs before CLI11 converts the text. Without it,
// a 64-bit flag was converted with strtoull or strtoll and checked no more:
// 18446744073709551616 became 2^64 - 1, "-1" into an unsigned flag 2^64 - 1
// and "-18446744073709550616" 1000, so a CLI::Range saw numbers nobody
// typed; a 32-bit one past its type (`dropk sample --max-tokens
// 99999999999`) was CLI11's "Could not convert", naming no range; and
// CLI::Range said "Value 1.5 not in range 1 to 64". Reads numbers as CLI11
// does (base 0: 0x10 is 16, a leading 0 is octal). Help shows "INT in [MIN -
// MAX]" as CLI::Range's does ("UINT" for an unsigned Int).
template <typename Int>
CLI::Validator IntegerFlagRange(Int min, Int max) {
  static_assert(std::is_integral_v<Int> && !std::is_same_v<Int, bool>);
  return CLI::Validator(
      [min, max](const std::string& text) -> std::string {
        const auto problem = [&] {
          return absl::StrCat("must be an integer in [", min, ", ", max, "], got ", text);
        };
        char* end = nullptr;
        errno = 0;
        bool in_range;
        if constexpr (std::is_unsigned_v<Int>) {
          // strtoull negates a number after a '-' in unsigned arithmetic.
          if (text.find('-') != std::string::npos) return problem();
          const unsigned long long value = std::strtoull(text.c_str(), &end, 0);
          in_range = value >= min && value <= max;
        } else {
          const long long value = std::strtoll(text.c_str(), &end, 0);
          in_range = value >= min && value <= max;
        }
        if (text.empty() || errno == ERANGE || end != text.c_str() + text.size() || !in_range) {
          return problem();
        }
        return std::string();
      },
      absl::StrCat(std::is_unsigned_v<Int> ? "UINT" : "INT", " in [", min, " - ", max, "]"));
}

// A CLI11 check for a flag that names a file: an empty value (`--api-key-file
// "$UNSET_VARIABLE"`) is refused, "is empty; name WHAT" (CLI11 puts the
// flag first). CLI11 takes "" as a value, and a caller that tests the value
// for emptiness reads it as "not given": dropk-serve --api-key-file "" served
// every route without a key, and --port-file "" wrote the port nowhere.
inline CLI::Validator NonEmptyFlagValue(std::string what) {
  return CLI::Validator(
      [what](const std::string& text) -> std::string {
        return text.empty() ? absl::StrCat("is empty; name ", what) : std::string();
      },
      "");
}

// A CLI11 check for a flag that takes a yes-or-no value (`--cuda-graphs
// false`): true, false, 1 or 0 (the words in any case), as dropk-train's
// bool fields take. Anything else is refused quoting it, "must be true,
// false, 1 or 0, got TEXT" (CLI11 puts the flag first). CLI11 reads a bool option as any
// number (non-zero is true) or one of its words, so `--cuda-graphs 5` was
// true and `--cuda-graphs 0.5` refused as "Could not convert". Help shows
// the option's type alone, "BOOLEAN" (this check adds no second name).
inline CLI::Validator BoolFlagValue() {
  return CLI::Validator(
      [](const std::string& text) -> std::string {
        for (const char* word : {"true", "false", "1", "0"}) {
          if (absl::EqualsIgnoreCase(text, word)) return std::string();
        }
        return absl::StrCat("must be true, false, 1 or 0, got ", text.empty() ? "\"\"" : text);
      },
      "");
}

// A CLI11 check for a real-number flag that must lie strictly between `low`
// and `high`, which refuses every other text quoting it as typed: "must be
// a number strictly between LOW and HIGH, got TEXT" (CLI11 puts the flag
// first). CLI11 reads such a flag with strtod and keeps what it rounds to:
// --val-fraction 1e-400 became 0, and the range check after parsing said
// "val_fraction 0", a number nobody typed. Reads numbers as
// ReadRealText does (base/number_text.h). Help shows "FLOAT in (LOW, HIGH)".
inline CLI::Validator RealFlagOpenRange(double low, double high) {
  return CLI::Validator(
      [low, high](const std::string& text) -> std::string {
        const std::string rule = absl::StrCat("must be a number strictly between ", low, " and ",
                                              high, ", got ", text.empty() ? "\"\"" : text);
        double value = 0;
        switch (ReadRealText(text, &value)) {
          case RealText::kFinite: return value > low && value < high ? std::string() : rule;
          case RealText::kUnderflow:
            return absl::StrCat(rule, ", too small for a double: it would be read as 0");
          case RealText::kNotANumber:
          case RealText::kNotFinite: break;
        }
        return rule;
      },
      absl::StrCat("FLOAT in (", low, ", ", high, ")"));
}

// CLI11's words for a parse error, where they do not say what happened: a
// flag given twice read "--threads: At Most 1 required but received 2";
// it becomes "--threads given 2 times; give it once". Other messages are
// returned as they are.
inline std::string DescribeParseError(const std::string& what) {
  static constexpr char kAtMostOne[] = ": At Most 1 required but received ";
  const size_t at = what.find(kAtMostOne);
  if (at == std::string::npos) return what;
  return absl::StrCat(what.substr(0, at), " given ", what.substr(at + sizeof(kAtMostOne) - 1),
                      " times; give it once");
}

// " (did you mean --x?)" for ClosestName(given, known), "" when none.
inline std::string DidYouMean(const std::string& given, const std::vector<std::string>& known) {
  const std::string closest = ClosestName(given, known);
  return closest.empty() ? "" : absl::StrCat(" (did you mean ", closest, "?)");
}

// After CLI11's parse of `app` failed: "unknown flag --x (did you mean
// --y?)" for the first argument it left over that is written as a flag,
// comparing it with the long flags of `app` and of the subcommands parsed;
// "" when it left none. CLI11 reports a missing required flag before an
// unknown one, so `dropk-serve --checkpoint DIR` said "--checkpoints is
// required" without a word about the flag given.
inline std::string UnknownFlagAfterParse(const CLI::App& app) {
  std::vector<std::string> known;
  std::vector<const CLI::App*> commands = {&app};
  for (size_t i = 0; i < commands.size(); ++i) {
    for (const CLI::Option* option : commands[i]->get_options()) {
      for (const std::string& name : option->get_lnames()) known.push_back("--" + name);
    }
    for (const CLI::App* sub : commands[i]->get_subcommands()) commands.push_back(sub);
  }
  for (const std::string& extra : app.remaining(/*recurse=*/true)) {
    if (extra.size() < 2 || extra[0] != '-' || extra == "--") continue;
    const std::string name = extra.substr(0, extra.find('='));
    return absl::StrCat("unknown flag ", name, DidYouMean(name, known));
  }
  return "";
}

}  // namespace dropk

#endif  // DROPK_BASE_CLI_FLAG_VALUES_H_
