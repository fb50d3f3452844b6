// Reading a training run's metrics.jsonl (trainer/metrics.h writes it) back
// into rows, for plots and studies.
#ifndef DROPK_TOOLS_STUDY_RUN_METRICS_H_
#define DROPK_TOOLS_STUDY_RUN_METRICS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dropk {

// One line of metrics.jsonl. Evaluation losses are present only on
// evaluation steps; train_loss only on logged steps.
struct RunMetricsRow {
  int64_t step = 0;
  std::optional<double> train_loss;
  std::optional<double> eval_train_loss;
  std::optional<double> val_loss;
  std::optional<double> lr;
  std::optional<double> tokens_per_s;
};

// Reads every row of `path` in file order. A line that is not a JSON object
// with an integer "step" is an InvalidArgument naming the path and line
// number (a torn last line, from a run killed mid-write, is skipped). An
// empty file is InvalidArgument too: there is nothing to plot.
absl::StatusOr<std::vector<RunMetricsRow>> ReadRunMetrics(const std::string& path);

// What one run's evaluation curve shows: the lowest val loss and its step,
// and the last evaluation's train and val losses (gap = val - train).
struct EvalSummary {
  int64_t best_val_step = 0;
  double best_val_loss = 0;
  int64_t final_step = 0;
  double final_train_loss = 0;
  double final_val_loss = 0;
  double final_gap() const { return final_val_loss - final_train_loss; }
};

// Summarises rows that carry both eval_train_loss and val_loss. NotFound when
// no row has both (the run never evaluated).
absl::StatusOr<EvalSummary> SummarizeEvaluations(const std::vector<RunMetricsRow>& rows);

}  // namespace dropk

#endif  // DROPK_TOOLS_STUDY_RUN_METRICS_H_
