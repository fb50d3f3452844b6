// Quoting text a user or a client supplied (a URL path, a header, a JSON
// value, a server's answer) inside an error message, cut short so that the
// message stays one readable line whatever was sent: a 15 KB path once made
// a 15 KB 404 message.
#ifndef DROPK_BASE_CUT_FOR_MESSAGE_H_
#define DROPK_BASE_CUT_FOR_MESSAGE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace dropk {

// What an error message quotes of `text`: `text` itself when it is at most
// `max_bytes` bytes, else its first bytes followed by "..." (which is not
// counted in max_bytes). The cut never splits a UTF-8 character: it moves
// back to the start of the character it would fall in (so the kept part may
// be up to 3 bytes shorter than max_bytes), and a message never shows half
// a character as U+FFFD. Bytes are kept as they are (no escaping); pure,
// never throws beyond std::bad_alloc.
inline std::string CutForMessage(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t cut = max_bytes;
  // A UTF-8 continuation byte is 10xxxxxx; a character has at most 3. Input
  // that is not UTF-8 is cut at most 3 bytes early, and never later.
  const auto continues = [&text](size_t i) {
    return (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
  };
  for (int back = 0; back < 3 && cut > 0 && continues(cut); ++back) --cut;
  if (continues(cut)) cut = max_bytes;  // not UTF-8 here: a plain byte cut
  std::string shown(text.substr(0, cut));
  shown += "...";
  return shown;
}

}  // namespace dropk

#endif  // DROPK_BASE_CUT_FOR_MESSAGE_H_
