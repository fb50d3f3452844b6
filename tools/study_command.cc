#include "tools/study_command.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/cli_flag_values.h"
#include "base/number_text.h"
#include "comm/communicator.h"
#include "comm/mpi_communicator.h"
#include "tools/study/dropout_study.h"
#include "tools/study/plot_run.h"
#include "tools/study/topk_study.h"

namespace dropk {
namespace {

absl::Status RunDropout(const DropoutStudyOptions& options) {
  // Under mpirun the runs are data-parallel over the job's ranks.
  std::unique_ptr<Communicator> comm;
  if (LaunchedByMpi()) {
    absl::StatusOr<std::unique_ptr<Communicator>> mpi = MakeMpiCommunicator();
    if (!mpi.ok()) return mpi.status();
    comm = *std::move(mpi);
  } else {
    comm = MakeSingleProcessCommunicator();
  }
  absl::StatusOr<std::vector<DropoutStudyRow>> rows = RunDropoutStudy(options, *comm, std::cerr);
  if (!rows.ok()) return rows.status();
  if (comm->Rank() == 0) {
    std::cout << DropoutSummaryMarkdown(*rows) << "\nplot: "
              << (std::filesystem::path(options.out_dir) / "dropout_study.png").string()
              << "\ndata: "
              << (std::filesystem::path(options.out_dir) / "dropout_study.csv").string() << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunTopK(const TopKStudyOptions& options) {
  absl::StatusOr<TopKStudyResult> result = RunTopKStudy(options, std::cerr);
  if (!result.ok()) return result.status();
  std::cout << result->checkpoint_id << "\n\n"
            << TopKSummaryMarkdown(result->rows, result->vocab_size)
            << "\nplot: " << (std::filesystem::path(options.out_dir) / "topk_study.png").string()
            << "\ndata: " << (std::filesystem::path(options.out_dir) / "topk_study.csv").string()
            << "\n";
  return absl::OkStatus();
}

// Checks each value of a list of floats as typed, before CLI11 reads it
// into a float: read first, 1e-50 was refused as "0 is outside (0, 100]"
// and 0.99999999 as "1 is outside [0, 1)", numbers the user never wrote.
// `in_range` takes the float the study will use; `range` words it.
CLI::Validator FloatAsTyped(bool (*in_range)(float), const std::string& range) {
  return CLI::Validator(
      [in_range, range](const std::string& text) -> std::string {
        float value = 0;
        const RealText read = ReadRealText(text, &value);
        if (read == RealText::kNotANumber || std::isnan(value)) return text + " is not a number";
        if (read == RealText::kUnderflow) return UnderflowProblem(text, value);
        if (in_range(value)) return "";
        // The float is named only when rounding changed the number shown:
        // 0.99999999 is 1 as a float, while 100.1 prints as itself.
        return absl::StrCat(text, AsFloatNote(text, value), " is outside ", range);
      },
      "FLOAT");
}

void RegisterDropoutStudy(CLI::App& study, std::function<absl::Status()>& action) {
  CLI::App* cmd = study.add_subcommand(
      "dropout",
      "Train one small model at several dropout rates on a corpus small enough to "
      "overfit; plot train and val loss per rate");
  auto options = std::make_shared<DropoutStudyOptions>();
  options->corpus_path = "data/tinyshakespeare.txt";
  cmd->add_option("--out", options->out_dir, "Output directory")->required();
  cmd->add_option("--corpus", options->corpus_path, "UTF-8 text file")->capture_default_str();
  cmd->add_option("--chars", options->chars, "Use the first this many bytes of the corpus")
      ->capture_default_str()
      ->check(IntegerFlagRange(size_t{1000}, size_t{1} << 40));
  cmd->add_option("--rates", options->rates, "Dropout rates, comma-separated")
      ->delimiter(',')
      ->check(FloatAsTyped([](float r) { return r >= 0.0f && r < 1.0f; }, "[0, 1)"))
      ->capture_default_str();
  cmd->add_option("--config", options->config_path,
                  "TrainConfig textproto applied over the study's defaults");
  cmd->add_option("--set", options->overrides,
                  "A dropk-train field override, --set=--max_iters=500 (repeatable)");
  cmd->callback([&action, options] { action = [options] { return RunDropout(*options); }; });
}

void RegisterTopKStudy(CLI::App& study, std::function<absl::Status()>& action) {
  CLI::App* cmd = study.add_subcommand(
      "topk",
      "Sample many completions per prompt at several top-k and temperatures; plot "
      "diversity and the model's likelihood of the samples against k");
  auto options = std::make_shared<TopKStudyOptions>();
  cmd->add_option("--checkpoint", options->checkpoint,
                  "A checkpoint directory, or a run's checkpoints directory (LATEST's "
                  "checkpoint, else the newest that verifies)")
      ->required();
  cmd->add_option("--out", options->out_dir, "Output directory")->required();
  cmd->add_option("--prompt", options->prompts, "Prompt (repeatable)")->capture_default_str();
  // The bounds RunTopK checks, said here as the other commands' ranges are.
  cmd->add_option("--samples", options->samples,
                  absl::StrCat("Completions per prompt and setting, in [2, ", kMaxTopKStudySamples,
                               "] (the overlap compares pairs)"))
      ->capture_default_str();
  cmd->add_option("--max-tokens", options->max_tokens,
                  absl::StrCat("Tokens per completion, in [1, ", kMaxTopKStudyTokens, "]"))
      ->capture_default_str();
  cmd->add_option("--seed", options->seed, "Seed of the first sample (then seed+1, ...)")
      ->check(IntegerFlagRange(uint64_t{0}, std::numeric_limits<uint64_t>::max()))
      ->capture_default_str();
  cmd->add_option("--ks", options->ks, "Top-k values, comma-separated; 0 = whole vocabulary")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--temperatures", options->temperatures, "Temperatures, comma-separated")
      ->delimiter(',')
      ->check(FloatAsTyped([](float t) { return t > 0.0f && t <= 100.0f; }, "(0, 100]"))
      ->capture_default_str();
  cmd->add_option("--threads", options->num_threads,
                  absl::StrCat("Host threads, in [0, ", kMaxTopKStudyThreads, "] (0 = all cores)"))
      ->capture_default_str();
  cmd->callback([&action, options] { action = [options] { return RunTopK(*options); }; });
}

}  // namespace

void RegisterStudyCommand(CLI::App& app, std::function<absl::Status()>& action) {
  CLI::App* study = app.add_subcommand("study", "Studies that show what dropout and top-k do");
  study->require_subcommand(1);
  RegisterDropoutStudy(*study, action);
  RegisterTopKStudy(*study, action);
}

void RegisterPlotCommand(CLI::App& app, std::function<absl::Status()>& action) {
  CLI::App* cmd =
      app.add_subcommand("plot", "Plot a run's loss, learning rate and tokens/s as PNG");
  struct Flags {
    std::string run_dir, out_dir;
  };
  auto flags = std::make_shared<Flags>();
  cmd->add_option("run_dir", flags->run_dir, "Run directory (holds metrics.jsonl)")->required();
  cmd->add_option("--out", flags->out_dir, "Output directory (default RUN_DIR/plots)");
  cmd->callback([&action, flags] {
    action = [flags]() -> absl::Status {
      const std::string out = flags->out_dir.empty()
                                  ? (std::filesystem::path(flags->run_dir) / "plots").string()
                                  : flags->out_dir;
      absl::StatusOr<std::vector<std::string>> pngs = PlotRun(flags->run_dir, out);
      if (!pngs.ok()) return pngs.status();
      for (const std::string& png : *pngs) std::cout << png << "\n";
      return absl::OkStatus();
    };
  });
}

}  // namespace dropk
