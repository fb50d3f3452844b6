#include "sampler/completions.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <random>
#include <set>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/number_text.h"
#include "json_numbers.h"
#include "model/utf8.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

using json = nlohmann::json;

constexpr int kDefaultMaxTokens = 16;
// The most tokens one choice may generate (the window slides past the
// context, so the context does not bound it).
constexpr int64_t kMaxTokensLimit = 8192;
// Past this the distribution is uniform to float precision anyway.
constexpr int64_t kMaxTemperature = 1000000;
constexpr uint64_t kMaxDrawnSeed = (uint64_t{1} << 53) - 1;  // exact in a JavaScript number

std::string Dump(const json& j) {
  // Byte-level tokenizers can produce invalid UTF-8; replace rather than throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ApiError Invalid(std::string param, std::string message, std::string code = "invalid_value") {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param),
                  std::move(code)};
}

// How deep a request may nest arrays and objects. A completion needs 3 (the
// body, a list of prompts, a prompt of token ids); nlohmann's serializer,
// which error messages use, recurses once per level, so a body of 100,000
// brackets would overflow an I/O thread's stack.
constexpr int kMaxJsonDepth = 16;

// True when body nests arrays and objects deeper than limit. Brackets inside
// strings do not count; invalid JSON is left for the parser to refuse.
bool NestedDeeperThan(std::string_view body, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// Where and why `body` (which does not parse, and nests no deeper than
// kMaxJsonDepth) is not JSON, as nlohmann's parser words it ("parse error at
// line 1, column 15: ... invalid string: ill-formed UTF-8 byte"; "number
// overflow parsing '1e999'"), without nlohmann's exception id and its "last
// read" tail, which echoes the client's bytes (a whole prompt), and cut short.
std::string WhyNotJson(std::string_view body) {
  constexpr size_t kMaxWhy = 160;
  try {
    [[maybe_unused]] const json parsed = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a huge number
    std::string why = e.what();
    const size_t id_end = why.find("] ");
    if (why.rfind("[json.exception.", 0) == 0 && id_end != std::string::npos) {
      why.erase(0, id_end + 2);
    }
    const size_t tail = why.find("; last read");
    if (tail != std::string::npos) why.resize(tail);
    if (why.size() > kMaxWhy) why = why.substr(0, kMaxWhy) + "...";
    return why;
  }
  return "unknown error";  // unreachable: the same body failed to parse just before
}

// The fields a completion body is read for (ParseCompletionRequest and
// RefuseUnsupported): a number in one of them that a double cannot hold is
// refused quoting it; one in a field dropk ignores is let be.
bool IsFieldRead(const std::string& field) {
  static const char* const kFields[] = {"prompt",
                                        "max_tokens",
                                        "top_k",
                                        "n",
                                        "logprobs",
                                        "temperature",
                                        "top_p",
                                        "seed",
                                        "stop",
                                        "stream",
                                        "model",
                                        "echo",
                                        "suffix",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "logit_bias",
                                        "best_of"};
  for (const char* f : kFields) {
    if (field == f) return true;
  }
  return false;
}

// True when `v` is, or holds, a float that reads as 0: 1e-400 does.
bool HoldsFloatZero(const json& v) {
  if (v.is_number_float()) return v.get<double>() == 0.0;
  if (v.is_structured()) {
    for (const json& item : v) {
      if (HoldsFloatZero(item)) return true;
    }
  }
  return false;
}

// The 400 for a number a double cannot hold, quoting it as the client wrote
// it: nlohmann reads 1e-400 as 0, and the error said "got 0", a number the
// client never sent (and refused top_p 1e-400 as outside (0, 1]); it
// refuses 1e400 whole, and the error said "not valid JSON" naming no field.
//
// `numbers` (non-empty, in body order, as FindUnreadableNumbers gives them)
// are all named, so an underflow written first does not hide an overflow's
// field; param is the first overflow's field (what kept the body from being
// read, code invalid_json), else the first underflow's (invalid_value).
ApiError UnreadableNumberError(const std::vector<UnreadableNumber>& numbers) {
  std::string message;
  bool overflow = false;
  for (const UnreadableNumber& number : numbers) {
    const std::string where = number.field.empty() ? std::string("the request body")
                                                   : absl::StrCat("'", number.field, "'");
    absl::StrAppend(&message, message.empty() ? "" : "; and ", where, ": ");
    if (number.overflow) {
      overflow = true;
      absl::StrAppend(&message, number.text,
                      " is past double's range (number overflow; a number dropk reads has "
                      "magnitude at most ",
                      std::numeric_limits<double>::max(), ")");
    } else {
      absl::StrAppend(&message, number.underflow_problem);
    }
  }
  const auto first_overflow =
      std::find_if(numbers.begin(), numbers.end(),
                   [](const UnreadableNumber& number) { return number.overflow; });
  const std::string& param =
      first_overflow != numbers.end() ? first_overflow->field : numbers.front().field;
  return Invalid(param, std::move(message), overflow ? "invalid_json" : "invalid_value");
}

// The value as the client sent it, cut short so an error stays one line.
std::string Shown(const json& v) {
  constexpr size_t kMaxShown = 40;
  std::string text = Dump(v);
  if (text.size() > kMaxShown) text = text.substr(0, kMaxShown) + "...";
  return text;
}

ApiError WrongType(const std::string& param, const char* expected, const json& got) {
  return Invalid(param, absl::StrCat("'", param, "' must be ", expected, ", got ", Shown(got)),
                 "invalid_type");
}

// Field readers of the completions body. Each reads one optional field:
// absent or null leaves *out alone; a value of the wrong type or outside the
// allowed range is an ApiError naming the field, the allowed range and the
// value sent.

// The field `key` of `body`, or null when it is absent or JSON null.
const json* Field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

// What ReadInt does with a value above its range.
enum class Above { kRefuse, kClamp };

// An integer in [lo, hi]; `range` words the allowed values for the message.
std::optional<ApiError> ReadInt(const json& body, const char* key, int64_t lo, int64_t hi,
                                const std::string& range, std::optional<int64_t>* out,
                                Above above = Above::kRefuse) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  const std::string expected = absl::StrCat("an integer ", range);
  if (!v->is_number_integer()) return WrongType(key, expected.c_str(), *v);
  // Unsigned values past INT64_MAX are out of every range read here.
  const bool huge = v->is_number_unsigned() &&
                    v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  int64_t x = huge ? std::numeric_limits<int64_t>::max() : v->get<int64_t>();
  if (above == Above::kClamp) x = std::min(x, hi);
  if (x < lo || x > hi) {
    return Invalid(key, absl::StrCat("'", key, "' must be ", expected, ", got ", Shown(*v)));
  }
  *out = x;
  return std::nullopt;
}

