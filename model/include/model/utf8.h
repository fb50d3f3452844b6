// Streaming text that a byte-level tokenizer produces: a GPT-2 BPE or BYTE
// token can end inside a UTF-8 character, so text sent piece by piece (an SSE
// stream) must hold back an unfinished character until its last byte comes.
#ifndef DROPK_MODEL_UTF8_H_
#define DROPK_MODEL_UTF8_H_

#include <cstddef>
#include <optional>
#include <string_view>

namespace dropk {

// The largest n <= end such that text[0, n) does not end inside an
// unfinished UTF-8 character: end itself, unless text[0, end) ends with a
// lead byte followed by fewer continuation bytes than it announces, in which
// case the lead byte's position. Bytes that are not UTF-8 at all (a stray
// continuation byte, 0xF8..0xFF) are never held back, so a stream of invalid
// bytes still flows. Precondition: end <= text.size().
size_t CompleteUtf8Prefix(std::string_view text, size_t end);

// The offset of the first byte of `text` that does not begin a well-formed
// UTF-8 character (RFC 3629: no overlong forms, no surrogates, nothing past
// U+10FFFF, as protobuf requires of a `string` field), or nullopt when all
// of `text` is UTF-8.
std::optional<size_t> FirstNonUtf8Byte(std::string_view text);

}  // namespace dropk

#endif  // DROPK_MODEL_UTF8_H_
