// Reading a completions request: ParseCompletionRequest checks every field
// of the JSON body and names the one at fault, OpenAI's way (param, code).
#include "sampler/completions.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/closest_name.h"
#include "base/cut_for_message.h"
#include "base/number_text.h"
#include "completion_text.h"
#include "json_numbers.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxTokensLimit = CompletionRequest::kMaxTokens;
constexpr int64_t kMaxTemperature = CompletionRequest::kMaxTemperature;

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
    return CutAndEscapeForMessage(why, 160);
  }
  return "unknown error";  // unreachable: the same body failed to parse just before
}

// The fields a completion body is read for (ParseCompletionRequest and
// RefuseUnsupported): a number in one of them that a double cannot hold is
// refused quoting it; one in a field dropk ignores is let be.
const std::vector<std::string>& FieldsRead() {
  static const std::vector<std::string> kFields = {"prompt",
                                        "max_tokens",
                                        "top_k",
                                        "n",
                                        "logprobs",
                                        "temperature",
                                        "top_p",
                                        "seed",
                                        "stop",
                                        "stream",
                                        "stream_options",
                                        "model",
                                        "echo",
                                        "suffix",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "logit_bias",
                                        "best_of"};
  return kFields;
}
bool IsFieldRead(const std::string& field) {
  const std::vector<std::string>& fields = FieldsRead();
  return std::find(fields.begin(), fields.end(), field) != fields.end();
}

// A field dropk does not read is let be (clients send their own metadata:
// "user", "metadata"), unless it is so close to one dropk reads that it is
// a misspelling of it: {"max_token": 50} ran the default 16 tokens, and
// {"temprature": 0} sampled at temperature 1, without a word.
std::optional<ApiError> RefuseMisspelledFields(const json& body) {
  for (const auto& [key, value] : body.items()) {
    if (IsFieldRead(key)) continue;
    const std::string meant = ClosestName(key, FieldsRead());
    if (meant.empty()) continue;
    return InvalidParam(key,
                        absl::StrCat("'", key, "' is not a field dropk-serve reads "
                                     "(did you mean '", meant, "'?); fix its name, or leave it "
                                     "out"),
                        "unknown_parameter");
  }
  return std::nullopt;
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
  return InvalidParam(param, std::move(message), overflow ? "invalid_json" : "invalid_value");
}

// A parsed completions body and the text it was parsed from, so that an
// error can quote a number as the client wrote it.
struct Body {
  const json& fields;
  std::string_view text;
};

// The value `v` of the top-level field `param` as the client sent it, cut
// short so an error stays one line. A number nlohmann read as a double is
// quoted from the body's text: 2^64 (past every 64-bit integer) was quoted
// as 1.8446744073709552e+19, a number the client never wrote.
std::string Shown(const Body& body, const std::string& param, const json& v) {
  if (v.is_number_float()) {
    if (std::optional<std::string> written = FloatAsWritten(body.text, param, v.get<double>())) {
      return *written;
    }
  }
  return CutAndEscapeForMessage(JsonText(v), 40);
}

ApiError WrongType(const Body& body, const std::string& param, const char* expected,
                   const json& got) {
  return InvalidParam(
      param, absl::StrCat("'", param, "' must be ", expected, ", got ", Shown(body, param, got)),
      "invalid_type");
}

// Field readers of the completions body. Each reads one optional field:
// absent or null leaves *out alone; a value of the wrong type or outside the
// allowed range is an ApiError naming the field, the allowed range and the
// value sent.

// The field `key` of `body`, or null when it is absent or JSON null.
const json* Field(const Body& body, const char* key) {
  const auto it = body.fields.find(key);
  return it == body.fields.end() || it->is_null() ? nullptr : &*it;
}

// True when `v` is an integer as the client wrote it: a JSON integer, or
// one past 64 bits, which nlohmann keeps as a double (2^64, -2^63 - 1).
// Such an integer has the right type and is outside every range read here:
// a 400 invalid_value, as 99999 for max_tokens is, not invalid_type. 1.0
// and 1e3 are not integers.
bool IsInteger(const Body& body, const std::string& param, const json& v) {
  return v.is_number_integer() ||
         (v.is_number_float() && WrittenAsInteger(body.text, param, v.get<double>()));
}

