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

}  // namespace dropk