// A number accepted by `in_range`, worded by `range` ("in (0, 1]").
std::optional<ApiError> ReadNumber(const json& body, const char* key, bool (*in_range)(double),
                                   const std::string& range, std::optional<double>* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  const std::string expected = absl::StrCat("a number ", range);
  if (!v->is_number()) return WrongType(key, expected.c_str(), *v);
  const double x = v->get<double>();
  if (!std::isfinite(x) || !in_range(x)) {
    return Invalid(key, absl::StrCat("'", key, "' must be ", expected, ", got ", Shown(*v)));
  }
  *out = x;
  return std::nullopt;
}

// A string or a list of min_items..max_items strings, none empty.
std::optional<ApiError> ReadStrings(const json& body, const char* key, size_t min_items,
                                    size_t max_items, const char* items,
                                    std::vector<std::string>* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  constexpr const char* kShape = "a string or a list of strings";
  if (v->is_string()) {
    out->push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() < min_items) {
      return Invalid(key, absl::StrCat("'", key, "' must list at least ", min_items, " ", items));
    }
    if (v->size() > max_items) {
      return Invalid(key, absl::StrCat("'", key, "' may list at most ", max_items, " ", items,
                                       ", got ", v->size()));
    }
    for (const json& s : *v) {
      if (!s.is_string()) return WrongType(key, kShape, s);
      out->push_back(s.get<std::string>());
    }
  } else {
    return WrongType(key, kShape, *v);
  }
  for (const std::string& s : *out) {
    if (s.empty()) return Invalid(key, absl::StrCat("'", key, "' strings must not be empty"));
  }
  return std::nullopt;
}

// A list of token ids (integers; the vocabulary is checked at submission).
std::optional<ApiError> ReadTokenIds(const json& list, std::vector<uint64_t>* out) {
  if (list.empty()) return Invalid("prompt", "'prompt' token lists must not be empty");
  for (const json& id : list) {
    if (!id.is_number_integer()) return WrongType("prompt", "a token id (an integer)", id);
    if (!id.is_number_unsigned() && id.get<int64_t>() < 0) {
      return Invalid("prompt", absl::StrCat("'prompt' token ids must be >= 0, got ", Shown(id)));
    }
    // As sent: clamping 2^64 - 1 to INT64_MAX made its error quote a number
    // the client never sent.
    out->push_back(id.get<uint64_t>());
  }
  return std::nullopt;
}

