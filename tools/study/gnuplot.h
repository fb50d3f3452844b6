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

// `text` as a gnuplot string: a single-quoted literal (single quotes
// doubled), or, where `text` holds control characters (a newline in a
// path) or starts with ', a parenthesized expression joining such literals,
// octal escapes and "'" ('a'."\012".'b'), which every string argument
// takes. Whatever `text` holds, the result is one string in one command on
// one line.
std::string GnuplotQuote(const std::string& text);

}  // namespace dropk

#endif  // DROPK_TOOLS_STUDY_GNUPLOT_H_
