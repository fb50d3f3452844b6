// `dropk plot RUN_DIR`: training curves of one run as PNG.
#ifndef DROPK_TOOLS_STUDY_PLOT_RUN_H_
#define DROPK_TOOLS_STUDY_PLOT_RUN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dropk {

// Reads run_dir/metrics.jsonl and writes, into out_dir (created if missing),
// metrics.csv and loss.png (training loss on logged steps, train and val
// loss on evaluation steps), lr.png and tokens_per_s.png, each beside the
// gnuplot script that drew it; a plot with no values in the log is an empty
// frame saying so. Returns the PNG paths. Errors name the file.
absl::StatusOr<std::vector<std::string>> PlotRun(const std::string& run_dir,
                                                 const std::string& out_dir);

}  // namespace dropk

#endif  // DROPK_TOOLS_STUDY_PLOT_RUN_H_