// 'prompt' in OpenAI's four forms: a string, a list of strings, a list of
// token ids, or a list of lists of token ids (at most kMaxPrompts prompts).
std::optional<ApiError> ReadPrompts(const json& body, CompletionRequest* r) {
  const json* v = Field(body, "prompt");
  if (v == nullptr) return Invalid("prompt", "'prompt' is required", "missing_required");
  const bool ids = v->is_array() && !v->empty() && (*v)[0].is_number();
  const bool id_lists = v->is_array() && !v->empty() && (*v)[0].is_array();
  if (!ids && !id_lists) {
    return ReadStrings(body, "prompt", 1, CompletionRequest::kMaxPrompts, "prompts", &r->prompts);
  }
  if (ids) {
    r->token_prompts.emplace_back();
    return ReadTokenIds(*v, &r->token_prompts.back());
  }
  if (v->size() > CompletionRequest::kMaxPrompts) {
    return Invalid("prompt", absl::StrCat("'prompt' may list at most ",
                                          CompletionRequest::kMaxPrompts, " prompts, got ",
                                          v->size()));
  }
  for (const json& list : *v) {
    constexpr const char* kShape =
        "a string, a list of strings, a list of token ids or a list of such lists";
    if (!list.is_array()) return WrongType("prompt", kShape, list);
    r->token_prompts.emplace_back();
    if (auto e = ReadTokenIds(list, &r->token_prompts.back())) return e;
  }
  return std::nullopt;
}

std::optional<ApiError> ReadBool(const json& body, const char* key, bool* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return WrongType(key, "a boolean", *v);
  *out = v->get<bool>();
  return std::nullopt;
}

// A seed: any integer in [0, 2^64 - 1].
std::optional<ApiError> ReadSeed(const json& body, std::optional<uint64_t>* out) {
  const json* v = Field(body, "seed");
  if (v == nullptr) return std::nullopt;
  constexpr const char* kExpected = "an integer in [0, 18446744073709551615]";
  if (!v->is_number_integer()) return WrongType("seed", kExpected, *v);
  if (!v->is_number_unsigned() && v->get<int64_t>() < 0) {
    return Invalid("seed", absl::StrCat("'seed' must be ", kExpected, ", got ", Shown(*v)));
  }
  *out = v->get<uint64_t>();
  return std::nullopt;
}

// OpenAI's completion fields that dropk does not implement are refused when
// they would change the output, so that a client never gets text generated
// without what it asked for; their neutral values (what SDKs send by
// default: 0 penalties, echo false, best_of 1, an empty logit_bias, a null
// suffix) pass.
std::optional<ApiError> RefuseUnsupported(const json& body) {
  const auto unsupported = [](const char* param, const json& v) {
    return Invalid(param,
                   absl::StrCat("'", param, "' is not supported by dropk-serve (got ", Shown(v),
                                "); leave it out"),
                   "unsupported_parameter");
  };
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    const json* v = Field(body, penalty);
    if (v != nullptr && !(v->is_number() && v->get<double>() == 0.0)) {
      return unsupported(penalty, *v);
    }
  }
  if (const json* v = Field(body, "logit_bias"); v != nullptr && !(v->is_object() && v->empty())) {
    return unsupported("logit_bias", *v);
  }
  if (const json* v = Field(body, "echo"); v != nullptr && !(v->is_boolean() && !v->get<bool>())) {
    return unsupported("echo", *v);
  }
  if (const json* v = Field(body, "best_of");
      v != nullptr && !(v->is_number_integer() && v->get<int64_t>() == 1)) {
    return unsupported("best_of", *v);
  }
  if (const json* v = Field(body, "suffix"); v != nullptr) return unsupported("suffix", *v);
  return std::nullopt;
}

}  // namespace

