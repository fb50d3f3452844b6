// `dropk study dropout`: the same small model trained at several dropout
// rates on a corpus small enough to overfit, to show what dropout does (a
// training-time regulariser: it narrows the gap between train and val loss).
#ifndef DROPK_TOOLS_STUDY_DROPOUT_STUDY_H_
#define DROPK_TOOLS_STUDY_DROPOUT_STUDY_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "tools/study/run_metrics.h"

namespace dropk {

struct DropoutStudyOptions {
  std::string corpus_path;  // UTF-8 text; its first `chars` bytes are used
  std::string out_dir;      // data/, dropout-0.10/ (one run each), the plot and tables
  size_t chars = 30000;
  std::vector<float> rates = {0.0f, 0.1f, 0.2f, 0.3f};
  std::string config_path;             // optional TrainConfig textproto over the study's defaults
  std::vector<std::string> overrides;  // "--name=value" applied last, as dropk-train's flags
};

// One rate's outcome.
struct DropoutStudyRow {
  float rate = 0;
  EvalSummary summary;
};

// Prepares the corpus (char tokenizer, last 10% for val), trains one run per
// rate on `comm` (every rank must call this with the same options; batches
// are per rank, as in dropk-train), and on rank 0 writes
// out_dir/dropout_study.{csv,png,gp} (eval train and val loss per step per
// rate) and out_dir/dropout_summary.{csv,md}. Progress goes to `log` (rank
// 0). The same options and thread count give the same numbers. Errors name
// the corpus, the config field or the run at fault.
absl::StatusOr<std::vector<DropoutStudyRow>> RunDropoutStudy(const DropoutStudyOptions& options,
                                                             Communicator& comm, std::ostream& log);

// The summary as a Markdown table (rate, best val loss and its step, final
// train and val loss, final gap).
std::string DropoutSummaryMarkdown(const std::vector<DropoutStudyRow>& rows);

}  // namespace dropk

#endif  // DROPK_TOOLS_STUDY_DROPOUT_STUDY_H_
