// Request parsing and validation: every bad input is a 400 naming its field.
#include <optional>
#include <string>
#include <tuple>
#include <variant>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sampler/completions.h"

namespace dropk {
namespace {

ApiError ErrorOf(const std::string& body) {
  auto r = ParseCompletionRequest(body);
  if (auto* e = std::get_if<ApiError>(&r)) return *e;
  ADD_FAILURE() << "accepted: " << body;
  return {};
}

CompletionRequest Parse(const std::string& body) {
  auto r = ParseCompletionRequest(body);
  if (auto* e = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << body << ": " << e->message;
    return {};
  }
  return std::get<CompletionRequest>(r);
}

TEST(CompletionsParseTest, AcceptsTheOpenAiShape) {
  const CompletionRequest r = Parse(R"({"model":"x","prompt":["ab","c"],"max_tokens":5,
      "temperature":0.5,"top_k":3,"top_p":0.9,"seed":42,"stop":["\n","!"],"n":2,
      "stream":true,"logprobs":3})");
  EXPECT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(*r.max_tokens, 5);
  EXPECT_FLOAT_EQ(r.temperature, 0.5f);
  EXPECT_EQ(r.top_k, 3);
  EXPECT_FLOAT_EQ(r.top_p, 0.9f);
  EXPECT_EQ(*r.seed, 42u);
  EXPECT_EQ(r.stop.size(), 2u);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.logprobs, 3);
}

// A body of half a million brackets (what fits in the 1 MiB body limit) used
// to overflow the stack while its error message was written, killing the
// service; now it is a 400. Brackets inside strings do not count.
TEST(CompletionsParseTest, DeeplyNestedBodiesAreA400NotACrash) {
  const int depth = 500000;
  const ApiError e =
      ErrorOf(R"({"prompt":)" + std::string(depth, '[') + std::string(depth, ']') + "}");
  EXPECT_EQ(e.code, "invalid_json");
  EXPECT_NE(e.message.find("deeper than 16 levels"), std::string::npos) << e.message;
  EXPECT_EQ(ErrorOf(std::string(depth, '{')).code, "invalid_json");
  const CompletionRequest ok =
      Parse(R"({"prompt":"[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{\"[["})");
  ASSERT_EQ(ok.prompts.size(), 1u);
  // 16 levels (the body and 15 arrays) are parsed; then 'stop' is refused.
  const ApiError at_limit =
      ErrorOf(R"({"prompt":"a","stop":)" + std::string(15, '[') + std::string(15, ']') + "}");
  EXPECT_EQ(at_limit.param, "stop") << at_limit.message;
}

// OpenAI fields dropk does not implement: refused, naming the field, when they
// would change the text; accepted at the neutral values SDKs send.
TEST(CompletionsParseTest, UnsupportedOpenAiFieldsAreRefusedUnlessNeutral) {
  for (const char* body :
       {R"({"prompt":"a","logit_bias":{"50256":-100}})", R"({"prompt":"a","presence_penalty":0.5})",
        R"({"prompt":"a","frequency_penalty":-1})", R"({"prompt":"a","echo":true})",
        R"({"prompt":"a","best_of":3})", R"({"prompt":"a","suffix":"end"})"}) {
    const ApiError e = ErrorOf(body);
    EXPECT_EQ(e.code, "unsupported_parameter") << body;
    EXPECT_FALSE(e.param.empty()) << body;
    EXPECT_NE(e.message.find(e.param), std::string::npos) << e.message;
  }
  Parse(R"({"prompt":"a","logit_bias":{},"presence_penalty":0,"frequency_penalty":0.0,
      "echo":false,"best_of":1,"suffix":null,"user":"me"})");
}

// best_of is an integer, as max_tokens and n are: 1.0, the neutral value
// written as a float, was refused as "not supported" while max_tokens 1.0
// is refused as not an integer; now both say it. best_of 1 with n 2 was
// accepted where OpenAI answers 400 (best_of must be >= n): it names both.
TEST(CompletionsParseTest, BestOfIsAnIntegerOfAtLeastN) {
  for (const char* field : {"max_tokens", "n", "best_of"}) {
    const ApiError e = ErrorOf(absl::StrCat(R"({"prompt":"a",")", field, R"(":1.0})"));
    EXPECT_EQ(std::tuple(e.status, e.param, e.code), std::tuple(400, field, "invalid_type"));
    EXPECT_NE(e.message.find(absl::StrCat("'", field, "' must be an integer")), std::string::npos)
        << e.message;
  }
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","best_of":1.0})").message,
            "'best_of' must be an integer >= 1, got 1.0");
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","best_of":0})").code, "invalid_value");
  for (const char* body :
       {R"({"prompt":"a","best_of":1,"n":2})", R"({"n":16,"prompt":"a","best_of":1})"}) {
    const ApiError e = ErrorOf(body);
    EXPECT_EQ(std::tuple(e.status, e.param, e.code), std::tuple(400, "best_of", "invalid_value"))
        << body;
    EXPECT_EQ(e.message.rfind("'best_of' (1) must be >= 'n' (", 0), 0u) << e.message;
  }
  // At least n, but not 1: what dropk does not implement.
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","best_of":2,"n":2})").code, "unsupported_parameter");
  EXPECT_EQ(Parse(R"({"prompt":"a","best_of":1,"n":1})").n, 1);
  EXPECT_EQ(Parse(R"({"prompt":"a","best_of":null,"n":2})").n, 2);
}