std::string ErrorBody(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return Dump(json{{"error", err}});
}

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(std::string_view body) {
  if (NestedDeeperThan(body, kMaxJsonDepth)) {
    return Invalid("",
                   absl::StrCat("the request body nests arrays or objects deeper than ",
                                kMaxJsonDepth, " levels"),
                   "invalid_json");
  }
  // A field given twice: nlohmann keeps the last, so {"max_tokens": 2,
  // "max_tokens": 3000} ran 3000 tokens, silently, where other parsers (and
  // a reader of the client's code) take another. Found in the same parse.
  std::set<std::string> keys;
  std::string repeated;  // the first field dropk reads that is given twice
  const json::parser_callback_t note_repeated_fields = [&](int depth, json::parse_event_t event,
                                                           json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && repeated.empty()) {
      std::string key = parsed.get<std::string>();
      if (!keys.insert(key).second && IsFieldRead(key)) repeated = std::move(key);
    }
    return true;
  };
  const json j =
      json::parse(body.begin(), body.end(), note_repeated_fields, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    if (std::vector<UnreadableNumber> numbers = FindUnreadableNumbers(body, IsFieldRead);
        !numbers.empty()) {
      return UnreadableNumberError(numbers);
    }
    return Invalid("", absl::StrCat("the request body is not valid JSON (", WhyNotJson(body), ")"),
                   "invalid_json");
  }
  if (!j.is_object()) return Invalid("", "the request body must be a JSON object", "invalid_type");
  if (!repeated.empty()) {
    return Invalid(repeated,
                   absl::StrCat("'", repeated,
                                "' is given more than once; give each field once (JSON parsers "
                                "differ on which value counts)"),
                   "invalid_json");
  }
  if (HoldsFloatZero(j)) {
    if (std::vector<UnreadableNumber> numbers = FindUnreadableNumbers(body, IsFieldRead);
        !numbers.empty()) {
      return UnreadableNumberError(numbers);
    }
  }
  CompletionRequest r;
  if (auto e = ReadPrompts(j, &r)) return *e;
  std::optional<int64_t> max_tokens, top_k, n, logprobs;
  if (auto e = ReadInt(j, "max_tokens", 1, kMaxTokensLimit,
                       absl::StrCat("in [1, ", kMaxTokensLimit, "]"), &max_tokens)) {
    return *e;
  }
  // top_k: -1 and 0 turn it off; a k past the vocabulary means all of it
  // (clamped to V later), so every larger integer is accepted.
  if (auto e = ReadInt(j, "top_k", -1, INT32_MAX, ">= 1, or 0 or -1 to disable", &top_k,
                       Above::kClamp)) {
    return *e;
  }
  if (auto e = ReadInt(j, "n", 1, CompletionRequest::kMaxN,
                       absl::StrCat("in [1, ", CompletionRequest::kMaxN, "]"), &n)) {
    return *e;
  }
  if (auto e = ReadInt(j, "logprobs", 0, Scheduler::kMaxTopLogprobs,
                       absl::StrCat("in [0, ", Scheduler::kMaxTopLogprobs, "]"), &logprobs)) {
    return *e;
  }
  std::optional<double> temperature, top_p;
  if (auto e = ReadNumber(
          j, "temperature", [](double t) { return t >= 0.0 && t <= kMaxTemperature; },
          absl::StrCat("in [0, ", kMaxTemperature, "] (0: greedy)"), &temperature)) {
    return *e;
  }
  if (auto e = ReadNumber(
          j, "top_p", [](double p) { return p > 0.0 && p <= 1.0; }, "in (0, 1]", &top_p)) {
    return *e;
  }
  if (auto e = ReadSeed(j, &r.seed)) return *e;
  if (auto e = ReadStrings(j, "stop", 0, CompletionRequest::kMaxStops, "strings", &r.stop)) {
    return *e;
  }
  if (auto e = ReadBool(j, "stream", &r.stream)) return *e;
  if (const json* model = Field(j, "model"); model != nullptr && !model->is_string()) {
    return WrongType("model", "a string", *model);
  }
  if (auto e = RefuseUnsupported(j)) return *e;
  if (max_tokens) r.max_tokens = static_cast<int>(*max_tokens);
  if (top_k) r.top_k = *top_k == -1 ? 0 : static_cast<int>(*top_k);
  if (n) r.n = static_cast<int>(*n);
  if (logprobs) r.logprobs = static_cast<int>(*logprobs);
  if (temperature) r.temperature = static_cast<float>(*temperature);
  // A p below float's range would round to 0, outside (0, 1]: the smallest
  // float nucleus keeps the likeliest token, which is what such a p asks for.
  if (top_p) r.top_p = std::max(static_cast<float>(*top_p), std::numeric_limits<float>::min());
  return r;
}

