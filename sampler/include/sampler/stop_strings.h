// A completion's stop strings, followed through a choice's text as it
// grows one token's piece at a time.
#ifndef DROPK_SAMPLER_STOP_STRINGS_H_
#define DROPK_SAMPLER_STOP_STRINGS_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace dropk {

// Finds the first stop string that a text's new bytes complete, and says how
// many bytes at the text's end could still become the start of one: what a
// stream must hold back, and no more (a stream that held back the longest
// stop string's length less one sent nothing of a 40-token answer while a
// 1000-character stop string was asked for).
//
// Cost: each stop string is matched by Knuth-Morris-Pratt, keeping per text
// the length of the longest suffix that is a prefix of it. A byte appended
// costs amortized O(1) per stop string, whatever their lengths: a token of
// k bytes costs O(stops x k) amortized (O(stops x (k + longest stop)) at
// worst for one token), and PossibleStopStart is O(stops). A scan of every
// suffix against every stop string would be O(stops x longest^2) a token.
// Memory: one size_t per byte of the stop strings, shared by a request's
// choices, and one per stop string per choice.
//
// Immutable once built, so one instance serves many texts (each with its
// own Progress) from any thread.
class StopStrings {
 public:
  // Where one text stands: start with a default-constructed one (no text).
  struct Progress {
    size_t length = 0;  // bytes of text appended so far
    // Per stop string: the length of the longest suffix of the text that is
    // a proper prefix of it.
    std::vector<size_t> matched;
  };

  StopStrings() = default;  // none
  // `stops` must not hold an empty string (the request parser refuses one).
  explicit StopStrings(std::vector<std::string> stops);

  bool empty() const { return stops_.empty(); }

  // Appends `piece` to the text `progress` follows. Returns the byte offset
  // in the text where the first stop string it completes begins: of the
  // occurrences that end in `piece`, the one that begins first (what the
  // earliest text.find of each stop string gives, every occurrence before
  // `piece` having been found when its bytes came); npos when none does.
  // Once it returns an offset the text is to be cut there, and `progress`
  // is spent.
  size_t Append(std::string_view piece, Progress* progress) const;

  // How many bytes at the end of the text could begin a stop string: the
  // longest suffix that is a proper prefix of one (0 with no stop strings).
  // Text before those bytes can never be part of a match.
  size_t PossibleStopStart(const Progress& progress) const;

 private:
  std::vector<std::string> stops_;
  // borders_[i][j]: the longest proper prefix of stops_[i][0..j] that is
  // also its suffix (Knuth-Morris-Pratt's failure function).
  std::vector<std::vector<size_t>> borders_;
};

}  // namespace dropk

#endif  // DROPK_SAMPLER_STOP_STRINGS_H_