// An integer past 64 bits (2^64, -2^63 - 1) is a double to nlohmann: it was
// a 400 invalid_type ("must be an integer ..., got 18446744073709551616"),
// though it is one. It is invalid_value, as 99999999999 is, in every
// integer field; top_k, which clamps large values, takes it as "all", and
// best_of, past 1, is not supported.
TEST(CompletionsParseTest, AnIntegerPast64BitsIsAnInvalidValueNotAType) {
  for (const char* field : {"max_tokens", "n", "logprobs", "top_k", "seed", "best_of"}) {
    for (const char* number : {"18446744073709551616", "-9223372036854775809",
                               "-100000000000000000000000000000000000000000000000000"}) {
      const std::string body = absl::StrCat(R"({"prompt":"a",")", field, "\":", number, "}");
      if (std::string_view(field) == "top_k" && number[0] != '-') {
        EXPECT_EQ(Parse(body).top_k, INT32_MAX);
        continue;
      }
      if (std::string_view(field) == "best_of" && number[0] != '-') {
        EXPECT_EQ(ErrorOf(body).code, "unsupported_parameter");  // >= n and not 1
        continue;
      }
      const ApiError e = ErrorOf(body);
      EXPECT_EQ(std::tuple(e.status, e.param, e.code), std::tuple(400, field, "invalid_value"))
          << body << ": " << e.message;
      EXPECT_NE(e.message.find(absl::StrCat("got ", std::string(number).substr(0, 30))),
                std::string::npos)
          << e.message;
    }
  }
  for (const char* id : {"18446744073709551616", "-9223372036854775809"}) {
    const ApiError e = ErrorOf(absl::StrCat(R"({"prompt":[[1],[2,)", id, "]]}"));
    EXPECT_EQ(std::tuple(e.status, e.param, e.code), std::tuple(400, "prompt", "invalid_value"))
        << e.message;
  }
  EXPECT_EQ(ErrorOf(R"({"prompt":[18446744073709551616]})").message,
            "'prompt' token ids must be at most 18446744073709551615, got 18446744073709551616");
  // A float is still not an integer, past 64 bits or not.
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","max_tokens":1e20})").code, "invalid_type");
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","seed":18446744073709551616.0})").code, "invalid_type");
}

// OpenAI's stream_options was ignored: a client that asked for usage in a
// stream got none, without a word. include_usage is read (a boolean, only
// with "stream": true, as OpenAI has it); its other members are let be.
TEST(CompletionsParseTest, StreamOptionsIncludeUsageIsReadAndChecked) {
  EXPECT_TRUE(Parse(R"({"prompt":"a","stream":true,"stream_options":{"include_usage":true}})")
                  .include_usage);
  EXPECT_FALSE(Parse(R"({"prompt":"a","stream":true,"stream_options":{"include_usage":false}})")
                   .include_usage);
  EXPECT_FALSE(Parse(R"({"prompt":"a","stream":true,"stream_options":{}})").include_usage);
  EXPECT_FALSE(Parse(R"({"prompt":"a","stream_options":null})").include_usage);
  EXPECT_TRUE(Parse(R"({"prompt":"a","stream":true,
      "stream_options":{"include_usage":true,"continuous_usage_stats":false}})")
                  .include_usage);
  for (const char* body : {R"({"prompt":"a","stream_options":{"include_usage":true}})",
                           R"({"prompt":"a","stream":false,"stream_options":{}})",
                           R"({"prompt":"a","stream":true,"stream_options":true})",
                           R"({"prompt":"a","stream":true,"stream_options":{"include_usage":1}})",
                           R"({"prompt":"a","stream":true,"stream_options":{},
                               "stream_options":{"include_usage":true}})"}) {
    const ApiError e = ErrorOf(body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, "stream_options") << body;
    EXPECT_NE(e.message.find("stream_options"), std::string::npos) << e.message;
  }
}