namespace {
// The per-request cost budget: the tokens a request may ask for in all,
// prompts x n x max_tokens, so that one request cannot buy hours of decoding.
// A non-streaming answer's top logprobs are held, 8 bytes an alternative,
// until the answer is written (BodyJson), whose JSON is about 600 bytes a
// token with 20 alternatives: they are bounded by the budget with the most
// alternatives, and never past kMaxHeldAlternatives, whatever
// --max-request-tokens says (a streamed answer sends and drops each
// token's). So any request within the default budget may ask for the most
// alternatives, and one answer holds at most ~10 MB of them (~40 MB of
// JSON).
constexpr int64_t kMaxHeldAlternatives = int64_t{65536} * Scheduler::kMaxTopLogprobs;

std::optional<ApiError> CheckCost(const CompletionRequest& request, int64_t limit) {
  const int64_t max_tokens = request.max_tokens.value_or(kDefaultMaxTokens);
  const int64_t cost = static_cast<int64_t>(request.PromptCount()) * request.n * max_tokens;
  if (cost > limit) {
    return Invalid(
        "max_tokens",
        absl::StrCat("the request asks for up to ", cost, " tokens (", request.PromptCount(),
                     " prompts x n ", request.n, " x max_tokens ", max_tokens,
                     "); the limit per request is ", limit, " (--max-request-tokens)"),
        "request_too_costly");
  }
  if (!request.stream && request.logprobs > 0 && cost * request.logprobs > kMaxHeldAlternatives) {
    return Invalid("logprobs",
                   absl::StrCat("the answer would hold up to ", cost * request.logprobs,
                                " top logprobs (", cost, " tokens x logprobs ", request.logprobs,
                                "); a non-streaming answer holds at most ", kMaxHeldAlternatives,
                                "; stream it (\"stream\": true) or ask for fewer"),
                   "request_too_costly");
  }
  return std::nullopt;
}

// Prompt p of `request` as token ids, checked against the model: a text
// prompt encoded (refused before encoding when its bytes cannot fit the
// context: encoding runs on an I/O thread, and GPT-2's BPE takes about a
// second per megabyte), a token prompt checked against the vocabulary; either
// must leave room in the context (T) for one generated token.
std::variant<std::vector<int32_t>, ApiError> PromptIds(const CompletionRequest& request, size_t p,
                                                       const TextTokenizer& tokenizer, int T,
                                                       int V) {
  const auto too_long = [&](const std::string& what) {
    return Invalid("prompt",
                   absl::StrCat("prompt ", p, " is ", what, "; the model's context is ", T,
                                " tokens, which must hold the prompt and at least one "
                                "generated token"),
                   "context_length_exceeded");
  };
  std::vector<int32_t> ids;
  if (p < request.prompts.size()) {
    const std::string& text = request.prompts[p];
    const size_t bytes = text.size(), per_token = tokenizer.max_token_bytes();
    if (bytes > static_cast<size_t>(T - 1) * per_token) {
      return too_long(absl::StrCat("at least ", (bytes + per_token - 1) / per_token, " tokens (",
                                   bytes, " bytes, at most ", per_token, " per token)"));
    }
    absl::StatusOr<std::vector<int32_t>> encoded = tokenizer.Encode(text);
    if (!encoded.ok()) {
      return Invalid("prompt", absl::StrCat("prompt ", p, ": ", encoded.status().message()),
                     "invalid_prompt");
    }
    ids = *std::move(encoded);
  } else {
    const std::vector<uint64_t>& given = request.token_prompts[p - request.prompts.size()];
    for (size_t i = 0; i < given.size(); ++i) {
      if (given[i] >= static_cast<uint64_t>(V)) {
        return Invalid("prompt",
                       absl::StrCat("prompt ", p, ": token id ", given[i], " at position ", i,
                                    " is outside the model's vocabulary [0, ", V, ")"),
                       "invalid_prompt");
      }
      ids.push_back(static_cast<int32_t>(given[i]));
    }
  }
  if (ids.size() >= static_cast<size_t>(T)) return too_long(absl::StrCat(ids.size(), " tokens"));
  return ids;
}

// Scheduler::Submit queues a request's sequences all together or not at
// all, so a request with more than the queue holds could never start: that
// is the request's fault (400 naming the limit), not a full queue (a 429
// whose Retry-After invites clients to retry it forever).
std::optional<ApiError> CheckQueueFits(const CompletionRequest& request, int max_queue) {
  const int64_t sequences = static_cast<int64_t>(request.PromptCount()) * request.n;
  if (sequences <= max_queue) return std::nullopt;
  return Invalid("n",
                 absl::StrCat("the request needs ", sequences, " sequences (",
                              request.PromptCount(), " prompts x n ", request.n,
                              "); at most ", max_queue, " can wait at once (--max-queue)"),
                 "too_many_sequences");
}

// A generated token as the answer's logprobs report it.
struct LoggedToken {
  TokenLogprob drawn;
  size_t text_offset = 0;  // where its text starts in the choice's text
  size_t top_count = 0;    // its alternatives: the next top_count in Choice::top
};

// The OpenAI "logprobs" object of `entries`, whose alternatives are `top`
// in order: tokens, token_logprobs, top_logprobs (text -> logprob, an
// object whose keys nlohmann orders by text) and text_offset.
json LogprobsJson(std::span<const LoggedToken> entries, std::span<const TokenLogprob> top,
                  const TextTokenizer& tok) {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array();
  size_t next = 0;
  for (const LoggedToken& e : entries) {
    tokens.push_back(tok.DecodeOne(e.drawn.token));
    token_logprobs.push_back(e.drawn.logprob);
    json alternatives = json::object();
    for (size_t i = 0; i < e.top_count; ++i, ++next) {
      alternatives[tok.DecodeOne(top[next].token)] = top[next].logprob;
    }
    top_logprobs.push_back(std::move(alternatives));
    text_offset.push_back(e.text_offset);
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top_logprobs)},
              {"text_offset", std::move(text_offset)}};
}
}  // namespace

