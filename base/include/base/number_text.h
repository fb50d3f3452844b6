// Reading a real number a user typed so that an error can quote it as typed.
// A float or double parse rounds what its type cannot hold, 1e-50 to 0 and
// 1e400 to inf, and a message naming the parsed value ("learning_rate=0",
// "--temperature inf") names a number the user never wrote.
#ifndef DROPK_BASE_NUMBER_TEXT_H_
#define DROPK_BASE_NUMBER_TEXT_H_

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/exact_decimal.h"

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

// How a number's text reads as a Real.
enum class RealText {
  kFinite,      // a finite number the type holds (0 only when the text is zero)
  kNotANumber,  // not a number at all ("abc", "")
  kNotFinite,   // inf or nan, or past the type's range (1e400; 1e39 for a float)
  kUnderflow,   // a nonzero number below the type's range, read as 0 (1e-50)
};

// Reads `text` (absl's SimpleAtof or SimpleAtod: surrounding whitespace,
// hexadecimal, inf and nan accepted) into *value and says how it reads.
// The one parse behind dropk sample's, dropk-train's float flags and
// dropk study's float lists, which word each case their own way.
template <typename Real>
RealText ReadRealText(const std::string& text, Real* value) {
  static_assert(std::is_floating_point_v<Real>);
  *value = 0;
  bool ok;
  if constexpr (std::is_same_v<Real, float>) {
    ok = absl::SimpleAtof(text, value);
  } else {
    ok = absl::SimpleAtod(text, value);
  }
  if (!ok) return RealText::kNotANumber;
  if (!std::isfinite(*value)) return RealText::kNotFinite;
  if (*value == 0 && SpellsNonZero(text)) return RealText::kUnderflow;
  return RealText::kFinite;
}

// The float `value` as the shortest text that reads back as it: "1" for
// 1.0f, "100.1" for 100.1f, "1048576" (absl::StrCat's six digits write
// 1.04858e+06, a number the float is not).
inline std::string ShortestFloatText(float value) {
  char buffer[32];
  const std::to_chars_result end = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, end.ptr);
}

// The same for a double: "0.1", "1e-320" (absl::StrCat writes
// 9.99989e-321, and 0.12345678 as 0.123457).
inline std::string ShortestDoubleText(double value) {
  char buffer[32];
  const std::to_chars_result end = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, end.ptr);
}

// " (1 as a float)" when the float `value` that `text` was read as differs
// from the number `text` spells and shows as another text: 0.99999999 is 1
// as a float. "" otherwise: 100.1 shows as itself, so a message names the
// float only when rounding changed what the user would see.
inline std::string AsFloatNote(const std::string& text, float value) {
  // Exactly, not as a double: 0.99999999999999999999 is 1 as one too.
  double typed = 0;
  if (!absl::SimpleAtod(text, &typed)) return "";
  const std::optional<int> order = CompareDecimalExactly(text, value);
  if (order.has_value() ? *order == 0 : typed == value) return "";
  const std::string shown = ShortestFloatText(value);
  if (shown == absl::StripAsciiWhitespace(text)) return "";
  return absl::StrCat(" (", shown, " as a float)");
}

}  // namespace dropk

#endif  // DROPK_BASE_NUMBER_TEXT_H_
