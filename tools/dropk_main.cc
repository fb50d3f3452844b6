// dropk: the tool CLI (data, ckpt, sample, launch). Each command group registers its subcommands on the app
// through one Register*Command function; the chosen subcommand's callback
// stores the work to do in `action`, which main runs after parsing.
//
// Exit codes: 0 success (and --help), 1 a checkpoint failed verification
// (DataLoss), 2 bad usage or any other failed command; the reason is one
// line on stderr starting "dropk: ".
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/ckpt_command.h"
#include "tools/launch_command.h"
#include "tools/sample_command.h"
#include "trainer/prepare_data.h"

namespace {

constexpr int kExitFailure = 2;

// The work of the subcommand the user chose; empty until one parses.
using Action = std::function<absl::Status()>;

absl::Status RunPrepare(const dropk::PrepareOptions& options) {
  absl::StatusOr<dropk::PrepareSummary> summary = dropk::PrepareData(options);
  if (!summary.ok()) return summary.status();
  std::cout << "prepared " << options.input_path << ": "
            << dropk::Tokenizer::Kind_Name(options.kind) << " vocab " << summary->vocab_size
            << ", train " << summary->train_tokens << " tokens, val " << summary->val_tokens
            << " tokens -> " << options.out_dir << "\n";
  return absl::OkStatus();
}

// `dropk data prepare --tokenizer char|byte --out DIR [--val-fraction F] INPUT`
void RegisterDataCommand(CLI::App& app, Action& action) {
  CLI::App* data = app.add_subcommand("data", "Prepare training data");
  data->require_subcommand(1);
  CLI::App* prepare = data->add_subcommand(
      "prepare", "Tokenize a text file into train.bin, val.bin and tokenizer.pb");
  // Flags outlive this function: the callbacks read them after parsing.
  struct Flags {
    std::string tokenizer;
    dropk::PrepareOptions options;
  };
  auto flags = std::make_shared<Flags>();
  prepare->add_option("--tokenizer", flags->tokenizer, "Tokenizer: char or byte")
      ->required()
      ->check(CLI::IsMember({"char", "byte"}));
  prepare->add_option("--out", flags->options.out_dir, "Output directory (created if missing)")
      ->required();
  prepare->add_option("--val-fraction", flags->options.val_fraction,
                      "Fraction of tokens, taken from the end, for val.bin (0 < F < 1)")
      ->capture_default_str();
  prepare->add_option("input", flags->options.input_path, "Input text file")->required();
  prepare->callback([&action, flags] {
    flags->options.kind =
        flags->tokenizer == "byte" ? dropk::Tokenizer::BYTE : dropk::Tokenizer::CHAR;
    action = [flags] { return RunPrepare(flags->options); };
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dropk: data preparation, checkpoint and sampling tools", "dropk"};
  app.require_subcommand(1);
  Action action;
  RegisterDataCommand(app, action);
  dropk::RegisterCkptCommand(app, action);
  dropk::RegisterSampleCommand(app, action);
  dropk::RegisterLaunchCommand(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "dropk: " << e.what() << " (run with --help for usage)\n";
    return kExitFailure;
  }
  if (const absl::Status status = action(); !status.ok()) {
    std::cerr << "dropk: " << status.message() << "\n";
    return absl::IsDataLoss(status) ? 1 : kExitFailure;
  }
  return 0;
}
