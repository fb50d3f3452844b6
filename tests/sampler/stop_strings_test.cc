// StopStrings: where a growing text first meets a stop string, and how much
// of its end could still begin one, against the definitions checked naively.
#include "sampler/stop_strings.h"

#include <algorithm>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace dropk {
namespace {

// Appends each of `pieces` to a new text; returns the first cut found
// (npos for none) and the held-back length after the last piece appended.
std::pair<size_t, size_t> Follow(const StopStrings& stops, const std::vector<std::string>& pieces) {
  StopStrings::Progress progress;
  for (const std::string& piece : pieces) {
    const size_t cut = stops.Append(piece, &progress);
    if (cut != std::string::npos) return {cut, 0};
  }
  return {std::string::npos, stops.PossibleStopStart(progress)};
}

TEST(StopStringsTest, HoldsBackTheLongestEndThatBeginsAStopString) {
  const StopStrings stops({"aab", "xyz"});
  StopStrings::Progress progress;
  const struct {
    const char* piece;
    size_t held;
  } steps[] = {{"a", 1}, {"a", 2}, {"a", 2}, {"x", 1}, {"y", 2}, {"ca", 1}, {"", 1}};
  for (const auto& step : steps) {
    ASSERT_EQ(stops.Append(step.piece, &progress), std::string::npos) << step.piece;
    EXPECT_EQ(stops.PossibleStopStart(progress), step.held) << "after '" << step.piece << "'";
  }
  EXPECT_EQ(stops.Append("ab", &progress), 6u);  // "aaaxycaab"
}

TEST(StopStringsTest, CutsAtTheEarliestStartOfTheStopStringsAPieceCompletes) {
  // Both complete in one piece: the one that begins first, though it ends last.
  EXPECT_EQ(Follow(StopStrings({"bc", "abcd"}), {"xabcd"}).first, 1u);
  EXPECT_EQ(Follow(StopStrings({"bcd", "abcde"}), {"ab", "cd"}).first, 1u);
  // Across pieces, from a start in an earlier one.
  EXPECT_EQ(Follow(StopStrings({"hello"}), {"oh h", "el", "lo", "!"}).first, 3u);
  EXPECT_EQ(Follow(StopStrings({"hello"}), {"oh h", "el", "p"}),
            std::make_pair(std::string::npos, size_t{0}));
  EXPECT_EQ(Follow(StopStrings(), {"anything"}), std::make_pair(std::string::npos, size_t{0}));
}

// Random texts and stop strings over two letters, so that prefixes overlap
// and fail often: every cut is min(text.find(stop)) at the first piece that
// completes one, and the held-back end is the longest suffix that is a
// proper prefix of a stop string.
TEST(StopStringsTest, AgreesWithTheNaiveDefinitions) {
  std::mt19937 rng(7);
  const auto random_text = [&rng](size_t length) {
    std::string s;
    for (size_t i = 0; i < length; ++i) s += "ab"[rng() % 2];
    return s;
  };
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> stop_list;
    for (size_t i = 0, n = 1 + rng() % 4; i < n; ++i)
      stop_list.push_back(random_text(1 + rng() % 8));
    const StopStrings stops(stop_list);
    StopStrings::Progress progress;
    std::string text;
    for (int piece = 0; piece < 12; ++piece) {
      const std::string added = random_text(rng() % 4);
      text += added;
      size_t expected_cut = std::string::npos;
      for (const std::string& s : stop_list) expected_cut = std::min(expected_cut, text.find(s));
      const size_t cut = stops.Append(added, &progress);
      ASSERT_EQ(cut, expected_cut) << "text '" << text << "', trial " << trial;
      if (cut != std::string::npos) break;
      size_t expected_held = 0;
      for (size_t begin = text.size(); begin-- > 0;) {
        const std::string end = text.substr(begin);
        for (const std::string& s : stop_list) {
          if (end.size() < s.size() && s.starts_with(end)) expected_held = end.size();
        }
      }
      ASSERT_EQ(stops.PossibleStopStart(progress), expected_held)
          << "text '" << text << "', trial " << trial;
    }
  }
}

}  // namespace
}  // namespace dropk
