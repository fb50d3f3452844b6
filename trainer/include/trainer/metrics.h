// What a training run reports: a progress line on stderr and one JSON object
// per logged step in RUN/metrics.jsonl.
#ifndef DROPK_TRAINER_METRICS_H_
#define DROPK_TRAINER_METRICS_H_

#include <cstdint>
#include <ctime>
#include <fstream>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"

namespace dropk {

// One logged step. Evaluation fields are set only on evaluation steps.
struct MetricsRow {
  int64_t step = 0;
  std::optional<float> train_loss;       // this step's training loss (mean over micro-batches)
  std::optional<float> eval_train_loss;  // held-out batches of the train split
  std::optional<float> val_loss;         // held-out batches of the val split
  float lr = 0;
  double tokens_per_s = 0;
  double elapsed_s = 0;
  double eta_s = 0;
};

// Appends MetricsRow objects as JSON lines to a file; each line is flushed,
// so a crash loses at most the row being written.
class MetricsLog {
 public:
  // Starts a new log at `path` (RUN/metrics.jsonl) for a run from step 0.
  // A non-empty log already there, an earlier run's in the same out_dir,
  // is kept, not truncated: renamed to KeptEarlierLogPath's name, which
  // `log` is told in one line. Error names the path. The caller holds the
  // run directory (RunDirectoryLock), so no other run renames there.
  static absl::StatusOr<MetricsLog> Create(const std::string& path, std::ostream& log);
  // Resuming at `resume_step`: keeps the rows of steps before it (rows the
  // interrupted run wrote after its checkpoint are dropped, as is a torn
  // last line; they will be written again) and appends after them. A log
  // holding whole lines that are not rows is first kept as it was, renamed
  // to KeptEarlierLogPath's name with label "before-resume", which `log` is
  // told in one line; so is a log with rows from `resume_step` on when the
  // run goes back, resuming before `latest_step` (the step LATEST names, -1
  // for none): those rows are another course's, which the resume does not
  // write again.
  static absl::StatusOr<MetricsLog> OpenForResume(const std::string& path, int64_t resume_step,
                                                  int64_t latest_step, std::ostream& log);
  absl::Status Append(const MetricsRow& row);

 private:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}
  std::string path_;
  std::ofstream out_;
};

// Where Create keeps an earlier run's log `path` ("RUN/metrics.jsonl") whose
// last write was at `last_write` (UTC): "RUN/metrics.earlier-run-
// 20261201T001234Z.jsonl" (`label` after "metrics."), with "-2", "-3", ...
// before ".jsonl" while `taken(candidate)` says the name is in use.
std::string KeptEarlierLogPath(const std::string& path, std::time_t last_write,
                               bool (*taken)(const std::string& candidate),
                               const std::string& label = "earlier-run");

// "step 250/2000 | loss 1.9876 | lr 9.51e-04 | 25,310 tok/s | 12.3s elapsed | ETA 1m25s"
// with " | train 1.90 val 2.01" appended on evaluation steps.
std::string ProgressLine(const MetricsRow& row, int64_t max_steps);

// Seconds as "1h02m03s", "2m05s" or "4.2s".
std::string FormatDuration(double seconds);

}  // namespace dropk

#endif  // DROPK_TRAINER_METRICS_H_
