// dropk: the tool CLI (data, ckpt, sample, study, plot, launch). Each command
// group registers its subcommands on the app through one Register*Command
// function; the chosen subcommand's callback stores the work to do in
// `action`, which main runs after parsing.
//
// Exit codes (base/exit_codes.h): 0 success (and --help, --version), 1 a runtime
// failure (a checkpoint that fails verification, I/O, an unreachable
// service), 2 bad usage (a bad flag or value, a named path missing); the
// reason is one line on stderr starting "dropk: ".
#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/cli_flag_values.h"
#include "base/cut_for_message.h"
#include "base/exit_codes.h"
#include "base/version.h"
#include "tools/ckpt_command.h"
#include "tools/launch_command.h"
#include "tools/sample_command.h"
#include "tools/study_command.h"
#include "trainer/prepare_data.h"

namespace {

// The work of the subcommand the user chose; empty until one parses.
using Action = std::function<absl::Status()>;

absl::Status RunPrepare(const dropk::PrepareOptions& options) {
  absl::StatusOr<dropk::PrepareSummary> summary = dropk::PrepareData(options);
  if (!summary.ok()) return summary.status();
  const std::string inputs = options.inputs.size() == 1
                                 ? options.inputs.front()
                                 : std::to_string(options.inputs.size()) + " inputs";
  std::cout << "prepared " << inputs << " (" << summary->input_bytes
            << " bytes): " << dropk::Tokenizer::Kind_Name(options.kind) << " vocab "
            << summary->vocab_size << ", train " << summary->train_tokens << " tokens in "
            << summary->train_files << " file(s), val " << summary->val_tokens << " tokens in "
            << summary->val_files << " file(s) -> " << options.out_dir << "\n";
  return absl::OkStatus();
}

// `dropk data prepare --tokenizer char|byte|gpt2 --out DIR [--val-fraction F]
//  [--gpt2-dir D] [--threads N] [--shard-tokens N] INPUT...`
void RegisterDataCommand(CLI::App& app, Action& action) {
  CLI::App* data = app.add_subcommand("data", "Prepare training data");
  data->require_subcommand(1);
  CLI::App* prepare = data->add_subcommand(
      "prepare",
      "Tokenize text files into train and val token files (train.bin, or shards "
      "train-00000.bin, ...) and tokenizer.pb");
  // Flags outlive this function: the callbacks read them after parsing.
  struct Flags {
    std::string tokenizer;
    dropk::PrepareOptions options;
  };
  auto flags = std::make_shared<Flags>();
  prepare
      ->add_option("--tokenizer", flags->tokenizer,
                   "Tokenizer: char, byte, or gpt2 (GPT-2's byte-level BPE)")
      ->required()
      ->transform(CLI::IsMember({"char", "byte", "gpt2"}, CLI::ignore_case));
  prepare->add_option("--out", flags->options.out_dir, "Output directory (created if missing)")
      ->required();
  prepare
      ->add_option("--val-fraction", flags->options.val_fraction,
                   "Fraction of tokens, taken from the end, for val.bin (0 < F < 1)")
      ->capture_default_str()
      ->check(dropk::RealFlagOpenRange(0, 1));
  prepare
      ->add_option("--gpt2-dir", flags->options.gpt2_dir,
                   "gpt2: directory of GPT-2's encoder.json and vocab.bpe")
      ->capture_default_str();
  // The range said at parse time, naming the flag.
  const CLI::Validator thread_count(
      [](std::string& text) -> std::string {
        int value = 0;
        return absl::SimpleAtoi(text, &value) && value >= 0 && value <= dropk::kMaxPrepareThreads
                   ? std::string()
                   : absl::StrCat(text, " must be a whole number in [0, ",
                                  dropk::kMaxPrepareThreads, "] (0: every core)");
      },
      "N in [0, 1024]");
  prepare
      ->add_option("--threads", flags->options.threads,
                   "Encoding threads (0: every core; at most 1024)")
      ->capture_default_str()
      ->check(thread_count);
  // The minimum said with its reason; what is not a whole number of 64
  // bits (-1, 2^64: CLI11 keeps what strtoull wraps or saturates them to)
  // is left to IntegerFlagRange, checked next, which says so.
  const CLI::Validator shard_size(
      [](std::string& text) -> std::string {
        uint64_t value = 0;
        return !absl::SimpleAtoi(text, &value) || value >= dropk::kMinShardTokens
                   ? std::string()
                   : absl::StrCat(text, " ", dropk::ShardTokensRule());
      },
      absl::StrCat("N >= ", dropk::kMinShardTokens));
  prepare
      ->add_option("--shard-tokens", flags->options.shard_tokens,
                   absl::StrCat("Most tokens per token file; larger splits become shards (at "
                                "least ",
                                dropk::kMinShardTokens,
                                ": every training rank memory-maps each shard, a 4 KiB page at "
                                "least)"))
      ->capture_default_str()
      ->check(shard_size)
      ->check(dropk::IntegerFlagRange(dropk::kMinShardTokens, std::numeric_limits<uint64_t>::max())
                  .description(""));  // the help says N >= 4096 already
  prepare
      ->add_option("input", flags->options.inputs,
                   "Input text files or directories (read recursively)")
      ->required();
  prepare->callback([&action, flags] {
    flags->options.kind = flags->tokenizer == "byte"   ? dropk::Tokenizer::BYTE
                          : flags->tokenizer == "gpt2" ? dropk::Tokenizer::GPT2_BPE
                                                       : dropk::Tokenizer::CHAR;
    action = [flags] { return RunPrepare(flags->options); };
  });
}

// CLI11 reports a word that names no subcommand ("dropk bogus", "dropk ckpt
// chek") as "A subcommand is required", which hides the typo. Returns a
// message naming the word and the choices, or "" when the words before the
// first flag all name subcommands.
std::string UnknownSubcommandMessage(const CLI::App& app, int argc, char** argv) {
  const CLI::App* current = &app;
  std::string command = "dropk";
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return "";
    const std::vector<const CLI::App*> subcommands =
        current->get_subcommands(std::function<bool(const CLI::App*)>());
    if (subcommands.empty()) return "";  // a leaf command: the word is its argument
    const CLI::App* next = nullptr;
    std::vector<std::string> names;
    for (const CLI::App* subcommand : subcommands) {
      names.push_back(subcommand->get_name());
      if (subcommand->check_name(word)) next = subcommand;
    }
    if (next == nullptr) {
      return absl::StrCat("'", word, "' is not a ", command, " subcommand; one of ",
                          absl::StrJoin(names, ", "));
    }
    absl::StrAppend(&command, " ", word);
    current = next;
  }
  return "";
}

