// Reading a real number a user typed so that an error can quote it as typed.
// A float or double parse rounds what its type cannot hold, 1e-50 to 0 and
// 1e400 to inf, and a message naming the parsed value ("learning_rate=0",
// "--temperature inf") names a number the user never wrote.
#ifndef DROPK_BASE_NUMBER_TEXT_H_
#define DROPK_BASE_NUMBER_TEXT_H_

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dropk {

// True when the decimal or hexadecimal number `text` spells is not zero: it
// has a nonzero digit before its exponent. A parse that gives 0 for such a
// text underflowed.
inline bool SpellsNonZero(const std::string& text) {
  const std::string lower = absl::AsciiStrToLower(text);
  const size_t x = lower.find("0x");
  const bool hex = x != std::string::npos;
  for (size_t i = hex ? x + 2 : 0; i < lower.size(); ++i) {
    const char c = lower[i];
    if (c == (hex ? 'p' : 'e')) break;
    if ((c >= '1' && c <= '9') || (hex && c >= 'a' && c <= 'f')) return true;
  }
  return false;
}

// Why the number spelled `text` does not survive as the Real `value` it was
// read as, or "" when it does: a nonzero number below the type's range read
// as 0 ("1e-50 is too small for a float: it would be read as 0 (...)").
template <typename Real>
std::string UnderflowProblem(const std::string& text, Real value) {
  static_assert(std::is_floating_point_v<Real>);
  if (value != 0 || !SpellsNonZero(text)) return "";
  return absl::StrCat(text, " is too small for a ",
                      std::is_same_v<Real, float> ? "float" : "double",
                      ": it would be read as 0 (the smallest nonzero magnitude is ",
                      std::numeric_limits<Real>::denorm_min(), "); write 0 for zero");
}

// `text`, the value of `what` (a flag, "--top-p"), as a finite double.
// InvalidArgument quoting the text as typed when it is not a number
// ("--top-p abc: not a number"), past double's range or not finite
// ("--temperature 1e400: must be a finite number, magnitude at most
// 1.79769e+308"), or a nonzero number below it (UnderflowProblem).
inline absl::StatusOr<double> ParseFiniteDouble(const std::string& what, const std::string& text) {
  double value = 0;
  if (!absl::SimpleAtod(text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", text, ": not a number"));
  }
  if (!std::isfinite(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", text, ": must be a finite number, magnitude at most ",
                     std::numeric_limits<double>::max()));
  }
  const std::string stripped(absl::StripAsciiWhitespace(text));
  if (std::string why = UnderflowProblem(stripped, value); !why.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", why));
  }
  return value;
}

}  // namespace dropk

#endif  // DROPK_BASE_NUMBER_TEXT_H_