// What ReadInt does with a value above its range.
enum class Above { kRefuse, kClamp };

// An integer in [lo, hi]; `range` words the allowed values for the message.
std::optional<ApiError> ReadInt(const Body& body, const char* key, int64_t lo, int64_t hi,
                                const std::string& range, std::optional<int64_t>* out,
                                Above above = Above::kRefuse) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  const std::string expected = absl::StrCat("an integer ", range);
  if (!IsInteger(body, key, *v)) return WrongType(body, key, expected.c_str(), *v);
  // Unsigned values past INT64_MAX, and integers past 64 bits, are out of
  // every range read here, on the side of their sign.
  int64_t x = 0;
  if (v->is_number_float()) {
    x = v->get<double>() > 0 ? std::numeric_limits<int64_t>::max()
                             : std::numeric_limits<int64_t>::min();
  } else if (v->is_number_unsigned() &&
             v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    x = std::numeric_limits<int64_t>::max();
  } else {
    x = v->get<int64_t>();
  }
  if (above == Above::kClamp) x = std::min(x, hi);
  if (x < lo || x > hi) {
    return InvalidParam(
        key, absl::StrCat("'", key, "' must be ", expected, ", got ", Shown(body, key, *v)));
  }
  *out = x;
  return std::nullopt;
}

// A number accepted by `in_range`, worded by `range` ("in (0, 1]").
std::optional<ApiError> ReadNumber(const Body& body, const char* key, bool (*in_range)(double),
                                   const std::string& range, std::optional<double>* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  const std::string expected = absl::StrCat("a number ", range);
  if (!v->is_number()) return WrongType(body, key, expected.c_str(), *v);
  const double x = v->get<double>();
  if (!std::isfinite(x) || !in_range(x)) {
    return InvalidParam(
        key, absl::StrCat("'", key, "' must be ", expected, ", got ", Shown(body, key, *v)));
  }
  *out = x;
  return std::nullopt;
}

// "1 prompt", "4 prompts": `count` of `item`.
std::string CountOf(size_t count, const char* item) {
  return absl::StrCat(count, " ", item, count == 1 ? "" : "s");
}

// A string or a list of min_items..max_items strings, none empty; `item`
// names one in messages ("prompt").
std::optional<ApiError> ReadStrings(const Body& body, const char* key, size_t min_items,
                                    size_t max_items, const char* item,
                                    std::vector<std::string>* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  constexpr const char* kShape = "a string or a list of strings";
  if (v->is_string()) {
    out->push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() < min_items) {
      return InvalidParam(
          key, absl::StrCat("'", key, "' must list at least ", CountOf(min_items, item)));
    }
    if (v->size() > max_items) {
      return InvalidParam(key, absl::StrCat("'", key, "' may list at most ",
                                            CountOf(max_items, item), ", got ", v->size()));
    }
    for (const json& s : *v) {
      if (!s.is_string()) return WrongType(body, key, kShape, s);
      out->push_back(s.get<std::string>());
    }
  } else {
    return WrongType(body, key, kShape, *v);
  }
  // Which string is empty, in words that still read right once dropk sample
  // names its flag for the field: "--prompt strings must not be empty" said
  // neither that the one prompt given was empty nor, in a list, which.
  for (size_t i = 0; i < out->size(); ++i) {
    if (!(*out)[i].empty()) continue;
    return InvalidParam(key, v->is_string()
                                 ? absl::StrCat("'", key, "' must not be an empty string")
                                 : absl::StrCat("'", key, "' item ", i,
                                                " is an empty string; each must have at least "
                                                "one character"));
  }
  return std::nullopt;
}

// The stop strings: up to CompletionRequest::kMaxStops, each of at most
// CompletionRequest::kMaxStopBytes. Without a length of their own, four
// stop strings could each be as long as the body (memory linear in it).
std::optional<ApiError> ReadStops(const Body& body, std::vector<std::string>* out) {
  if (auto e = ReadStrings(body, "stop", 0, CompletionRequest::kMaxStops, "string", out)) return e;
  const bool one = out->size() == 1 && Field(body, "stop")->is_string();
  for (size_t i = 0; i < out->size(); ++i) {
    const size_t bytes = (*out)[i].size();
    if (bytes <= CompletionRequest::kMaxStopBytes) continue;
    return InvalidParam(
        "stop", absl::StrCat(one ? std::string("'stop'") : absl::StrCat("'stop[", i, "]'"), " is ",
                             bytes, " bytes long (UTF-8); a stop string may have at most ",
                             CompletionRequest::kMaxStopBytes, " bytes"));
  }
  return std::nullopt;
}