// Output state of one choice; scheduler thread only.
struct CompletionJob::Choice {
  std::string text;  // decoded output so far (cut at a stop string)
  size_t sent = 0;   // bytes of text already streamed
  int tokens = 0;
  bool stopped = false;  // a stop string was found
  std::string finish_reason;
  // With logprobs, per token, held as ids and floats (8 bytes an
  // alternative, not a JSON object of kilobytes) until they are sent:
  // streaming keeps only the tokens not yet sent.
  std::vector<LoggedToken> entries;
  std::vector<TokenLogprob> top;  // every entry's alternatives, in order
};

class CompletionJob::ChoiceSink final : public SequenceSink {
 public:
  ChoiceSink(std::shared_ptr<CompletionJob> job, int choice)
      : job_(std::move(job)), choice_(choice) {}
  bool OnToken(const GeneratedToken& token) override { return job_->OnToken(choice_, token); }
  void OnFinish(FinishReason reason) override { job_->OnFinish(choice_, reason); }
  bool Cancelled() const override { return job_->cancelled(); }

 private:
  std::shared_ptr<CompletionJob> job_;
  int choice_;
};

std::variant<std::shared_ptr<CompletionJob>, ApiError> CompletionJob::Start(
    const CompletionRequest& request, std::shared_ptr<ServingModel> model, Scheduler* scheduler,
    std::shared_ptr<CompletionListener> listener) {
  if (model == nullptr) {
    return ApiError{503, "no checkpoint is loaded yet", "service_unavailable", "",
                    "model_not_ready"};
  }
  if (std::optional<ApiError> e = CheckCost(request, scheduler->options().max_request_tokens)) {
    return *e;
  }
  if (std::optional<ApiError> e = CheckQueueFits(request, scheduler->options().max_queue)) {
    return *e;
  }
  const ModelSnapshot& snap = model->snapshot();
  const int V = snap.config.vocab_size, T = snap.config.block_size;
  if (std::string failure = scheduler->DeviceFailure(); !failure.empty()) {
    return ApiError{503, absl::StrCat(failure, "; this server is restarting; retry the request"),
                    "service_unavailable", "", "device_failed"};
  }
  std::shared_ptr<CompletionJob> job(new CompletionJob());
  job->scheduler_ = scheduler;
  job->listener_ = std::move(listener);
  job->model_ = model;
  job->created_ = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  if (request.seed.has_value()) {
    job->seed_ = *request.seed;
  } else {
    std::random_device rd;
    job->seed_ = ((static_cast<uint64_t>(rd()) << 32) ^ rd()) & kMaxDrawnSeed;
  }
  std::random_device rd;
  job->id_ = absl::StrFormat("cmpl-%08x%08x", rd(), rd());
  job->stream_ = request.stream;
  job->logprobs_ = request.logprobs;
  job->stop_ = request.stop;
  for (const std::string& s : job->stop_) job->max_stop_ = std::max(job->max_stop_, s.size());

  std::vector<SequenceRequest> sequences;
  for (size_t p = 0; p < request.PromptCount(); ++p) {
    std::variant<std::vector<int32_t>, ApiError> ids = PromptIds(request, p, snap.tokenizer, T, V);
    if (std::holds_alternative<ApiError>(ids)) return std::get<ApiError>(ids);
    const std::vector<int32_t>& prompt = std::get<std::vector<int32_t>>(ids);
    const int P = static_cast<int>(prompt.size());
    // Longer outputs than the context slide the window (the scheduler
    // re-reads the last block_size tokens), so only the prompt must fit.
    const int max_tokens = request.max_tokens.value_or(kDefaultMaxTokens);
    job->prompt_tokens_ += P;
    for (int c = 0; c < request.n; ++c) {
      SequenceRequest s;
      s.model = model;
      s.prompt = prompt;
      s.max_tokens = max_tokens;
      s.sampling.temperature = request.temperature;
      s.sampling.top_k = std::min(request.top_k, V);
      s.sampling.top_p = request.top_p;
      s.sampling.seed = job->seed_ + static_cast<uint64_t>(c);
      s.top_logprobs = std::max(request.logprobs, 0);
      sequences.push_back(std::move(s));
    }
  }
  for (size_t i = 0; i < sequences.size(); ++i) {
    job->choices_.push_back(std::make_unique<Choice>());
    sequences[i].sink = std::make_shared<ChoiceSink>(job, static_cast<int>(i));
  }
  job->unfinished_ = static_cast<int>(sequences.size());
  const absl::Status s = scheduler->Submit(std::move(sequences));
  if (absl::IsResourceExhausted(s)) {
    return ApiError{429, std::string(s.message()), "rate_limit_exceeded", "", "queue_full"};
  }
  if (absl::IsUnavailable(s)) {
    // The device may have failed since the check above.
    return ApiError{503, std::string(s.message()), "service_unavailable", "",
                    scheduler->DeviceFailure().empty() ? "shutting_down" : "device_failed"};
  }
  if (!s.ok()) return Invalid("", std::string(s.message()));
  return job;
}