// A misspelt include_usage inside stream_options is refused as a top-level
// misspelling is ({"include_usag": true} streamed no usage, without a
// word); a member not close to it is still let be.
TEST(CompletionsParseTest, StreamOptionsRefusesAMisspeltIncludeUsage) {
  for (const char* key : {"include_usag", "Include_Usage", "include-usage", "inclde_usage"}) {
    const ApiError e = ErrorOf(absl::StrCat(R"({"prompt":"a","stream":true,"stream_options":{")",
                                            key, R"(":true}})"));
    EXPECT_EQ(e.status, 400) << key;
    EXPECT_EQ(e.code, "unknown_parameter") << key;
    EXPECT_EQ(e.param, "stream_options") << key;
    EXPECT_EQ(e.message, absl::StrCat("'stream_options.", key,
                                      "' is not a field dropk-serve reads (did you mean "
                                      "'stream_options.include_usage'?); fix its name, or leave "
                                      "it out"));
  }
  EXPECT_FALSE(
      Parse(R"({"prompt":"a","stream":true,"stream_options":{"include_obfuscation":true}})")
          .include_usage);
}

TEST(CompletionsParseTest, TopKConventions) {
  EXPECT_EQ(Parse(R"({"prompt":"a"})").top_k, 0);
  EXPECT_EQ(Parse(R"({"prompt":"a","top_k":0})").top_k, 0);
  EXPECT_EQ(Parse(R"({"prompt":"a","top_k":-1})").top_k, 0);
  EXPECT_EQ(Parse(R"({"prompt":"a","top_k":100000000000})").top_k,
            INT32_MAX);  // clamped to V later
  const ApiError e = ErrorOf(R"({"prompt":"a","top_k":-2})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "top_k");
}

// A top_p in (0, 1] but below float's range rounded to 0, outside the
// parser's own contract (the sampler then kept the top token only by way
// of its rounding fallback). It becomes the smallest float nucleus.
TEST(CompletionsParseTest, TinyTopPStaysInsideItsRange) {
  const CompletionRequest r = Parse(R"({"prompt":"a","top_p":1e-50})");
  EXPECT_GT(r.top_p, 0.0f);
  EXPECT_LE(r.top_p, 1.0f);
}

TEST(CompletionsParseTest, NullMeansAbsent) {
  const CompletionRequest r = Parse(R"({"prompt":"a","seed":null,"stop":null,"max_tokens":null})");
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_FALSE(r.max_tokens.has_value());
}

// OpenAI's token-id forms of prompt: a list of integers is one prompt, a
// list of such lists several; ids are checked against the model later.
TEST(CompletionsParseTest, PromptsOfTokenIds) {
  const CompletionRequest one = Parse(R"({"prompt":[5,0,18446744073709551615]})");
  EXPECT_TRUE(one.prompts.empty());
  ASSERT_EQ(one.token_prompts.size(), 1u);
  EXPECT_EQ(one.token_prompts[0], (std::vector<uint64_t>{5, 0, UINT64_MAX}));
  const CompletionRequest two = Parse(R"({"prompt":[[1,2],[3]],"n":2})");
  ASSERT_EQ(two.token_prompts.size(), 2u);
  EXPECT_EQ(two.token_prompts[1], (std::vector<uint64_t>{3}));
  EXPECT_EQ(two.PromptCount(), 2u);
  std::string many = R"({"prompt":[)";
  for (int i = 0; i < CompletionRequest::kMaxPrompts + 1; ++i) many += i ? ",[1]" : "[1]";
  const auto too_many = ParseCompletionRequest(many + "]}");
  ASSERT_TRUE(std::holds_alternative<ApiError>(too_many));
  EXPECT_EQ(std::get<ApiError>(too_many).param, "prompt");
}

struct BadCase {
  const char* body;
  const char* param;
  const char* code;
};

TEST(CompletionsParseTest, EveryBadInputIsA400NamingItsField) {
  const BadCase cases[] = {
      {R"({"prompt":)", "", "invalid_json"},
      {R"(not json)", "", "invalid_json"},
      {"", "", "invalid_json"},
      {R"([1,2])", "", "invalid_type"},
      {R"({})", "prompt", "missing_required"},
      {R"({"prompt":5})", "prompt", "invalid_type"},
      {R"({"prompt":[1,"a"]})", "prompt", "invalid_type"},
      {R"({"prompt":[1,2.5]})", "prompt", "invalid_type"},
      {R"({"prompt":[1,-2]})", "prompt", "invalid_value"},
      {R"({"prompt":[[1],"a"]})", "prompt", "invalid_type"},
      {R"({"prompt":[[1],[]]})", "prompt", "invalid_value"},
      {R"({"prompt":[[1],[2,null]]})", "prompt", "invalid_type"},
      {R"({"prompt":[]})", "prompt", "invalid_value"},
      {R"({"prompt":""})", "prompt", "invalid_value"},
      {R"({"prompt":"a","max_tokens":-1})", "max_tokens", "invalid_value"},
      {R"({"prompt":"a","max_tokens":0})", "max_tokens", "invalid_value"},
      {R"({"prompt":"a","max_tokens":"5"})", "max_tokens", "invalid_type"},
      {R"({"prompt":"a","max_tokens":1.5})", "max_tokens", "invalid_type"},
      {R"({"prompt":"a","max_tokens":99999999999})", "max_tokens", "invalid_value"},
      {R"({"prompt":"a","temperature":-0.1})", "temperature", "invalid_value"},
      {R"({"prompt":"a","temperature":"hot"})", "temperature", "invalid_type"},
      {R"({"prompt":"a","top_p":0})", "top_p", "invalid_value"},
      {R"({"prompt":"a","top_p":1.5})", "top_p", "invalid_value"},
      {R"({"prompt":"a","top_p":-1})", "top_p", "invalid_value"},
      {R"({"prompt":"a","top_k":1.5})", "top_k", "invalid_type"},
      {R"({"prompt":"a","n":0})", "n", "invalid_value"},
      {R"({"prompt":"a","n":-3})", "n", "invalid_value"},
      {R"({"prompt":"a","n":1000})", "n", "invalid_value"},
      {R"({"prompt":"a","seed":-1})", "seed", "invalid_value"},
      {R"({"prompt":"a","seed":"x"})", "seed", "invalid_type"},
      {R"({"prompt":"a","stop":5})", "stop", "invalid_type"},
      {R"({"prompt":"a","stop":[""]})", "stop", "invalid_value"},
      {R"({"prompt":"a","stop":["a","b","c","d","e"]})", "stop", "invalid_value"},
      {R"({"prompt":"a","stream":"yes"})", "stream", "invalid_type"},
      {R"({"prompt":"a","logprobs":-1})", "logprobs", "invalid_value"},
      {R"({"prompt":"a","logprobs":21})", "logprobs", "invalid_value"},
      {R"({"prompt":"a","model":7})", "model", "invalid_type"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.body);
    const ApiError e = ErrorOf(c.body);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, c.param);
    EXPECT_EQ(e.code, c.code);
    EXPECT_FALSE(e.message.empty());
    // The body is the OpenAI error shape.
    const auto j = nlohmann::json::parse(ErrorBody(e));
    ASSERT_TRUE(j.contains("error"));
    for (const char* k : {"message", "type", "param", "code"}) EXPECT_TRUE(j["error"].contains(k));
  }
}

