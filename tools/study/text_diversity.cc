#include "tools/study/text_diversity.h"

#include <set>
#include <utility>

#include "absl/strings/str_join.h"

namespace dropk {
namespace {

std::vector<std::string> WordNGrams(const std::string& text, int n) {
  const std::vector<std::string> words = SplitWords(text);
  std::vector<std::string> grams;
  for (size_t i = 0; n > 0 && i + n <= words.size(); ++i) {
    // A separator that cannot occur inside a word.
    grams.push_back(absl::StrJoin(words.begin() + i, words.begin() + i + n, "\x1f"));
  }
  return grams;
}

}  // namespace

std::vector<std::string> SplitWords(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

double DistinctN(const std::vector<std::string>& samples, int n) {
  std::set<std::string> distinct;
  size_t total = 0;
  for (const std::string& sample : samples) {
    for (std::string& gram : WordNGrams(sample, n)) {
      distinct.insert(std::move(gram));
      ++total;
    }
  }
  return total == 0 ? 0.0 : static_cast<double>(distinct.size()) / total;
}

double MeanPairwiseBigramOverlap(const std::vector<std::string>& samples) {
  std::vector<std::set<std::string>> sets;
  for (const std::string& sample : samples) {
    std::vector<std::string> grams = WordNGrams(sample, 2);
    sets.emplace_back(grams.begin(), grams.end());
  }
  double sum = 0;
  size_t pairs = 0;
  for (size_t a = 0; a < sets.size(); ++a) {
    for (size_t b = a + 1; b < sets.size(); ++b, ++pairs) {
      size_t common = 0;
      for (const std::string& g : sets[a]) common += sets[b].count(g);
      const size_t unioned = sets[a].size() + sets[b].size() - common;
      if (unioned > 0) sum += static_cast<double>(common) / unioned;
    }
  }
  return pairs == 0 ? 0.0 : sum / pairs;
}

}  // namespace dropk