// A list of token ids (integers; the vocabulary is checked at submission).
std::optional<ApiError> ReadTokenIds(const Body& body, const json& list,
                                     std::vector<uint64_t>* out) {
  if (list.empty()) return InvalidParam("prompt", "'prompt' token lists must not be empty");
  for (const json& id : list) {
    if (!IsInteger(body, "prompt", id)) {
      return WrongType(body, "prompt", "a token id (an integer)", id);
    }
    if (id.is_number_float() ? id.get<double>() < 0
                             : !id.is_number_unsigned() && id.get<int64_t>() < 0) {
      return InvalidParam("prompt", absl::StrCat("'prompt' token ids must be >= 0, got ",
                                                 Shown(body, "prompt", id)));
    }
    if (id.is_number_float()) {  // past 64 bits
      return InvalidParam("prompt", absl::StrCat("'prompt' token ids must be at most ",
                                                 std::numeric_limits<uint64_t>::max(), ", got ",
                                                 Shown(body, "prompt", id)));
    }
    // As sent: clamping 2^64 - 1 to INT64_MAX made its error quote a number
    // the client never sent.
    out->push_back(id.get<uint64_t>());
  }
  return std::nullopt;
}

// 'prompt' in OpenAI's four forms: a string, a list of strings, a list of
// token ids, or a list of lists of token ids (at most kMaxPrompts prompts).
std::optional<ApiError> ReadPrompts(const Body& body, CompletionRequest* r) {
  const json* v = Field(body, "prompt");
  if (v == nullptr) return InvalidParam("prompt", "'prompt' is required", "missing_required");
  const bool ids = v->is_array() && !v->empty() && (*v)[0].is_number();
  const bool id_lists = v->is_array() && !v->empty() && (*v)[0].is_array();
  if (!ids && !id_lists) {
    return ReadStrings(body, "prompt", 1, CompletionRequest::kMaxPrompts, "prompt", &r->prompts);
  }
  if (ids) {
    r->token_prompts.emplace_back();
    return ReadTokenIds(body, *v, &r->token_prompts.back());
  }
  if (v->size() > CompletionRequest::kMaxPrompts) {
    return InvalidParam("prompt",
                        absl::StrCat("'prompt' may list at most ", CompletionRequest::kMaxPrompts,
                                     " prompts, got ", v->size()));
  }
  for (const json& list : *v) {
    constexpr const char* kShape =
        "a string, a list of strings, a list of token ids or a list of such lists";
    if (!list.is_array()) return WrongType(body, "prompt", kShape, list);
    r->token_prompts.emplace_back();
    if (auto e = ReadTokenIds(body, list, &r->token_prompts.back())) return e;
  }
  return std::nullopt;
}

std::optional<ApiError> ReadBool(const Body& body, const char* key, bool* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return WrongType(body, key, "a boolean", *v);
  *out = v->get<bool>();
  return std::nullopt;
}

// OpenAI's stream_options: an object whose include_usage (a boolean)
// asks for a last chunk holding the request's usage. Only with "stream":
// true, as OpenAI has it. Its other members are let be, but for a
// misspelt include_usage (refused). Before, the field
// was ignored: a client that asked for usage got none, without a word.
std::optional<ApiError> ReadStreamOptions(const Body& body, bool stream, bool* include_usage) {
  const json* v = Field(body, "stream_options");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return WrongType(body, "stream_options", "an object", *v);
  if (!stream) {
    return InvalidParam("stream_options", "'stream_options' is only allowed when 'stream' is true");
  }
  // Its other members are let be, but not a misspelt include_usage (as
  // RefuseMisspelledFields does at the top level): {"include_usag": true}
  // streamed no usage, without a word.
  for (const auto& [key, value] : v->items()) {
    if (key == "include_usage" || ClosestName(key, {"include_usage"}).empty()) continue;
    return InvalidParam("stream_options",
                        absl::StrCat("'stream_options.", CutAndEscapeForMessage(key, 40),
                                     "' is not a field dropk-serve reads (did you mean "
                                     "'stream_options.include_usage'?); fix its name, or leave "
                                     "it out"),
                        "unknown_parameter");
  }
  const auto include = v->find("include_usage");
  if (include == v->end() || include->is_null()) return std::nullopt;
  if (!include->is_boolean()) {
    return InvalidParam("stream_options",
                        absl::StrCat("'stream_options.include_usage' must be a boolean, got ",
                                     CutAndEscapeForMessage(JsonText(*include), 40)),
                        "invalid_type");
  }
  *include_usage = include->get<bool>();
  return std::nullopt;
}

