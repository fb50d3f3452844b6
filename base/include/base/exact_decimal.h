// Comparing a decimal number as typed with a double, exactly. A parse
// rounds: 0.99999999999999999999 reads as 1.0 even as a double, so a check
// on the parsed value cannot tell that the user typed a number below 1.
#ifndef DROPK_BASE_EXACT_DECIMAL_H_
#define DROPK_BASE_EXACT_DECIMAL_H_

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dropk {

// A decimal number as sign x 0.digits x 10^point: digits without leading or
// trailing zeros, empty for zero.
struct DecimalDigits {
  bool negative = false;
  std::string digits;
  int64_t point = 0;
};

// `text` ("-0.5", "1e-3", " 7 ": an optional sign, digits with an optional
// point, an optional exponent) as DecimalDigits; nullopt for anything else
// (hexadecimal, inf, nan, words, an empty text).
inline std::optional<DecimalDigits> ReadDecimalDigits(std::string_view text) {
  const auto space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  while (!text.empty() && space(text.front())) text.remove_prefix(1);
  while (!text.empty() && space(text.back())) text.remove_suffix(1);
  DecimalDigits d;
  size_t i = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) d.negative = text[i++] == '-';
  int64_t integer_digits = 0;
  bool seen_digit = false, seen_point = false;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '.' && !seen_point) {
      seen_point = true;
    } else if (c >= '0' && c <= '9') {
      seen_digit = true;
      if (d.digits.empty() && c == '0') {
        if (seen_point) --integer_digits;  // 0.001: the point moves left
        continue;
      }
      d.digits += c;
      if (!seen_point) ++integer_digits;
    } else {
      break;
    }
  }
  if (!seen_digit) return std::nullopt;
  int64_t exponent = 0;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool negative_exponent = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) negative_exponent = text[i++] == '-';
    if (i == text.size()) return std::nullopt;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      // Saturates: past 10^(10^9) every double compares the same way.
      exponent = std::min<int64_t>(exponent * 10 + (text[i] - '0'), 1'000'000'000);
    }
    if (negative_exponent) exponent = -exponent;
  }
  if (i != text.size()) return std::nullopt;
  while (!d.digits.empty() && d.digits.back() == '0') d.digits.pop_back();
  d.point = d.digits.empty() ? 0 : integer_digits + exponent;
  if (d.digits.empty()) d.negative = false;
  return d;
}

// -1, 0 or 1 as the number a is below, equal to or above b.
inline int CompareDecimalDigits(const DecimalDigits& a, const DecimalDigits& b) {
  const int sign_a = a.digits.empty() ? 0 : (a.negative ? -1 : 1);
  const int sign_b = b.digits.empty() ? 0 : (b.negative ? -1 : 1);
  if (sign_a != sign_b) return sign_a < sign_b ? -1 : 1;
  if (sign_a == 0) return 0;
  int magnitude = 0;  // of |a| against |b|
  if (a.point != b.point) {
    magnitude = a.point < b.point ? -1 : 1;
  } else {
    const int c = a.digits.compare(b.digits);  // a prefix is the smaller
    magnitude = c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  return sign_a * magnitude;
}

// How the number the plain decimal `text` spells compares with `value`,
// exactly, with no rounding on either side: -1 below, 0 equal, 1 above.
// nullopt when `text` is not such a number (ReadDecimalDigits) or `value`
// is not finite. 0.99999999999999999999 is 1 as a double, yet below 1 here.
inline std::optional<int> CompareDecimalExactly(std::string_view text, double value) {
  if (!std::isfinite(value)) return std::nullopt;
  const std::optional<DecimalDigits> typed = ReadDecimalDigits(text);
  if (!typed.has_value()) return std::nullopt;
  // A double's exact decimal form has at most 767 significant digits.
  char buffer[800];
  const std::to_chars_result end =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific, 770);
  const std::optional<DecimalDigits> exact =
      ReadDecimalDigits(std::string_view(buffer, end.ptr - buffer));
  if (end.ec != std::errc() || !exact.has_value()) return std::nullopt;
  return CompareDecimalDigits(*typed, *exact);
}

}  // namespace dropk

#endif  // DROPK_BASE_EXACT_DECIMAL_H_