// A value of the wrong type is quoted as JSON text, which keeps a U+202E
// or a C1 control raw: the rest of the message showed backwards. Escaped.
TEST(CompletionsParseTest, AWrongValueIsQuotedEscaped) {
  EXPECT_EQ(ErrorOf("{\"prompt\":\"a\",\"model\":[\"x\u202Ey\u0085\"]}").message,
            "'model' must be a string, got [\"x\\u202ey\\u0085\"]");
  EXPECT_EQ(ErrorOf("{\"prompt\":\"a\",\"stream\":true,"
                    "\"stream_options\":{\"include_usage\":\"\u2066\"}}")
                .message,
            "'stream_options.include_usage' must be a boolean, got \"\\u2066\"");
}

// An empty string was "'prompt' strings must not be empty", which named no
// string of a list and, with dropk sample naming its flag for the field,
// read "--prompt strings must not be empty".
TEST(CompletionsParseTest, AnEmptyStringIsNamedByItsPlace) {
  EXPECT_EQ(ErrorOf(R"({"prompt":""})").message, "'prompt' must not be an empty string");
  EXPECT_EQ(ErrorOf(R"({"prompt":["a","",""]})").message,
            "'prompt' item 1 is an empty string; each must have at least one character");
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","stop":""})").message, "'stop' must not be an empty string");
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","stop":["x",""]})").message,
            "'stop' item 1 is an empty string; each must have at least one character");
}

// 'model' is kept as sent, for CompletionJob::Start to compare with the
// served model; left out or null, it is absent.
TEST(CompletionsParseTest, ModelIsKeptAsSent) {
  EXPECT_EQ(Parse(R"({"prompt":"a","model":"dropk-step-00000020"})").model,
            std::optional<std::string>("dropk-step-00000020"));
  EXPECT_EQ(Parse(R"({"prompt":"a"})").model, std::nullopt);
  EXPECT_EQ(Parse(R"({"prompt":"a","model":null})").model, std::nullopt);
}

