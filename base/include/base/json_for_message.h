// Quoting a JSON value that a user's file or a peer supplied (a safetensors
// header's shape, an encoder.json id, a server's answer) inside an error
// message. nlohmann's dump() recurses once per level of nesting, and its
// parser takes any depth: a value nested 200,000 deep, in a 400 KB file,
// overflowed the stack (a segfault of dropk-train --init_from, dropk data
// prepare and dropk sample --url) where one line was due.
#ifndef DROPK_BASE_JSON_FOR_MESSAGE_H_
#define DROPK_BASE_JSON_FOR_MESSAGE_H_

#include <cstddef>
#include <string>

#include "base/cut_for_message.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace json_for_message_internal {

// Appends `j`'s compact JSON text to `out`, stopping once `out` is longer
// than `limit` bytes. Each level of nesting appends a byte before it goes
// down, so the recursion is at most `limit` + 1 deep, whatever `j` holds.
template <typename Json>
void AppendCut(const Json& j, size_t limit, std::string* out) {
  constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
  if (out->size() > limit) return;
  if (j.is_array() || j.is_object()) {
    *out += j.is_array() ? '[' : '{';
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (out->size() > limit) return;
      if (it != j.begin()) *out += ',';
      if (j.is_object()) *out += Json(it.key()).dump(-1, ' ', false, kReplace) + ":";
      AppendCut(it.value(), limit, out);
    }
    *out += j.is_array() ? ']' : '}';
    return;
  }
  *out += j.dump(-1, ' ', false, kReplace);  // a scalar: no recursion
}

}  // namespace json_for_message_internal

// `j` as an error message quotes it: its compact JSON text cut to
// `max_bytes` bytes, then "..." (CutAndEscapeForMessage), invalid UTF-8 in
// its strings shown as U+FFFD. Writes about `max_bytes` bytes of text however
// large or deep `j` is, and recurses at most that deep. Pure; never throws
// beyond std::bad_alloc. Json is nlohmann::json or nlohmann::ordered_json.
template <typename Json>
std::string JsonForMessage(const Json& j, size_t max_bytes) {
  std::string text;
  json_for_message_internal::AppendCut(j, max_bytes, &text);
  return CutAndEscapeForMessage(text, max_bytes);
}

}  // namespace dropk

#endif  // DROPK_BASE_JSON_FOR_MESSAGE_H_
