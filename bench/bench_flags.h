// Command-line parsing for the benchmarks, with the exit codes of every dropk
// binary (base/exit_codes.h): CLI11_PARSE returns CLI11's own (105 for a bad
// value, 109 for an unknown flag), which scripts checking for 2 misread.
#ifndef DROPK_BENCH_BENCH_FLAGS_H_
#define DROPK_BENCH_BENCH_FLAGS_H_

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>

#include "base/exit_codes.h"

namespace dropk {

// Parses argv into `app`. Returns nothing to go on, or the code main must
// return: kExitOk after printing --help, kExitUsage after one line
// "PROGRAM: what is wrong" on stderr.
inline std::optional<int> ParseBenchFlags(CLI::App& app, int argc, char** argv,
                                          const char* program) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    app.exit(e);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace dropk

#endif  // DROPK_BENCH_BENCH_FLAGS_H_