// Every numeric field's refusal names the field, the allowed range and the
// value sent (issue 9: temperature 1e7 was refused as "must be >= 0").
TEST(CompletionsParseTest, RangeErrorsNameTheFieldTheRangeAndTheValue) {
  struct Case {
    const char* body;
    const char* param;
    std::vector<std::string> words;  // all must appear in the message
  };
  const Case cases[] = {
      {R"({"prompt":"a","temperature":1e7})",
       "temperature",
       {"'temperature'", "[0, 1000000]", "got 1e7"}},  // as written
      {R"({"prompt":"a","temperature":-0.5})",
       "temperature",
       {"'temperature'", "[0, 1000000]", "-0.5"}},
      {R"({"prompt":"a","temperature":"hot"})",
       "temperature",
       {"'temperature'", "a number", "\"hot\""}},
      {R"({"prompt":"a","max_tokens":0})", "max_tokens", {"'max_tokens'", "[1, 8192]", "got 0"}},
      {R"({"prompt":"a","max_tokens":1.5})", "max_tokens", {"'max_tokens'", "[1, 8192]", "1.5"}},
      {R"({"prompt":"a","max_tokens":18446744073709551615})",
       "max_tokens",
       {"[1, 8192]", "18446744073709551615"}},
      {R"({"prompt":"a","top_p":1.5})", "top_p", {"'top_p'", "(0, 1]", "1.5"}},
      {R"({"prompt":"a","top_p":0})", "top_p", {"'top_p'", "(0, 1]", "got 0"}},
      {R"({"prompt":"a","top_k":-2})", "top_k", {"'top_k'", ">= 1, or 0 or -1", "-2"}},
      {R"({"prompt":"a","n":17})", "n", {"'n'", "[1, 16]", "17"}},
      {R"({"prompt":"a","logprobs":21})", "logprobs", {"'logprobs'", "[0, 20]", "21"}},
      {R"({"prompt":"a","seed":-1})", "seed", {"'seed'", "[0, 18446744073709551615]", "-1"}},
      {R"({"prompt":"a","seed":1.5})", "seed", {"'seed'", "an integer", "1.5"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    const ApiError e = ErrorOf(c.body);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, c.param);
    for (const std::string& w : c.words) {
      EXPECT_NE(e.message.find(w), std::string::npos) << "'" << w << "' not in: " << e.message;
    }
  }
  // The largest allowed values are accepted.
  EXPECT_FLOAT_EQ(Parse(R"({"prompt":"a","temperature":1000000})").temperature, 1e6f);
  EXPECT_EQ(*Parse(R"({"prompt":"a","seed":18446744073709551615})").seed, UINT64_MAX);
  EXPECT_TRUE(Parse(R"({"prompt":"a","stop":[]})").stop.empty());
}

// An integer past 64 bits (a seed of 2^64) is a double to nlohmann, and the
// error quoted it as 1.8446744073709552e+19, a number the client never
// wrote; so did "1e3" (as 1000.0). Each is quoted as written, in whichever
// field and list it sits.
TEST(CompletionsParseTest, ANumberReadAsADoubleIsQuotedAsWritten) {
  const struct {
    const char* body;
    const char* param;
    const char* message;
  } cases[] = {
      {R"({"prompt":"a","seed":18446744073709551616})", "seed",
       "'seed' must be an integer in [0, 18446744073709551615], got 18446744073709551616"},
      {R"({"prompt":"a","seed":-9223372036854775809})", "seed",
       "'seed' must be an integer in [0, 18446744073709551615], got -9223372036854775809"},
      {R"({"prompt":"a","seed":1e3})", "seed",
       "'seed' must be an integer in [0, 18446744073709551615], got 1e3"},
      {R"({"prompt":"a","n":99999999999999999999})", "n",
       "'n' must be an integer in [1, 16], got 99999999999999999999"},
      // The same double elsewhere in the body is not the one quoted.
      {R"({"top_p":1e3,"prompt":"a","max_tokens":1000.0})", "max_tokens",
       "'max_tokens' must be an integer in [1, 8192], got 1000.0"},
      {R"({"prompt":[[1],[2,18446744073709551616]]})", "prompt",
       "'prompt' token ids must be at most 18446744073709551615, got 18446744073709551616"},
      {R"({"prompt":"a","best_of":20000000000000000000})", "best_of",
       "'best_of' is not supported by dropk-serve (got 20000000000000000000); leave it out"},
  };
  for (const auto& c : cases) {
    const ApiError e = ErrorOf(c.body);
    EXPECT_EQ(std::tuple(e.status, e.param, e.message), std::tuple(400, c.param, c.message))
        << c.body;
  }
}

// An empty list of prompts read "'prompt' must list at least 1 prompts".
TEST(CompletionsParseTest, ListCountsAreWordedInTheRightNumber) {
  EXPECT_EQ(ErrorOf(R"({"prompt":[]})").message, "'prompt' must list at least 1 prompt");
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","stop":["a","b","c","d","e"]})").message,
            "'stop' may list at most 4 strings, got 5");
}

