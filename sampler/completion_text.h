// What request parsing (completion_request.cc) and the completion job
// (completions.cc) share. Private to sampler/.
#ifndef DROPK_SAMPLER_COMPLETION_TEXT_H_
#define DROPK_SAMPLER_COMPLETION_TEXT_H_

#include <cstdint>
#include <string>
#include <utility>

#include "nlohmann/json.hpp"
#include "sampler/completions.h"

namespace dropk {

// max_tokens when a request does not say (OpenAI's default).
inline constexpr int kDefaultMaxTokens = 16;
// The largest seed drawn for a request that gives none: exact in a
// JavaScript number, so a browser client can send it back.
inline constexpr uint64_t kMaxDrawnSeed = (uint64_t{1} << 53) - 1;

// `j` as compact JSON text. Byte-level tokenizers can produce invalid
// UTF-8, which is replaced rather than thrown on.
inline std::string JsonText(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A 400 invalid_request_error naming the request field `param` at fault.
inline ApiError InvalidParam(std::string param, std::string message,
                             std::string code = "invalid_value") {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param),
                  std::move(code)};
}

}  // namespace dropk

#endif  // DROPK_SAMPLER_COMPLETION_TEXT_H_
