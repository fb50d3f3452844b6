// Rendering plots with gnuplot (Debian's gnuplot-nox, installed by
// tools/setup.sh): dropk writes each plot's data as CSV and a gnuplot script
// beside the PNG, so every figure can be re-rendered or re-analysed.
#ifndef DROPK_TOOLS_STUDY_GNUPLOT_H_
#define DROPK_TOOLS_STUDY_GNUPLOT_H_

#include <string>

#include "absl/status/status.h"

namespace dropk {

// Writes `script` to script_path and runs `gnuplot script_path` (blocking).
// The script must set its own terminal and output. FailedPrecondition when
// gnuplot is not installed; Internal with the last line of gnuplot's
// messages (its reason) when it fails; the error names the script.
absl::Status RunGnuplot(const std::string& script_path, const std::string& script);

// `text` quoted for a gnuplot string literal (single quotes doubled).
std::string GnuplotQuote(const std::string& text);

}  // namespace dropk

#endif  // DROPK_TOOLS_STUDY_GNUPLOT_H_