// A stop string had no length of its own: four of them could each be as
// long as the body, and matching costs a size_t per byte. Each may have
// kMaxStopBytes bytes of UTF-8 (é is two); a longer one is a 400
// invalid_value naming it and the limit.
TEST(CompletionsParseTest, AStopStringLongerThanTheLimitIsRefusedNamingIt) {
  const std::string at_limit(1024, 's');
  EXPECT_EQ(Parse(R"({"prompt":"a","stop":")" + at_limit + R"("})").stop,
            std::vector<std::string>{at_limit});
  EXPECT_EQ(Parse(R"({"prompt":"a","stop":["x",")" + at_limit + R"("]})").stop.size(), 2u);
  const struct {
    std::string stop;
    std::string message;
  } cases[] = {
      {'"' + std::string(1025, 's') + '"',
       "'stop' is 1025 bytes long (UTF-8); a stop string may have at most 1024 bytes"},
      {R"(["x","y",")" + std::string(2000, 's') + R"(","z"])",
       "'stop[2]' is 2000 bytes long (UTF-8); a stop string may have at most 1024 bytes"},
      // 513 characters, each \u00e9 two bytes of UTF-8.
      {"[\"" +
           [] {
             std::string e;
             for (int i = 0; i < 513; ++i) e += "\\u00e9";
             return e;
           }() +
           "\"]",
       "'stop[0]' is 1026 bytes long (UTF-8); a stop string may have at most 1024 bytes"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.stop.substr(0, 40));
    const ApiError e = ErrorOf(R"({"prompt":"a","stop":)" + c.stop + "}");
    EXPECT_EQ(std::tuple(e.status, e.param, e.code, e.message),
              std::tuple(400, std::string("stop"), std::string("invalid_value"), c.message));
  }
}

// A POST without a body (curl -X POST, no -d) read "not valid JSON (parse
// error at line 1, column 1: ... unexpected end of input ...)".
TEST(CompletionsParseTest, AnEmptyBodySaysSo) {
  for (const std::string body : {"", " \r\n\t"}) {
    const ApiError e = ErrorOf(body);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "invalid_json");
    EXPECT_EQ(e.message,
              "the request body is empty; send a JSON object such as {\"prompt\": \"...\"} "
              "(Content-Type: application/json)");
  }
}

// Invalid JSON was refused as only "not valid JSON"; the message now says
// where and why (a lone surrogate, bytes that are not UTF-8, a NaN), and
// does not echo the client's text back.
TEST(CompletionsParseTest, InvalidJsonSaysWhereAndWhy) {
  struct Case {
    std::string body;
    std::vector<std::string> words;  // all must appear in the message
  };
  const std::string long_text(100000, 'x');
  const Case cases[] = {
      {R"({"prompt":"a\ud800b"})", {"column 19", "surrogate"}},
      {"{\"prompt\":\"a\xff\"}", {"column 13", "UTF-8"}},
      {R"({"prompt":"a","temperature":NaN})", {"column 29"}},
      {"{\"prompt\":\"" + long_text + "\xfe\"}", {"UTF-8"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body.substr(0, 40));
    const ApiError e = ErrorOf(c.body);
    EXPECT_EQ(e.code, "invalid_json");
    EXPECT_EQ(e.message.rfind("the request body is not valid JSON (parse error at line 1, ", 0), 0u)
        << e.message;
    for (const std::string& w : c.words) {
      EXPECT_NE(e.message.find(w), std::string::npos) << "'" << w << "' not in: " << e.message;
    }
    EXPECT_LT(e.message.size(), 300u) << e.message;
  }
}

// A number past double's range is not JSON dropk can read: explaining why
// threw nlohmann's out_of_range, which nothing caught, and the connection
// was dropped without an answer (found by tools/fuzz's completion fuzzer).
TEST(CompletionsParseTest, ANumberPastDoublesRangeIsA400) {
  const std::string bodies[] = {R"({"prompt":"a","seed":1e999})", R"({"p":18446744073791e615})",
                                R"({"prompt":"a","top_p":-)" + std::string(100000, '9') + "}"};
  for (const std::string& body : bodies) {
    SCOPED_TRACE(body.substr(0, 40));
    const ApiError e = ErrorOf(body);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "invalid_json");
    EXPECT_NE(e.message.find("number overflow"), std::string::npos) << e.message;
    EXPECT_LT(e.message.size(), 300u) << e.message;
  }
}

