#include "tools/study/run_metrics.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

std::optional<double> NumberField(const nlohmann::json& j, const char* name) {
  if (!j.contains(name) || !j[name].is_number()) return std::nullopt;
  return j[name].get<double>();
}

}  // namespace

absl::StatusOr<std::vector<RunMetricsRow>> ReadRunMetrics(const std::string& path) {
  // A FIFO blocked the open; /dev/zero was read until memory ran out.
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics file ", path, ": not a regular file"));
  }
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open metrics file ", path));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::vector<RunMetricsRow> rows;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    const bool valid = j.is_object() && j.contains("step") && j["step"].is_number_integer();
    if (!valid) {
      // The trainer flushes whole lines, so only the last can be torn (a run
      // killed mid-write); anything else is not a metrics file. Nor is a
      // file whose one line is no row: it read "no metrics rows".
      if (i + 1 == lines.size() && !rows.empty()) break;
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", i + 1,
                       ": not a metrics row (a JSON object with an integer "
                       "\"step\")"));
    }
    RunMetricsRow row;
    row.step = j["step"].get<int64_t>();
    row.train_loss = NumberField(j, "train_loss");
    row.eval_train_loss = NumberField(j, "eval_train_loss");
    row.val_loss = NumberField(j, "val_loss");
    row.lr = NumberField(j, "lr");
    row.tokens_per_s = NumberField(j, "tokens_per_s");
    rows.push_back(row);
  }
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no metrics rows"));
  return rows;
}

absl::StatusOr<EvalSummary> SummarizeEvaluations(const std::vector<RunMetricsRow>& rows) {
  std::optional<EvalSummary> summary;
  for (const RunMetricsRow& row : rows) {
    if (!row.eval_train_loss || !row.val_loss) continue;
    if (!summary) {
      summary = EvalSummary{row.step, *row.val_loss, 0, 0, 0};
    } else if (*row.val_loss < summary->best_val_loss) {
      summary->best_val_step = row.step;
      summary->best_val_loss = *row.val_loss;
    }
    summary->final_step = row.step;
    summary->final_train_loss = *row.eval_train_loss;
    summary->final_val_loss = *row.val_loss;
  }
  if (!summary) return absl::NotFoundError("the run has no evaluation rows (eval_interval)");
  return *summary;
}

}  // namespace dropk
