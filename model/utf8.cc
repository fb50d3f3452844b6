#include "model/utf8.h"

#include <cstdint>

namespace dropk {

size_t CompleteUtf8Prefix(std::string_view text, size_t end) {
  // A character is at most 4 bytes: look back over at most 3 continuation
  // bytes for the lead byte of the last character.
  for (size_t back = 0; back < 4 && back < end; ++back) {
    const auto c = static_cast<uint8_t>(text[end - 1 - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte
    const size_t need = c < 0x80             ? 1
                        : (c & 0xE0) == 0xC0 ? 2
                        : (c & 0xF0) == 0xE0 ? 3
                        : (c & 0xF8) == 0xF0 ? 4
                                             : 1;  // 0xF8..0xFF: not UTF-8
    return back + 1 >= need ? end : end - 1 - back;
  }
  return end;  // only continuation bytes: not a character that could complete
}

std::optional<size_t> FirstNonUtf8Byte(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    // The length the lead byte announces, and the range its second byte
    // must fall in (narrower after E0, ED, F0 and F4: overlongs, surrogates
    // and code points past U+10FFFF).
    size_t length = 0;
    uint8_t low = 0x80, high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      if (c == 0xE0) low = 0xA0;
      if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;
    } else {
      return i;  // a continuation byte, C0, C1 or F5..FF
    }
    if (i + length > text.size()) return i;
    for (size_t k = 1; k < length; ++k) {
      const auto b = static_cast<uint8_t>(text[i + k]);
      const uint8_t lo = k == 1 ? low : 0x80, hi = k == 1 ? high : 0xBF;
      if (b < lo || b > hi) return i;
    }
    i += length;
  }
  return std::nullopt;
}

}  // namespace dropk