bool CompletionJob::OnToken(int index, const GeneratedToken& token) {
  Choice& c = *choices_[index];
  ++c.tokens;
  const TextTokenizer& tok = model_->snapshot().tokenizer;
  const size_t before = c.text.size();
  c.text += tok.DecodeOne(token.token);
  if (logprobs_ >= 0) {
    c.entries.push_back({{token.token, token.logprob}, before, token.top.size()});
    c.top.insert(c.top.end(), token.top.begin(), token.top.end());
  }
  if (max_stop_ > 0) {
    // Only a stop string that ends in the new piece can be new.
    const size_t from = before >= max_stop_ ? before - max_stop_ + 1 : 0;
    size_t cut = std::string::npos;
    for (const std::string& s : stop_) cut = std::min(cut, c.text.find(s, from));
    if (cut != std::string::npos) {
      c.text.resize(cut);
      c.stopped = true;
      return false;
    }
  }
  if (stream_) StreamSettledText(index);
  return true;
}

void CompletionJob::StreamSettledText(int index) {
  Choice& c = *choices_[index];
  // Hold back what could still become a stop string, and partial UTF-8.
  size_t safe = c.text.size();
  if (max_stop_ > 0) safe = safe >= max_stop_ - 1 ? safe - (max_stop_ - 1) : 0;
  safe = CompleteUtf8Prefix(c.text, safe);
  if (safe > c.sent || (logprobs_ >= 0 && !c.entries.empty())) {
    std::string delta = safe > c.sent ? c.text.substr(c.sent, safe - c.sent) : "";
    c.sent = std::max(c.sent, safe);
    listener_->OnEvent(absl::StrCat("data: ", ChunkJson(index, delta, nullptr), "\n\n"));
  }
}

void CompletionJob::OnFinish(int index, FinishReason reason) {
  Choice& c = *choices_[index];
  c.finish_reason = c.stopped || reason == FinishReason::kStop ? "stop" : "length";
  if (reason == FinishReason::kCancelled || reason == FinishReason::kNotRun ||
      reason == FinishReason::kDeviceFailed) {
    c.finish_reason = "cancelled";
  }
  if (reason == FinishReason::kNotRun) ++not_run_;
  if (reason == FinishReason::kDeviceFailed) ++device_failed_;
  // A cancelled choice still gets its last chunk: a stream cut short (the
  // service draining on SIGTERM) must not read as a complete one. When the
  // client is gone, nobody reads it.
  if (stream_) {
    const std::string delta = c.sent < c.text.size() ? c.text.substr(c.sent) : "";
    c.sent = c.text.size();
    listener_->OnEvent(
        absl::StrCat("data: ", ChunkJson(index, delta, c.finish_reason.c_str()), "\n\n"));
  }
  if (--unfinished_ > 0) return;
  if (stream_) {
    // The 200 and its headers are gone already: the failure travels as an
    // error event (OpenAI's shape) before the end of the stream.
    if (device_failed_ > 0) {
      listener_->OnEvent(absl::StrCat("data: ", ErrorBody(DeviceFailedError()), "\n\n"));
    }
    listener_->OnEvent("data: [DONE]\n\n");
    listener_->OnDone(std::string());
  } else if (device_failed_ > 0) {
    // Part of the answer is missing, and this server cannot produce it.
    listener_->OnDone(DeviceFailedError());
  } else if (not_run_ == static_cast<int>(choices_.size())) {
    // Nothing of it ran: a 200 of empty "cancelled" choices would read as
    // the model's answer; a 503 tells the client to send it again.
    listener_->OnDone(ApiError{503, "the service shut down before this request ran; retry it",
                               "service_unavailable", "", "shutting_down"});
  } else {
    listener_->OnDone(BodyJson());
  }
  // Break the job <-> sink cycle: sinks hold the job; the job no longer
  // needs its listener.
  listener_.reset();
}