// A seed: any integer in [0, 2^64 - 1].
std::optional<ApiError> ReadSeed(const Body& body, std::optional<uint64_t>* out) {
  const json* v = Field(body, "seed");
  if (v == nullptr) return std::nullopt;
  constexpr const char* kExpected = "an integer in [0, 18446744073709551615]";
  if (!IsInteger(body, "seed", *v)) return WrongType(body, "seed", kExpected, *v);
  if (v->is_number_float() || (!v->is_number_unsigned() && v->get<int64_t>() < 0)) {
    return InvalidParam(
        "seed", absl::StrCat("'seed' must be ", kExpected, ", got ", Shown(body, "seed", *v)));
  }
  *out = v->get<uint64_t>();
  return std::nullopt;
}

// OpenAI's completion fields that dropk does not implement are refused when
// they would change the output, so that a client never gets text generated
// without what it asked for; their neutral values (what SDKs send by
// default: 0 penalties, echo false, best_of 1, an empty logit_bias, a null
// suffix) pass. best_of is read as an integer first, as max_tokens and n
// are (1.0 is not one: invalid_type, not unsupported_parameter), and must
// be >= n, as OpenAI has it: best_of 1 with `n` choices (the request's n)
// is a 400 naming both.
std::optional<ApiError> RefuseUnsupported(const Body& body, int64_t n) {
  const auto unsupported = [&body](const char* param, const json& v) {
    return InvalidParam(param,
                        absl::StrCat("'", param, "' is not supported by dropk-serve (got ",
                                     Shown(body, param, v), "); leave it out"),
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
  std::optional<int64_t> best_of;
  if (auto e = ReadInt(body, "best_of", 1, std::numeric_limits<int64_t>::max(), ">= 1", &best_of)) {
    return e;
  }
  if (best_of.has_value() && *best_of < n) {
    return InvalidParam("best_of", absl::StrCat("'best_of' (", *best_of, ") must be >= 'n' (", n,
                                                "): of best_of choices generated, the best n are "
                                                "returned; leave best_of out"));
  }
  if (best_of.has_value() && *best_of != 1) return unsupported("best_of", *Field(body, "best_of"));
  if (const json* v = Field(body, "suffix"); v != nullptr) return unsupported("suffix", *v);
  return std::nullopt;
}

}  // namespace

std::string ErrorBody(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return JsonText(json{{"error", err}});
}

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(std::string_view body) {
  if (NestedDeeperThan(body, kMaxJsonDepth)) {
    return InvalidParam("",
                        absl::StrCat("the request body nests arrays or objects deeper than ",
                                     kMaxJsonDepth, " levels"),
                        "invalid_json");
  }
  // A field given twice: nlohmann keeps the last, so {"max_tokens": 2,
  // "max_tokens": 3000} ran 3000 tokens, silently, where other parsers (and
  // a reader of the client's code) take another. Found in the same parse.
  // The same holds for stream_options.include_usage, the one field dropk
  // reads inside an object: given true then false, it was read as false.
  std::set<std::string> keys;
  std::string field;           // the top-level field being read
  bool include_usage = false;  // the object it holds gave include_usage
  std::string repeated;  // the first field dropk reads that is given twice, as named in errors
  std::string repeated_param;  // its top-level field
  const json::parser_callback_t note_repeated_fields = [&](int depth, json::parse_event_t event,
                                                           json& parsed) {
    if (event == json::parse_event_t::object_start && depth == 1) include_usage = false;
    if (event != json::parse_event_t::key || !repeated.empty()) return true;
    std::string key = parsed.get<std::string>();
    if (depth == 1) {
      field = key;
      if (!keys.insert(key).second && IsFieldRead(key)) repeated = repeated_param = key;
    } else if (depth == 2 && field == "stream_options" && key == "include_usage") {
      if (include_usage) {
        repeated = "stream_options.include_usage";
        repeated_param = field;
      }
      include_usage = true;
    }
    return true;
  };
  // A POST without a body (curl -X POST, no -d) read "not valid JSON (parse
  // error at line 1, column 1: ... unexpected end of input ...)".
  if (std::all_of(body.begin(), body.end(),
                  [](char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); })) {
    return InvalidParam("",
                        "the request body is empty; send a JSON object such as "
                        "{\"prompt\": \"...\"} (Content-Type: application/json)",
                        "invalid_json");
  }
  const json j =
      json::parse(body.begin(), body.end(), note_repeated_fields, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    if (std::vector<UnreadableNumber> numbers = FindUnreadableNumbers(body, IsFieldRead);
        !numbers.empty()) {
      return UnreadableNumberError(numbers);
    }
    return InvalidParam("",
                        absl::StrCat("the request body is not valid JSON (", WhyNotJson(body), ")"),
                        "invalid_json");
  }
  if (!j.is_object())
    return InvalidParam("", "the request body must be a JSON object", "invalid_type");
  if (!repeated.empty()) {
    return InvalidParam(
        repeated_param,
        absl::StrCat("'", repeated,
                     "' is given more than once; give each field once (JSON parsers "
                     "differ on which value counts)"),
        "invalid_json");
  }
  if (auto e = RefuseMisspelledFields(j)) return *e;
  if (HoldsFloatZero(j)) {
    if (std::vector<UnreadableNumber> numbers = FindUnreadableNumbers(body, IsFieldRead);
        !numbers.empty()) {
      return UnreadableNumberError(numbers);
    }
  }
  const Body request{j, body};
  CompletionRequest r;
  if (auto e = ReadPrompts(request, &r)) return *e;
  std::optional<int64_t> max_tokens, top_k, n, logprobs;
  if (auto e = ReadInt(request, "max_tokens", 1, kMaxTokensLimit,
                       absl::StrCat("in [1, ", kMaxTokensLimit, "]"), &max_tokens)) {
    return *e;
  }
  // top_k: -1 and 0 turn it off; a k past the vocabulary means all of it
  // (clamped to V later), so every larger integer is accepted.
  if (auto e = ReadInt(request, "top_k", -1, INT32_MAX, ">= 1, or 0 or -1 to disable", &top_k,
                       Above::kClamp)) {
    return *e;
  }
  if (auto e = ReadInt(request, "n", 1, CompletionRequest::kMaxN,
                       absl::StrCat("in [1, ", CompletionRequest::kMaxN, "]"), &n)) {
    return *e;
  }
  if (auto e = ReadInt(request, "logprobs", 0, Scheduler::kMaxTopLogprobs,
                       absl::StrCat("in [0, ", Scheduler::kMaxTopLogprobs, "]"), &logprobs)) {
    return *e;
  }
  std::optional<double> temperature, top_p;
  if (auto e = ReadNumber(
          request, "temperature", [](double t) { return t >= 0.0 && t <= kMaxTemperature; },
          absl::StrCat("in [0, ", kMaxTemperature, "] (0: greedy)"), &temperature)) {
    return *e;
  }
  if (auto e = ReadNumber(
          request, "top_p", [](double p) { return p > 0.0 && p <= 1.0; }, "in (0, 1]", &top_p)) {
    return *e;
  }
  if (auto e = ReadSeed(request, &r.seed)) return *e;
  if (auto e = ReadStops(request, &r.stop)) return *e;
  if (auto e = ReadBool(request, "stream", &r.stream)) return *e;
  if (auto e = ReadStreamOptions(request, r.stream, &r.include_usage)) return *e;
  if (const json* model = Field(request, "model"); model != nullptr) {
    if (!model->is_string()) return WrongType(request, "model", "a string", *model);
    r.model = model->get<std::string>();
  }
  if (auto e = RefuseUnsupported(request, n.value_or(1))) return *e;
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

}  // namespace dropk
