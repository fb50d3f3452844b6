// Quoting text a user or a client supplied (a URL path, a header, a JSON
// value, a server's answer) inside an error message, cut short so that the
// message stays one readable line whatever was sent: a 15 KB path once made
// a 15 KB 404 message.
#ifndef DROPK_BASE_CUT_FOR_MESSAGE_H_
#define DROPK_BASE_CUT_FOR_MESSAGE_H_

#include <cstddef>
#include <cstdint>
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

// Whether code point `cp` would not show as itself on a terminal or log
// line: C0 and C1 controls and DEL, and the invisible format characters
// that reorder or hide the text around them (bidi marks, embeddings,
// overrides and isolates, zero-width characters, line and paragraph
// separators, the byte order mark). A U+202E quoted raw turned the rest of
// the error line around.
inline bool HidesOrMovesText(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x061C ||
         (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202E) ||
         (cp >= 0x2060 && cp <= 0x2069) || cp == 0xFEFF;
}

// Calls visit(cp, bytes) for each character of `text` in order: a one- to
// three-byte UTF-8 character with its code point; a four-byte one, and any
// byte that is not part of valid UTF-8, byte by byte with cp 0x20 (neither
// is ever a control character). `bytes` are the character's bytes in
// `text`.
template <typename Visit>
void ForEachCharacter(std::string_view text, Visit visit) {
  const auto byte = [&text](size_t i) { return static_cast<unsigned char>(text[i]); };
  const auto continues = [&](size_t i) { return i < text.size() && (byte(i) & 0xC0) == 0x80; };
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = byte(i);
    size_t len = 1;
    if (cp >= 0xC2 && cp <= 0xDF && continues(i + 1)) {
      cp = ((cp & 0x1F) << 6) | (byte(i + 1) & 0x3F), len = 2;
    } else if (cp >= 0xE0 && cp <= 0xEF && continues(i + 1) && continues(i + 2)) {
      cp = ((cp & 0x0F) << 12) | ((byte(i + 1) & 0x3F) << 6) | (byte(i + 2) & 0x3F), len = 3;
    } else if (cp >= 0x80) {
      cp = 0x20;  // a byte of a longer or broken sequence: kept
    }
    visit(cp, text.substr(i, len));
    i += len;
  }
}

// Which characters EscapeForMessage keeps although HidesOrMovesText holds.
enum class KeptBreaks {
  kNone,              // every such character is escaped: one line of text
  kNewlinesAndTabs,  // '\n' and '\t' are kept: a message of several lines
};

// `text` as an error message may quote it: every character for which
// HidesOrMovesText holds is written as \uXXXX (lower-case hex, "\u202e"),
// except those `kept` names; everything else, bytes that are not UTF-8
// included, is kept as it is. Pure, never throws beyond std::bad_alloc.
inline std::string EscapeForMessage(std::string_view text, KeptBreaks kept = KeptBreaks::kNone) {
  std::string out;
  out.reserve(text.size());
  ForEachCharacter(text, [&out, kept](uint32_t cp, std::string_view bytes) {
    const bool keep = kept == KeptBreaks::kNewlinesAndTabs && (cp == '\n' || cp == '\t');
    if (HidesOrMovesText(cp) && !keep) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(cp >> shift) & 0xF];
    } else {
      out.append(bytes);
    }
  });
  return out;
}

// Whether code point `cp` is a control character or one that reorders the
// text around it: C0 and C1 controls, DEL, the line and paragraph
// separators, and the bidirectional embeddings, overrides and isolates.
// Unlike HidesOrMovesText, not the zero-width joiners and marks, which
// names in Persian, Indic scripts or emoji sequences hold.
inline bool IsControlCharacter(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0x2028 && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

// Whether `text` holds a character for which IsControlCharacter holds
// (decoded as EscapeForMessage decodes). Pure, never throws beyond
// std::bad_alloc.
inline bool HoldsControlCharacter(std::string_view text) {
  bool found = false;
  ForEachCharacter(text, [&found](uint32_t cp, std::string_view) {
    found = found || IsControlCharacter(cp);
  });
  return found;
}

// An error's whole text (one line or several) as a program prints it on
// stderr: EscapeForMessage keeping its line breaks and tabs. Takes any
// string-like text (std::string_view, absl::string_view).
template <typename Text>
std::string ErrorTextForTerminal(const Text& message) {
  return EscapeForMessage(std::string_view(message.data(), message.size()),
                          KeptBreaks::kNewlinesAndTabs);
}

// Client text as an error message quotes it: cut to `max_bytes`
// (CutForMessage) and then escaped (EscapeForMessage), so that the cut
// never splits an escape. Pure, never throws beyond std::bad_alloc.
inline std::string CutAndEscapeForMessage(std::string_view text, size_t max_bytes) {
  return EscapeForMessage(CutForMessage(text, max_bytes));
}

}  // namespace dropk

#endif  // DROPK_BASE_CUT_FOR_MESSAGE_H_
