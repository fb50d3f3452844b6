#include "sampler/stop_strings.h"

#include <algorithm>
#include <utility>

#include "base/check.h"

namespace dropk {
namespace {

// Knuth-Morris-Pratt's failure function of `s`: out[j] is the length of the
// longest proper prefix of s[0..j] that is also its suffix. O(|s|).
std::vector<size_t> Borders(const std::string& s) {
  std::vector<size_t> out(s.size(), 0);
  size_t k = 0;
  for (size_t j = 1; j < s.size(); ++j) {
    while (k > 0 && s[j] != s[k]) k = out[k - 1];
    if (s[j] == s[k]) ++k;
    out[j] = k;
  }
  return out;
}

}  // namespace

StopStrings::StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {
  borders_.reserve(stops_.size());
  for (const std::string& s : stops_) {
    DROPK_CHECK(!s.empty()) << "an empty stop string";
    borders_.push_back(Borders(s));
  }
}

size_t StopStrings::Append(std::string_view piece, Progress* progress) const {
  progress->matched.resize(stops_.size(), 0);
  const size_t before = progress->length;
  progress->length += piece.size();
  size_t cut = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const std::string& s = stops_[i];
    const std::vector<size_t>& border = borders_[i];
    size_t k = progress->matched[i];
    for (size_t p = 0; p < piece.size(); ++p) {
      while (k > 0 && piece[p] != s[k]) k = border[k - 1];
      if (piece[p] == s[k]) ++k;
      if (k == s.size()) {  // its first occurrence ends at piece[p]
        cut = std::min(cut, before + p + 1 - s.size());
        break;
      }
    }
    progress->matched[i] = k;
  }
  return cut;
}

size_t StopStrings::PossibleStopStart(const Progress& progress) const {
  size_t longest = 0;
  for (const size_t k : progress.matched) longest = std::max(longest, k);
  return longest;
}

}  // namespace dropk