int Main(int argc, char** argv) {
  CLI::App app{"dropk: data preparation, checkpoints, sampling, studies, plots and launching",
               "dropk"};
  app.require_subcommand(1);
  app.set_version_flag("--version", dropk::VersionLine("dropk"));
  Action action;
  RegisterDataCommand(app, action);
  dropk::RegisterCkptCommand(app, action);
  dropk::RegisterSampleCommand(app, action);
  dropk::RegisterStudyCommand(app, action);
  dropk::RegisterPlotCommand(app, action);
  dropk::RegisterLaunchCommand(app, action);
  // CLI11 would take the flag after one given without its value as the value.
  if (const std::string missing = dropk::FlagMissingItsValue(
          app, std::vector<std::string>(argv + std::min(argc, 1), argv + argc));
      !missing.empty()) {
    std::cerr << "dropk: " << dropk::ErrorTextForTerminal(missing) << "\n";
    return dropk::kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string message = UnknownSubcommandMessage(app, argc, argv);
    if (message.empty()) message = dropk::UnknownFlagAfterParse(app);
    if (message.empty()) message = dropk::DescribeParseError(e.what());
    std::cerr << "dropk: " << dropk::ErrorTextForTerminal(message)
              << " (run with --help for usage)\n";
    return dropk::kExitUsage;
  }
  if (const absl::Status status = action(); !status.ok()) {
    std::cerr << "dropk: " << dropk::ErrorTextForTerminal(status.message()) << "\n";
    return dropk::ExitCodeFor(status);
  }
  return dropk::kExitOk;
}

}  // namespace

// The last resort for an allocation that fails: one clear line and exit 1,
// never an abort.
int main(int argc, char** argv) {
  return dropk::RunMainGuardingAllocation("dropk", "", Main, argc, argv);
}