// nlohmann reads a number below double's range as 0: top_p 1e-400 was
// refused as "'top_p' must be a number in (0, 1], got 0", a number the
// client never sent (and 1e-400 is in (0, 1]). It is quoted as written.
TEST(CompletionsParseTest, ANumberBelowDoublesRangeIsQuotedAsWritten) {
  struct Case {
    std::string body, param, quoted;
  };
  const Case cases[] = {
      {R"({"prompt":"a","top_p":1e-400})", "top_p", "'top_p': 1e-400 is too small for a double"},
      {R"({"prompt":"a","temperature":-1E-400})", "temperature",
       "'temperature': -1E-400 is too small for a double"},
      {R"({"prompt":"a","n":1e-400})", "n", "'n': 1e-400 is too small for a double"},
      {R"({"prompt":[[1,2e-999]]})", "prompt", "'prompt': 2e-999 is too small for a double"},
      {R"({"prompt":"a","presence_penalty":0.5e-330})", "presence_penalty",
       "'presence_penalty': 0.5e-330 is too small"},
      // The nonzero digit lies past the 40 characters the message shows.
      {R"({"prompt":"a","top_p":0.0000000000000000000000000000000000000001e-300})", "top_p",
       "'top_p': 0.00000000000000000000000000000000000000... is too small for a double"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    const ApiError e = ErrorOf(c.body);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, c.param);
    EXPECT_EQ(e.code, "invalid_value");
    EXPECT_EQ(e.message.rfind(c.quoted, 0), 0u) << e.message;
    EXPECT_NE(e.message.find("it would be read as 0"), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find("got 0"), std::string::npos) << e.message;
  }
  // Zeros however written, numbers a double holds, and fields dropk does
  // not read are not refused for it.
  EXPECT_EQ(Parse(R"({"prompt":"a","temperature":0e-400})").temperature, 0.0f);
  EXPECT_EQ(Parse(R"({"prompt":"a","temperature":-0.0,"presence_penalty":0.0})").temperature, 0.0f);
  EXPECT_GT(Parse(R"({"prompt":"a","top_p":1e-300})").top_p, 0.0f);
  EXPECT_EQ(Parse(R"({"prompt":"a","user_score":1e-400,"n":2})").n, 2);
}

