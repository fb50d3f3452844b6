#include "tools/study/dropout_study.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/path_status.h"
#include "tools/study/gnuplot.h"
#include "trainer/config.h"
#include "trainer/prepare_data.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

// nanoGPT's CPU recipe shape (about 0.8M parameters) trained long on little
// data: 27k training characters seen ~28 times in 1000 steps, evaluated every
// 50 steps, so that without dropout val loss turns up while train loss keeps
// falling. (On 90k characters the same model was still improving its val
// loss after 1500 steps: no overfitting to show.)
const std::vector<std::pair<std::string, std::string>> kStudyDefaults = {
    {"n_layer", "4"},           {"n_head", "4"},        {"n_embd", "128"},
    {"block_size", "64"},       {"batch_size", "12"},   {"max_iters", "1000"},
    {"learning_rate", "1e-3"},  {"min_lr", "1e-4"},     {"warmup_iters", "100"},
    {"lr_decay_iters", "1000"}, {"beta2", "0.99"},      {"eval_interval", "50"},
    {"eval_iters", "20"},       {"log_interval", "50"}, {"sample_tokens", "0"},
    {"save_every", "0"},        {"keep_last", "1"},
};

std::string RunName(float rate) { return absl::StrFormat("dropout-%.2f", rate); }

// Writes the first `chars` bytes of the corpus (never splitting a UTF-8
// character) to data_dir/corpus.txt and prepares it there.
absl::Status PrepareCorpus(const DropoutStudyOptions& options, const std::string& data_dir) {
  // A FIFO blocked the open; the buffer is sized by the file, not by --chars
  // (up to 1 TiB, allocated up front).
  std::error_code ec;
  const fs::file_status status = fs::status(options.corpus_path, ec);
  if (fs::exists(status) && !fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("corpus ", options.corpus_path, ": not a regular file"));
  }
  std::ifstream in(options.corpus_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open corpus ", options.corpus_path));
  const uint64_t file_bytes = fs::file_size(options.corpus_path, ec);
  std::string text(ec ? options.chars : std::min<uint64_t>(options.chars, file_bytes), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
  if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
  if (text.empty())
    return absl::InvalidArgumentError(absl::StrCat(options.corpus_path, " is empty"));
  fs::create_directories(data_dir, ec);
  if (ec) {
    return DirectoryCreationError(
        absl::StrCat("--out ", options.out_dir, ": cannot create ", data_dir), data_dir, ec);
  }
  const std::string corpus = (fs::path(data_dir) / "corpus.txt").string();
  {
    std::ofstream out(corpus, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", corpus));
  }
  PrepareOptions prepare;
  prepare.kind = Tokenizer::CHAR;
  prepare.inputs = {corpus};
  prepare.out_dir = data_dir;
  // The error named only the copy (data_dir/corpus.txt), a file the user
  // never gave; offsets in it are the corpus's own.
  if (const absl::Status s = PrepareData(prepare).status(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("--corpus ", options.corpus_path, " (its first ",
                                               text.size(), " bytes): ", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainConfig> StudyConfig(const DropoutStudyOptions& options) {
  TrainConfig config = DefaultTrainConfig();
  for (const auto& [name, value] : kStudyDefaults) {
    if (absl::Status s = SetTrainConfigField(name, value, &config); !s.ok()) return s;
  }
  if (!options.config_path.empty()) {
    if (absl::Status s = MergeTrainConfigFile(options.config_path, &config); !s.ok()) return s;
  }
  for (const std::string& flag : options.overrides) {
    const size_t eq = flag.find('=');
    if (flag.rfind("--", 0) != 0 || eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("override ", flag, ": expected --name=value (a dropk-train field)"));
    }
    // Fields the study sets for each run: an override of one was taken
    // and then replaced without a word (dropout, out_dir, data_dir), or
    // held one site at its rate in every run (a site's own dropout).
    const std::string name = flag.substr(2, eq - 2);
    if (name == "dropout" || name == "out_dir" || name == "data_dir") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--set=", flag, ": the study sets ", name, " for each run itself (",
          name == "dropout" ? "from --rates" : "under --out", "); leave it out"));
    }
    if (absl::Status s = SetTrainConfigField(name, flag.substr(eq + 1), &config); !s.ok()) {
      return s;
    }
  }
  for (const auto& [set, site] :
       {std::pair{config.has_dropout_embedding(), "dropout_embedding"},
        {config.has_dropout_attention_probs(), "dropout_attention_probs"},
        {config.has_dropout_attention_output(), "dropout_attention_output"},
        {config.has_dropout_mlp_output(), "dropout_mlp_output"}}) {
    if (set) {
      return absl::InvalidArgumentError(absl::StrCat(
          site, " is set (by --config or --set): it would hold that site at one rate in every "
                "run of a study of the rate; leave it out"));
    }
  }
  return config;
}

absl::Status WriteOutputs(const DropoutStudyOptions& options,
                          const std::vector<DropoutStudyRow>& rows,
                          const std::vector<std::vector<RunMetricsRow>>& curves) {
  const fs::path out(options.out_dir);
  // Wide CSV: one row per evaluation step, train and val columns per rate.
  std::map<int64_t, std::vector<std::string>> table;
  for (size_t r = 0; r < curves.size(); ++r) {
    for (const RunMetricsRow& row : curves[r]) {
      if (!row.eval_train_loss || !row.val_loss) continue;
      auto& cells = table[row.step];
      cells.resize(2 * curves.size(), "NaN");
      cells[2 * r] = absl::StrFormat("%.6f", *row.eval_train_loss);
      cells[2 * r + 1] = absl::StrFormat("%.6f", *row.val_loss);
    }
  }
  const std::string csv = (out / "dropout_study.csv").string();
  {
    std::ofstream f(csv, std::ios::trunc);
    f << "step";
    for (const DropoutStudyRow& row : rows) {
      f << absl::StrFormat(",train_p%.2f,val_p%.2f", row.rate, row.rate);
    }
    f << "\n";
    for (const auto& [step, cells] : table) {
      f << step;
      for (const std::string& c : cells) f << "," << c;
      f << "\n";
    }
    if (!f.flush()) return absl::InternalError(absl::StrCat("cannot write ", csv));
  }
  {
    const std::string path = (out / "dropout_summary.csv").string();
    std::ofstream f(path, std::ios::trunc);
    f << "dropout,best_val_loss,best_val_step,final_train_loss,final_val_loss,final_gap\n";
    for (const DropoutStudyRow& row : rows) {
      const EvalSummary& s = row.summary;
      f << absl::StrFormat("%.2f,%.4f,%d,%.4f,%.4f,%.4f\n", row.rate, s.best_val_loss,
                           s.best_val_step, s.final_train_loss, s.final_val_loss, s.final_gap());
    }
    std::ofstream md((out / "dropout_summary.md").string(), std::ios::trunc);
    md << DropoutSummaryMarkdown(rows);
    if (!f.flush() || !md.flush()) return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  const std::string png = (out / "dropout_study.png").string();
  std::string plot_train = "plot ", plot_val = "plot ";
  const char* colors[] = {"#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b"};
  for (size_t r = 0; r < rows.size(); ++r) {
    const std::string color = colors[r % 6];
    const std::string title = absl::StrFormat("dropout %.2f", rows[r].rate);
    const std::string sep = r + 1 < rows.size() ? ", \\\n  " : "\n";
    absl::StrAppend(&plot_train, GnuplotQuote(csv), " using 1:", 2 + 2 * r,
                    " with lines lw 2 lc rgb '", color, "' title ", GnuplotQuote(title), sep);
    absl::StrAppend(&plot_val, GnuplotQuote(csv), " using 1:", 3 + 2 * r,
                    " with lines lw 2 lc rgb '", color, "' title ", GnuplotQuote(title), sep);
  }
  const std::string script = absl::StrCat(
      "set terminal pngcairo size 1200,480 font 'Sans,10'\n", "set output ", GnuplotQuote(png),
      "\n", "set datafile separator ','\nset datafile missing 'NaN'\n",
      "set grid\nset xlabel 'step'\nset ylabel 'loss (nats/char)'\nset key top right\n",
      "set multiplot layout 1,2 title ",
      GnuplotQuote(absl::StrCat("Dropout study: ", options.chars,
                                " characters of the corpus (train 90%, val 10%)")),
      "\n", "set title 'train loss (held-out train batches)'\n", plot_train,
      "set title 'val loss'\n", plot_val, "unset multiplot\n");
  return RunGnuplot((out / "dropout_study.gp").string(), script);
}

}  // namespace

std::string DropoutSummaryMarkdown(const std::vector<DropoutStudyRow>& rows) {
  std::ostringstream md;
  md << "| dropout | best val loss (step) | final train loss | final val loss | final gap "
        "(val - train) |\n";
  md << "| --- | --- | --- | --- | --- |\n";
  for (const DropoutStudyRow& row : rows) {
    const EvalSummary& s = row.summary;
    md << absl::StrFormat("| %.2f | %.4f (%d) | %.4f | %.4f | %.4f |\n", row.rate, s.best_val_loss,
                          s.best_val_step, s.final_train_loss, s.final_val_loss, s.final_gap());
  }
  return md.str();
}

absl::StatusOr<std::vector<DropoutStudyRow>> RunDropoutStudy(const DropoutStudyOptions& options,
                                                             Communicator& comm,
                                                             std::ostream& log) {
  if (options.rates.empty()) return absl::InvalidArgumentError("--rates: give at least one rate");
  for (float rate : options.rates) {
    if (!(rate >= 0.0f && rate < 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("--rates: ", rate, " is outside [0, 1)"));
    }
  }
  // Each rate trains into its own run directory, named to two decimals:
  // two rates of one name (0,0, or 0.001,0.004) trained the first, then
  // refused the second as a fresh start into the first's checkpoints,
  // telling the user to pass --resume=latest, which the study does not take.
  std::map<std::string, float> rate_of_run;
  for (float rate : options.rates) {
    const auto [it, added] = rate_of_run.emplace(RunName(rate), rate);
    if (!added) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--rates: ", it->second, " and ", rate, " both train into ", it->first,
          " (a run is named by its rate to two decimals); give rates that differ there"));
    }
  }
  absl::StatusOr<TrainConfig> base = StudyConfig(options);
  if (!base.ok()) return base.status();
  const fs::path out(options.out_dir);
  const std::string data_dir = (out / "data").string();
  // Rank 0 prepares the data and clears old runs; the others wait for it.
  absl::Status prepared = absl::OkStatus();
  if (comm.Rank() == 0) {
    prepared = PrepareCorpus(options, data_dir);
    for (float rate : options.rates) {
      std::error_code ec;
      fs::remove_all(out / RunName(rate), ec);
    }
  }
  if (absl::Status s = comm.Barrier()->Wait(); !s.ok()) return s;
  if (!prepared.ok()) return prepared;

  std::vector<DropoutStudyRow> rows;
  std::vector<std::vector<RunMetricsRow>> curves;
  for (float rate : options.rates) {
    TrainConfig config = *base;
    config.set_data_dir(data_dir);
    config.set_out_dir((out / RunName(rate)).string());
    config.set_dropout(rate);
    if (absl::Status s = ValidateTrainConfig(config); !s.ok()) return s;
    if (comm.Rank() == 0) log << "study dropout: training " << RunName(rate) << "\n";
    absl::StatusOr<TrainSummary> trained = RunTraining(config, comm, log);
    if (!trained.ok()) {
      return absl::Status(trained.status().code(),
                          absl::StrCat(RunName(rate), ": ", trained.status().message()));
    }
    if (comm.Rank() != 0) continue;
    absl::StatusOr<std::vector<RunMetricsRow>> metrics =
        ReadRunMetrics((out / RunName(rate) / "metrics.jsonl").string());
    if (!metrics.ok()) return metrics.status();
    absl::StatusOr<EvalSummary> summary = SummarizeEvaluations(*metrics);
    if (!summary.ok()) return summary.status();
    rows.push_back({rate, *summary});
    curves.push_back(*std::move(metrics));
  }
  if (comm.Rank() == 0) {
    if (absl::Status s = WriteOutputs(options, rows, curves); !s.ok()) return s;
  }
  return rows;
}

}  // namespace dropk
