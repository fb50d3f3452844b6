// Diversity measures of sampled text, for the top-k study. Text is split into
// words at whitespace (a character-level model's tokens are letters, whose
// n-grams say little about diversity).
#ifndef DROPK_TOOLS_STUDY_TEXT_DIVERSITY_H_
#define DROPK_TOOLS_STUDY_TEXT_DIVERSITY_H_

#include <string>
#include <string_view>
#include <vector>

namespace dropk {

// The whitespace-separated words of text, in order.
std::vector<std::string> SplitWords(std::string_view text);

// distinct-n (Li et al., 2016): distinct word n-grams over all samples
// divided by the total number of word n-grams. 0 when there are none.
double DistinctN(const std::vector<std::string>& samples, int n);

// Mean over all pairs of samples of the Jaccard similarity of their word-
// bigram sets (1: the samples repeat each other, 0: nothing in common).
// 0 for fewer than two samples; a pair with no bigrams at all counts as 0.
double MeanPairwiseBigramOverlap(const std::vector<std::string>& samples);

}  // namespace dropk

#endif  // DROPK_TOOLS_STUDY_TEXT_DIVERSITY_H_