// 1e400 is JSON that nlohmann cannot read (past double's range): the
// error said "not valid JSON" and named no field. It names the field and
// quotes the number.
TEST(CompletionsParseTest, ANumberPastDoublesRangeNamesItsField) {
  const ApiError e = ErrorOf(R"({"prompt":"a","temperature":1e400})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "temperature");
  EXPECT_EQ(e.message.rfind("'temperature': 1e400 is past double's range (number overflow", 0), 0u)
      << e.message;
  const ApiError nested = ErrorOf(R"({"prompt":[[1,-1e999]],"n":1})");
  EXPECT_EQ(nested.param, "prompt");
  EXPECT_EQ(nested.message.rfind("'prompt': -1e999 is past double's range", 0), 0u)
      << nested.message;
}

// An underflow written before an overflow hid it: the walk stopped at the
// underflow, which did not explain the failed parse, and the error fell back
// to "not valid JSON (number overflow parsing '1e400')", naming no field.
TEST(CompletionsParseTest, AnUnderflowBeforeAnOverflowHidesNeither) {
  const ApiError e = ErrorOf(R"({"prompt":"a","temperature":1e-400,"top_p":1e400})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.code, "invalid_json");
  EXPECT_EQ(e.param, "top_p") << "param names the overflow, which broke the parse";
  EXPECT_EQ(e.message.rfind("'temperature': 1e-400 is too small for a double", 0), 0u) << e.message;
  EXPECT_NE(e.message.find("; and 'top_p': 1e400 is past double's range"), std::string::npos)
      << e.message;
  // An underflow in a field dropk ignores is not named; the overflow is.
  const ApiError ignored = ErrorOf(R"({"prompt":"a","user_score":1e-400,"n":1e400})");
  EXPECT_EQ(ignored.param, "n");
  EXPECT_EQ(ignored.message.rfind("'n': 1e400 is past double's range", 0), 0u) << ignored.message;
  // A body broken for another reason after an underflow is not JSON.
  const ApiError broken = ErrorOf(R"({"prompt":"a","top_p":1e-400,)");
  EXPECT_EQ(broken.param, "");
  EXPECT_EQ(broken.message.rfind("the request body is not valid JSON", 0), 0u) << broken.message;
}

// nlohmann keeps the last of a field given twice: {"max_tokens":2,
// "max_tokens":3000} ran 3000 tokens without a word, where other parsers
// take the first. A field dropk reads may be given once.
TEST(CompletionsParseTest, AFieldGivenTwiceIsRefusedNamingIt) {
  const ApiError e = ErrorOf(R"({"prompt":"a","max_tokens":2,"n":1,"max_tokens":3000})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_EQ(e.code, "invalid_json");
  EXPECT_EQ(e.message,
            "'max_tokens' is given more than once; give each field once (JSON parsers differ on "
            "which value counts)");
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","prompt":"b"})").param, "prompt");
  // Nested objects, and fields dropk ignores, are not its concern.
  EXPECT_EQ(Parse(R"({"prompt":"a","user":"x","user":"y","logit_bias":{}})").prompts.size(), 1u);
  EXPECT_EQ(Parse(R"({"prompt":"a","metadata":{"k":1,"k":2}})").prompts.size(), 1u);
}

// {"max_token": 50} ran the default 16 tokens and {"temprature": 0}
// sampled at temperature 1, without a word: a field this close to one dropk
// reads is a misspelling, and refused naming both. Fields far from every
// one dropk reads (a client's metadata) are still let be.
TEST(CompletionsParseTest, AMisspelledFieldIsRefusedNamingTheFieldMeant) {
  ApiError e = ErrorOf(R"({"prompt":"a","max_token":50})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "max_token");
  EXPECT_EQ(e.code, "unknown_parameter");
  EXPECT_EQ(e.message,
            "'max_token' is not a field dropk-serve reads (did you mean 'max_tokens'?); fix its "
            "name, or leave it out");
  EXPECT_NE(ErrorOf(R"({"prompt":"a","temprature":0})").message.find("did you mean 'temperature'"),
            std::string::npos);
  EXPECT_EQ(ErrorOf(R"({"prompt":"a","top-k":5})").param, "top-k");
  EXPECT_EQ(ErrorOf(R"({"Prompt":"a","prompt":"b"})").param, "Prompt");
  EXPECT_NE(ErrorOf(R"({"prompt":"a","N":2})").message.find("did you mean 'n'?"),
            std::string::npos);
  EXPECT_EQ(Parse(R"({"prompt":"a","user":"x","metadata":{"k":1},"min_p":0.1})").prompts.size(),
            1u);
}

// stream_options.include_usage given true, then false, was read as false
// without a word, as a top-level field given twice once was. Refused alike,
// naming it; the same key in another object, or in another field, is not
// a repeat.
TEST(CompletionsParseTest, IncludeUsageGivenTwiceIsRefusedNamingIt) {
  const ApiError e =
      ErrorOf(R"({"prompt":"a","stream":true,)"
              R"("stream_options":{"include_usage":true,"x":1,"include_usage":false}})");
  EXPECT_EQ(e.param, "stream_options");
  EXPECT_EQ(e.code, "invalid_json");
  EXPECT_EQ(e.message,
            "'stream_options.include_usage' is given more than once; give each field once (JSON "
            "parsers differ on which value counts)");
  EXPECT_TRUE(Parse(R"({"prompt":"a","stream":true,"metadata":{"include_usage":1},)"
                    R"("stream_options":{"include_usage":true},"user":{"include_usage":2}})")
                  .include_usage);
  EXPECT_TRUE(Parse(R"({"prompt":"a","stream":true,"stream_options":{"include_usage":true,)"
                    R"("x":{"include_usage":false}}})")
                  .include_usage);
}

// The token budget (--max-request-tokens, checked by CompletionJob::Start)
// bounds a non-streaming answer's top logprobs; parsing once refused, on a
// fixed 262144 of them, 4 prompts x n 4 x 4096 tokens x logprobs 5, which
// is within the default budget of 65536 tokens.
TEST(CompletionsParseTest, TopLogprobsWithinTheTokenBudgetAreAccepted) {
  const CompletionRequest r =
      Parse(R"({"prompt":["a","b","c","d"],"n":4,"max_tokens":4096,"logprobs":5})");
  EXPECT_EQ(r.logprobs, 5);
  EXPECT_EQ(r.PromptCount() * r.n * *r.max_tokens, 65536u);
  EXPECT_EQ(Parse(R"({"prompt":"a","max_tokens":8192,"logprobs":20})").logprobs, 20);
}

TEST(CompletionsParseTest, DeepOrHugeJsonDoesNotCrash) {
  std::string deep(100000, '[');
  EXPECT_EQ(ErrorOf(deep).status, 400);
  std::string nested = std::string(5000, '[') + std::string(5000, ']');
  EXPECT_EQ(ErrorOf(nested).status, 400);
}

}  // namespace
}  // namespace dropk
