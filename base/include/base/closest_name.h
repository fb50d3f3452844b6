// Which known name an unknown one was likely meant as, for "did you mean"
// in errors about flags and request fields.
#ifndef DROPK_BASE_CLOSEST_NAME_H_
#define DROPK_BASE_CLOSEST_NAME_H_

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

namespace dropk {

// The name of `known` that `given` most likely meant, or "" when none is
// close: the same but for '-' against '_' or case (--max-iters for
// --max_iters), else the nearest by edit distance (one insertion, deletion,
// substitution or swap of neighbours each), within a third of the name's
// length (leading dashes aside) and at most 3. Ties go to the first in
// `known`. For flags ("--max_iters") and request fields ("max_tokens").
// Hand-written: a dozen lines, and no Debian library offers it.
inline std::string ClosestName(const std::string& given, const std::vector<std::string>& known) {
  const auto normal = [](std::string name) {
    for (char& c : name) {
      c = c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return name;
  };
  const auto distance = [](const std::string& a, const std::string& b) {
    // d[i][j]: edits from a's first i characters to b's first j.
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      for (size_t j = 1; j <= b.size(); ++j) {
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                            d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
      }
    }
    return d[a.size()][b.size()];
  };
  const std::string wanted = normal(given);
  const size_t dashes = std::min({wanted.find_first_not_of('_'), size_t{2}, wanted.size()});
  const size_t name_length = wanted.size() - dashes;
  const size_t limit = std::min<size_t>(3, name_length / 3);
  std::string best;
  size_t best_distance = limit + 1;
  for (const std::string& name : known) {
    // Lengths further apart than the limit are further apart in edits too
    // (and a long name from a request costs nothing).
    const size_t gap = wanted.size() > name.size() ? wanted.size() - name.size()
                                                   : name.size() - wanted.size();
    if (gap > limit) continue;
    const size_t d = distance(wanted, normal(name));
    if (d < best_distance) {
      best = name;
      best_distance = d;
    }
  }
  return best;
}

}  // namespace dropk

#endif  // DROPK_BASE_CLOSEST_NAME_H_