ApiError CompletionJob::DeviceFailedError() const {
  // 503, not 500: nothing is wrong with the request, and another replica
  // (or this one, restarted) can answer it.
  return ApiError{503,
                  absl::StrCat(scheduler_->DeviceFailure(),
                               "; this server cannot generate any more and is restarting; "
                               "retry the request"),
                  "service_unavailable", "", "device_failed"};
}

std::string CompletionJob::ChunkJson(int index, std::string_view text, const char* finish_reason) {
  Choice& c = *choices_[index];
  json choice = {{"text", text}, {"index", index}};
  if (logprobs_ >= 0) {
    // Each entry is streamed once and then dropped: a long stream asking for
    // top logprobs held every token's alternatives (kilobytes each) to its end.
    choice["logprobs"] = LogprobsJson(c.entries, c.top, model_->snapshot().tokenizer);
    c.entries.clear();
    c.top.clear();
  } else {
    choice["logprobs"] = nullptr;
  }
  choice["finish_reason"] = finish_reason == nullptr ? json(nullptr) : json(finish_reason);
  const ModelSnapshot& snap = model_->snapshot();
  return Dump(json{{"id", id_},
                   {"object", "text_completion"},
                   {"created", created_},
                   {"model", snap.id},
                   {"choices", json::array({std::move(choice)})},
                   {"checkpoint_step", snap.step},
                   {"seed", seed_}});
}

namespace {
class BlockingListener final : public CompletionListener {
 public:
  explicit BlockingListener(const std::function<void(const std::string&)>* on_event)
      : on_event_(on_event) {}
  void OnEvent(std::string event) override {
    if (*on_event_) (*on_event_)(event);
  }
  void OnDone(CompletionResult result) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(result);
    done_ = true;
    cv_.notify_all();
  }
  CompletionResult Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return std::move(result_);
  }

 private:
  const std::function<void(const std::string&)>* on_event_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  CompletionResult result_;
};
}  // namespace

CompletionResult RunCompletion(const CompletionRequest& request, Scheduler* scheduler,
                               const std::function<void(const std::string&)>& on_event) {
  auto listener = std::make_shared<BlockingListener>(&on_event);
  auto started = CompletionJob::Start(request, scheduler->CurrentModel(), scheduler, listener);
  if (auto* e = std::get_if<ApiError>(&started)) return *e;
  return listener->Wait();
}

std::string CompletionJob::BodyJson() {
  // Each choice becomes text on its own and drops its entries, so at most
  // one choice's logprobs (max_tokens x 20 alternatives) are ever a JSON
  // tree, never a whole request's (a budget's worth of tokens).
  std::string body = "{\"choices\":[";
  int completion_tokens = 0;
  const ModelSnapshot& snap = model_->snapshot();
  for (size_t i = 0; i < choices_.size(); ++i) {
    Choice& c = *choices_[i];
    completion_tokens += c.tokens;
    json choice = {{"text", c.text}, {"index", i}, {"finish_reason", c.finish_reason}};
    choice["logprobs"] =
        logprobs_ >= 0 ? LogprobsJson(c.entries, c.top, snap.tokenizer) : json(nullptr);
    c.entries = {};
    c.top = {};
    absl::StrAppend(&body, i > 0 ? "," : "", Dump(choice));
  }
  const std::string rest = Dump(json{{"id", id_},
                                     {"object", "text_completion"},
                                     {"created", created_},
                                     {"model", snap.id},
                                     {"usage",
                                      {{"prompt_tokens", prompt_tokens_},
                                       {"completion_tokens", completion_tokens},
                                       {"total_tokens", prompt_tokens_ + completion_tokens}}},
                                     {"checkpoint_step", snap.step},
                                     {"seed", seed_}});
  // rest is "{...}" with at least one member: "choices" goes first, and
  // the body is built in place rather than copied once more at the end.
  absl::StrAppend(&body, "],", absl::string_view(rest).substr(1));
  return body;
}

}  // namespace dropk
