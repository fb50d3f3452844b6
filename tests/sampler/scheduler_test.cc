// Generation through the scheduler and the completions job, in process:
// reproducibility alone vs. among 15 others, top-k semantics via logprobs,
// queue limits, stop strings and streaming.
#include <algorithm>
#include <atomic>
#include <future>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "gtest/gtest.h"
#include "model/generate.h"
#include "model/gpt.h"
#include "nlohmann/json.hpp"
#include "sampler/completions.h"
#include "sampler/scheduler.h"
#include "test_util.h"

namespace dropk {
namespace {

using json = nlohmann::json;

struct Service {
  explicit Service(SchedulerOptions options = {}, int block_size = 64) {
    auto s = Scheduler::Create(options, &metrics);
    EXPECT_TRUE(s.ok());
    scheduler = *std::move(s);
    EXPECT_TRUE(scheduler->SetModel(testing::TestSnapshot(3, block_size)).ok());
  }
  ServiceMetrics metrics;
  std::unique_ptr<Scheduler> scheduler;
};

json Complete(Scheduler* s, const std::string& body) {
  auto parsed = ParseCompletionRequest(body);
  EXPECT_TRUE(std::holds_alternative<CompletionRequest>(parsed)) << body;
  auto out = RunCompletion(std::get<CompletionRequest>(parsed), s);
  if (auto* e = std::get_if<ApiError>(&out)) {
    ADD_FAILURE() << e->message;
    return json();
  }
  return json::parse(std::get<std::string>(out));
}

TEST(SchedulerTest, SameSeedSameTextAndLogprobsAloneOrAmong15Others) {
  Service svc({.max_batch = 16, .num_threads = 2});
  const std::string req =
      R"({"prompt":"To be","max_tokens":40,"temperature":0.9,"top_k":20,"seed":1234,"logprobs":3})";
  const json alone = Complete(svc.scheduler.get(), req);
  // Now the same request among 15 concurrent others with other prompts and
  // seeds, joining at different times.
  std::vector<std::future<json>> others;
  for (int i = 0; i < 15; ++i) {
    others.push_back(std::async(std::launch::async, [&svc, i] {
      std::this_thread::sleep_for(std::chrono::milliseconds(i % 4));
      return Complete(svc.scheduler.get(), json{{"prompt", std::string(1 + i % 7, 'a' + i)},
                                                {"max_tokens", 30 + i},
                                                {"seed", i},
                                                {"logprobs", 2}}
                                               .dump());
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const json crowd = Complete(svc.scheduler.get(), req);
  for (auto& f : others) f.get();
  ASSERT_EQ(alone["choices"][0]["text"], crowd["choices"][0]["text"]);
  // Bit for bit: the logprobs are the same floats (JSON round-trips floats exactly).
  EXPECT_EQ(alone["choices"][0]["logprobs"], crowd["choices"][0]["logprobs"]);
  EXPECT_EQ(alone["seed"], 1234);
  EXPECT_EQ(alone["usage"]["completion_tokens"], 40);
}

TEST(SchedulerTest, TopK1EqualsGreedy) {
  Service svc;
  const json greedy =
      Complete(svc.scheduler.get(), R"({"prompt":"Hello","max_tokens":30,"temperature":0})");
  const json k1 =
      Complete(svc.scheduler.get(), R"({"prompt":"Hello","max_tokens":30,"top_k":1,"seed":99})");
  EXPECT_EQ(greedy["choices"][0]["text"], k1["choices"][0]["text"]);
}

TEST(SchedulerTest, NoSampledTokenOutsideTopK) {
  Service svc;
  for (int k : {1, 2, 5}) {
    const json r = Complete(svc.scheduler.get(), json{{"prompt", "abc"},
                                                      {"max_tokens", 50},
                                                      {"top_k", k},
                                                      {"temperature", 1.5},
                                                      {"logprobs", k},
                                                      {"seed", 7 + k}}
                                                     .dump());
    const json& lp = r["choices"][0]["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), 50u);
    for (size_t i = 0; i < lp["tokens"].size(); ++i) {
      ASSERT_EQ(lp["top_logprobs"][i].size(), static_cast<size_t>(k));
      EXPECT_TRUE(lp["top_logprobs"][i].contains(lp["tokens"][i].get<std::string>()))
          << "k=" << k << " token " << i << " " << lp["tokens"][i];
    }
  }
}

TEST(SchedulerTest, UnseededRequestsReturnTheDrawnSeedWhichReproduces) {
  Service svc;
  const json a = Complete(svc.scheduler.get(), R"({"prompt":"Hi","max_tokens":20})");
  ASSERT_TRUE(a["seed"].is_number_unsigned());
  const json b = Complete(svc.scheduler.get(),
                          json{{"prompt", "Hi"}, {"max_tokens", 20}, {"seed", a["seed"]}}.dump());
  EXPECT_EQ(a["choices"][0]["text"], b["choices"][0]["text"]);
}

TEST(SchedulerTest, ChoiceJUsesSeedPlusJ) {
  Service svc;
  const json many =
      Complete(svc.scheduler.get(), R"({"prompt":["ab","cd"],"max_tokens":12,"n":3,"seed":50})");
  ASSERT_EQ(many["choices"].size(), 6u);
  const json one = Complete(svc.scheduler.get(), R"({"prompt":"cd","max_tokens":12,"seed":52})");
  EXPECT_EQ(many["choices"][5]["text"], one["choices"][0]["text"]);
  EXPECT_EQ(many["choices"][5]["index"], 5);
}

TEST(SchedulerTest, StopStringCutsTheText) {
  Service svc;
  const json free_run =
      Complete(svc.scheduler.get(), R"({"prompt":"abc","max_tokens":40,"seed":5})");
  const std::string text = free_run["choices"][0]["text"];
  ASSERT_GE(text.size(), 10u);
  const std::string stop = text.substr(6, 2);
  const json stopped =
      Complete(svc.scheduler.get(),
               json{{"prompt", "abc"}, {"max_tokens", 40}, {"seed", 5}, {"stop", stop}}.dump());
  EXPECT_EQ(stopped["choices"][0]["text"], text.substr(0, text.find(stop)));
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(free_run["choices"][0]["finish_reason"], "length");
}

// A logprobs object of no tokens, to which a stream's chunks are appended.
json NoLogprobs() {
  return {{"tokens", json::array()},
          {"token_logprobs", json::array()},
          {"top_logprobs", json::array()},
          {"text_offset", json::array()}};
}

// Appends the entries of a chunk's logprobs object to `all`'s.
void AppendLogprobs(const json& chunk, json* all) {
  for (auto& [key, entries] : all->items()) {
    for (const json& entry : chunk[key]) entries.push_back(entry);
  }
}

// The tokens a logprobs object reports, joined: for the char-level test
// model, each token's text is one character of the answer's text.
std::string JoinedTokens(const json& logprobs) {
  std::string joined;
  for (const json& token : logprobs["tokens"]) joined += token.get<std::string>();
  return joined;
}

// The answer the stop-string tests cut: 40 tokens, one character each, with
// their logprobs.
constexpr char kUncutBody[] = R"({"prompt":"abc","max_tokens":40,"seed":5,"logprobs":2})";

// kUncutBody with `stop`.
std::string CutBody(const json& stop) {
  json body = json::parse(kUncutBody);
  body["stop"] = stop;
  return body.dump();
}

// Expects the logprobs object `lp` to report the first `count` tokens of
// `all`, every field.
void ExpectFirstTokens(const json& lp, const json& all, size_t count) {
  for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
    ASSERT_EQ(lp[key].size(), count) << key;
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(lp[key][i], all[key][i]) << key << " " << i;
  }
}

// A stream's first choice, its chunks joined.
struct JoinedStream {
  std::string text;
  json logprobs = NoLogprobs();
  std::string text_before_the_last_chunk;  // the one with a finish_reason
};

// Runs `body` as a stream and joins its chunks, expecting no chunk to send
// a token's logprobs ahead of its text.
JoinedStream RunStream(Scheduler* s, const std::string& body) {
  auto parsed = std::get<CompletionRequest>(ParseCompletionRequest(body));
  parsed.stream = true;
  std::vector<std::string> events;
  EXPECT_TRUE(std::holds_alternative<std::string>(
      RunCompletion(parsed, s, [&events](const std::string& e) { events.push_back(e); })));
  JoinedStream out;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i].substr(6))["choices"][0];
    if (!chunk["finish_reason"].is_null()) out.text_before_the_last_chunk = out.text;
    out.text += chunk["text"].get<std::string>();
    AppendLogprobs(chunk["logprobs"], &out.logprobs);
    EXPECT_EQ(JoinedTokens(out.logprobs), out.text) << "after event " << i;
  }
  return out;
}

// The logprobs reported the tokens of a matched stop string while the text
// left it out: tokens, token_logprobs, top_logprobs and text_offset ran past
// the text. They now report the tokens of the text returned, and a stream
// sends a token's logprobs with its text: the token that began a possible
// stop string was sent (in a chunk of no text) before the stop string
// matched, and stayed.
TEST(SchedulerTest, LogprobsCoverExactlyTheTextReturnedWhenAStopStringMatches) {
  Service svc;
  const json free_run = Complete(svc.scheduler.get(), kUncutBody);
  const std::string text = free_run["choices"][0]["text"];
  const json& all = free_run["choices"][0]["logprobs"];
  ASSERT_EQ(JoinedTokens(all), text);
  ASSERT_GE(text.size(), 12u);
  for (const size_t at : {size_t{0}, size_t{6}}) {
    const std::string stop = text.substr(at, 3);
    const size_t cut = text.find(stop);
    SCOPED_TRACE("stop '" + stop + "'");
    const std::string body = CutBody(stop);
    const json stopped = Complete(svc.scheduler.get(), body);
    const json& choice = stopped["choices"][0];
    ASSERT_EQ(choice["text"], text.substr(0, cut));
    ASSERT_EQ(choice["finish_reason"], "stop");
    const json& lp = choice["logprobs"];
    EXPECT_EQ(JoinedTokens(lp), text.substr(0, cut));
    ExpectFirstTokens(lp, all, cut);
    // Usage still counts every token generated, the stop string's included.
    EXPECT_EQ(stopped["usage"]["completion_tokens"], cut + 3);

    const JoinedStream streamed = RunStream(svc.scheduler.get(), body);
    EXPECT_EQ(streamed.text, text.substr(0, cut));
    EXPECT_EQ(streamed.logprobs, lp);
  }
}

// How many bytes of `text` a stream may have sent: all but its longest end
// that is a proper prefix of one of `stops`. The definition, checked
// naively.
size_t SettledLength(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t begin = 0; begin < text.size(); ++begin) {
    const std::string end = text.substr(begin);
    for (const std::string& stop : stops) {
      if (end.size() < stop.size() && stop.compare(0, end.size(), end) == 0) return begin;
    }
  }
  return text.size();
}

// A stream held back the last (longest stop string's length - 1) bytes of
// its text, so with a stop string of 1000 characters a 40-token answer sent
// nothing until it ended. It holds back only the end of the text that could
// still begin a stop string. Text and logprobs are as before: the
// non-streaming answer's, and the tokens of the text up to a matched stop
// string, whether a long stop string never matches, begins to match and
// then does not, or matches partway.
TEST(SchedulerTest, AStreamHoldsBackOnlyTextThatCouldBeginAStopString) {
  Service svc;
  const json free_run = Complete(svc.scheduler.get(), kUncutBody);
  const std::string text = free_run["choices"][0]["text"];
  ASSERT_EQ(text.size(), 40u) << text;  // one character a token
  const std::string filler(997, '~');   // '~' is not in the model's vocabulary
  const struct {
    std::vector<std::string> stop;
    size_t cut;  // where the text ends
  } cases[] = {
      {{"~~~" + filler}, 40},
      // Begins to match at 6 for 3 characters, then does not.
      {{text.substr(6, 3) + filler, "~"}, 40},
      // A long stop string that matches at 6, and one that never does.
      {{"~~~" + filler, text.substr(6, 30)}, 6},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("stop '" + c.stop[0].substr(0, 20) + "...' and " +
                 std::to_string(c.stop.size() - 1) + " more");
    const std::string body = CutBody(c.stop);
    const json plain = Complete(svc.scheduler.get(), body);
    const json& choice = plain["choices"][0];
    ASSERT_EQ(choice["text"], text.substr(0, c.cut));
    ExpectFirstTokens(choice["logprobs"], free_run["choices"][0]["logprobs"], c.cut);
    const JoinedStream streamed = RunStream(svc.scheduler.get(), body);
    EXPECT_EQ(streamed.text, choice["text"]);
    EXPECT_EQ(streamed.logprobs, choice["logprobs"]);
    // Before its last chunk the stream had sent all the text but the end
    // that could begin a stop string, as it stood after the last token that
    // did not complete one.
    const size_t tokens = plain["usage"]["completion_tokens"];
    const size_t settled = SettledLength(text.substr(0, c.cut < 40 ? tokens - 1 : 40), c.stop);
    EXPECT_EQ(streamed.text_before_the_last_chunk, text.substr(0, std::min(settled, c.cut)));
    EXPECT_GT(settled, 0u);
  }
}

TEST(SchedulerTest, StreamConcatenatesToTheSameTextAndEndsWithDone) {
  Service svc;
  const std::string body = R"({"prompt":"abc","max_tokens":30,"seed":11,"stop":"zz","logprobs":2})";
  const json plain = Complete(svc.scheduler.get(), body);
  auto parsed = std::get<CompletionRequest>(ParseCompletionRequest(body));
  parsed.stream = true;
  std::vector<std::string> events;
  auto out = RunCompletion(parsed, svc.scheduler.get(),
                           [&events](const std::string& e) { events.push_back(e); });
  ASSERT_TRUE(std::holds_alternative<std::string>(out));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "data: [DONE]\n\n");
  std::string text;
  json logprobs = NoLogprobs();
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    ASSERT_EQ(events[i].rfind("data: ", 0), 0u);
    const json choice = json::parse(events[i].substr(6))["choices"][0];
    text += choice["text"].get<std::string>();
    // Each token's logprobs come once, in order, in some chunk.
    AppendLogprobs(choice["logprobs"], &logprobs);
  }
  EXPECT_EQ(text, plain["choices"][0]["text"]);
  EXPECT_EQ(logprobs, plain["choices"][0]["logprobs"]);
}

// stream_options.include_usage: every chunk has "usage": null and one more,
// before data: [DONE], has no choices and the usage the same request's
// non-streaming answer reports (prompts counted once, each choice's tokens,
// the one that met a stop string included). Before, a stream had no usage.
TEST(SchedulerTest, StreamWithIncludeUsageEndsWithTheUsageOfTheWholeAnswer) {
  Service svc;
  const json plain =
      Complete(svc.scheduler.get(), R"({"prompt":["abc","de"],"n":2,"max_tokens":12,"seed":4,
          "stop":"e"})");
  auto parsed = std::get<CompletionRequest>(ParseCompletionRequest(
      R"({"prompt":["abc","de"],"n":2,"max_tokens":12,"seed":4,"stop":"e","stream":true,
          "stream_options":{"include_usage":true}})"));
  std::vector<std::string> events;
  auto out = RunCompletion(parsed, svc.scheduler.get(),
                           [&events](const std::string& e) { events.push_back(e); });
  ASSERT_TRUE(std::holds_alternative<std::string>(out));
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "data: [DONE]\n\n");
  const std::string& last = events[events.size() - 2];
  ASSERT_EQ(last.rfind("data: ", 0), 0u) << last;
  const json usage_chunk = json::parse(last.substr(6));
  EXPECT_EQ(usage_chunk["choices"], json::array()) << last;
  EXPECT_EQ(usage_chunk["usage"], plain["usage"]) << last;
  EXPECT_EQ(usage_chunk["id"], json::parse(events[0].substr(6))["id"]);
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const json chunk = json::parse(events[i].substr(6));
    ASSERT_TRUE(chunk.contains("usage")) << events[i];
    EXPECT_TRUE(chunk["usage"].is_null()) << events[i];
  }
  // Without include_usage, no chunk has the field, as before.
  parsed.include_usage = false;
  events.clear();
  RunCompletion(parsed, svc.scheduler.get(),
                [&events](const std::string& e) { events.push_back(e); });
  for (const std::string& e : events) EXPECT_EQ(e.find("usage"), std::string::npos) << e;
}

// The code points of UTF-8 `text`, one string each.
std::vector<std::string> CodePoints(const std::string& text) {
  std::vector<std::string> out;
  for (const char ch : text) {
    if ((static_cast<unsigned char>(ch) & 0xC0) != 0x80) out.emplace_back();
    out.back() += ch;
  }
  return out;
}

// A scheduler serving a model of random weights with `tokenizer`.
std::unique_ptr<Scheduler> ServingRandomModel(const TextTokenizer& tokenizer,
                                              ServiceMetrics* metrics) {
  auto scheduler = Scheduler::Create({}, metrics);
  EXPECT_TRUE(scheduler.ok());
  const GptConfig config = testing::TinyConfig(tokenizer.vocab_size());
  auto snap =
      MakeSnapshot(config, tokenizer, testing::RandomParams(config, 5), 1, "dropk-step-1", "");
  EXPECT_TRUE(snap.ok()) << snap.status();
  EXPECT_TRUE((*scheduler)->SetModel(*snap).ok());
  return *std::move(scheduler);
}

// text_offset is OpenAI's character position of each token in the text,
// what a client slices the text with; it was the byte offset, so after an
// "é" every offset was one past its token (text[offset:] in Python skipped
// characters). Streamed and not, with a model whose tokens are characters
// of one to four bytes.
TEST(SchedulerTest, TextOffsetsCountCharactersNotBytes) {
  ServiceMetrics metrics;
  auto tok = TextTokenizer::FromCorpus(Tokenizer::CHAR, "ab \u00e9\u65e5\U0001F600");
  ASSERT_TRUE(tok.ok());
  const std::unique_ptr<Scheduler> scheduler = ServingRandomModel(*tok, &metrics);
  const std::string body = R"({"prompt":"a","max_tokens":40,"seed":2,"logprobs":0})";
  const json plain = Complete(scheduler.get(), body);
  const std::string text = plain["choices"][0]["text"];
  const json& lp = plain["choices"][0]["logprobs"];
  const std::vector<std::string> chars = CodePoints(text);
  ASSERT_GT(text.size(), chars.size()) << "no character of two or more bytes: " << text;
  size_t expected = 0;
  for (size_t i = 0; i < lp["tokens"].size(); ++i) {
    ASSERT_EQ(lp["text_offset"][i], expected) << i << " in " << text;
    ASSERT_LT(expected, chars.size());
    EXPECT_EQ(chars[expected], lp["tokens"][i]) << i;  // the character the offset names
    ++expected;
  }
  auto parsed = std::get<CompletionRequest>(ParseCompletionRequest(body));
  parsed.stream = true;
  json streamed = json::array();
  RunCompletion(parsed, scheduler.get(), [&streamed](const std::string& e) {
    if (e == "data: [DONE]\n\n") return;
    const json chunk = json::parse(e.substr(6));
    for (const json& offset : chunk["choices"][0]["logprobs"]["text_offset"]) {
      streamed.push_back(offset);
    }
  });
  EXPECT_EQ(streamed, lp["text_offset"]);
}

// With a byte-level model, tokens end inside characters and bytes that are
// not UTF-8 reach the client as U+FFFD: each token that is whole characters
// still stands at its offset in the text the client reads.
TEST(SchedulerTest, TextOffsetsOfAByteLevelModelNameEachTokensPlace) {
  ServiceMetrics metrics;
  auto tok = TextTokenizer::FromCorpus(Tokenizer::BYTE, "");
  ASSERT_TRUE(tok.ok());
  const std::unique_ptr<Scheduler> scheduler = ServingRandomModel(*tok, &metrics);
  const json r = Complete(scheduler.get(), R"({"prompt":"a","max_tokens":200,"seed":2,"logprobs":0,
      "temperature":2})");
  const std::string text = r["choices"][0]["text"];
  const json& lp = r["choices"][0]["logprobs"];
  const std::vector<std::string> chars = CodePoints(text);
  ASSERT_GT(text.size(), chars.size()) << "no character of two or more bytes: " << text;
  size_t whole_tokens = 0, previous = 0;
  for (size_t i = 0; i < lp["tokens"].size(); ++i) {
    const size_t offset = lp["text_offset"][i];
    EXPECT_GE(offset, previous) << i;
    previous = offset;
    ASSERT_LE(offset, chars.size()) << i;
    const std::string token = lp["tokens"][i];
    if (token.rfind("bytes:", 0) == 0) continue;  // part of a character, or not UTF-8
    ++whole_tokens;
    ASSERT_LT(offset, chars.size()) << i;
    EXPECT_EQ(chars[offset], token) << i << " at " << offset << " in " << text;
  }
  EXPECT_GT(whole_tokens, 20u);
}

// A character outside the vocabulary that would reorder or hide the error
// line (U+202E, a C1 control) was quoted raw: "character '\xE2\x80\xAE'
// (U+202E) at byte offset 1 ..." showed the rest of the line backwards.
// It is quoted escaped; a visible character is still quoted as it is.
TEST(SchedulerTest, APromptCharacterThatHidesOrMovesTextIsQuotedEscaped) {
  Service svc({}, 16);
  for (const auto& [prompt, quoted] :
       {std::pair<std::string, std::string>{"a\u202Eb", "'\\u202e' (U+202E) at byte offset 1 "},
        {"a\u0085", "'\\u0085' (U+0085) at byte offset 1 "},
        {"a\u00e9", "'\u00e9' (U+00E9) at byte offset 1 "}}) {
    auto refused = RunCompletion(
        std::get<CompletionRequest>(ParseCompletionRequest(json{{"prompt", prompt}}.dump())),
        svc.scheduler.get());
    ASSERT_TRUE(std::holds_alternative<ApiError>(refused));
    EXPECT_EQ(std::get<ApiError>(refused).code, "invalid_prompt");
    EXPECT_NE(std::get<ApiError>(refused).message.find("prompt 0: character " + quoted),
              std::string::npos)
        << std::get<ApiError>(refused).message;
  }
}

// A prompt given as token ids generates what the same prompt given as text
// does (same seed, same ids); ids outside the vocabulary and token prompts
// that fill the context are request errors naming the prompt.
TEST(SchedulerTest, TokenIdPromptsMatchTheirTextAndAreChecked) {
  Service svc({}, 16);
  const std::shared_ptr<const ModelSnapshot> snapshot = testing::TestSnapshot(3, 16);
  const TextTokenizer& tok = snapshot->tokenizer;
  const absl::StatusOr<std::vector<int32_t>> ids = tok.Encode("abcd");
  ASSERT_TRUE(ids.ok());
  const json text = Complete(svc.scheduler.get(),
                             R"({"prompt":"abcd","max_tokens":12,"seed":9,"logprobs":2})");
  const json token = Complete(
      svc.scheduler.get(),
      json{{"prompt", *ids}, {"max_tokens", 12}, {"seed", 9}, {"logprobs", 2}}.dump());
  EXPECT_EQ(token["choices"][0]["text"], text["choices"][0]["text"]);
  EXPECT_EQ(token["choices"][0]["logprobs"], text["choices"][0]["logprobs"]);
  EXPECT_EQ(token["usage"]["prompt_tokens"], 4);

  auto run = [&svc](const std::string& body) {
    return RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(body)),
                         svc.scheduler.get());
  };
  const int V = tok.vocab_size();
  auto outside = run(json{{"prompt", json::array({json::array({1}), json::array({2, V})})}}.dump());
  ASSERT_TRUE(std::holds_alternative<ApiError>(outside));
  EXPECT_EQ(std::get<ApiError>(outside).code, "invalid_prompt");
  EXPECT_NE(std::get<ApiError>(outside).message.find("prompt 1: token id " + std::to_string(V) +
                                                     " at position 1"),
            std::string::npos)
      << std::get<ApiError>(outside).message;
  // The id is quoted as sent: 2^64 - 1 was quoted as 9223372036854775807.
  auto huge = run(R"({"prompt":[1,18446744073709551615]})");
  ASSERT_TRUE(std::holds_alternative<ApiError>(huge));
  EXPECT_NE(std::get<ApiError>(huge).message.find(
                "prompt 0: token id 18446744073709551615 at position 1"),
            std::string::npos)
      << std::get<ApiError>(huge).message;
  auto too_long = run(json{{"prompt", std::vector<int>(16, 1)}}.dump());
  ASSERT_TRUE(std::holds_alternative<ApiError>(too_long));
  EXPECT_EQ(std::get<ApiError>(too_long).code, "context_length_exceeded");
}

TEST(SchedulerTest, ContextLimitsAreRequestErrors) {
  Service svc({}, 16);
  auto run = [&svc](const std::string& body) {
    return RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(body)),
                         svc.scheduler.get());
  };
  auto too_long = run(json{{"prompt", std::string(16, 'a')}}.dump());
  ASSERT_TRUE(std::holds_alternative<ApiError>(too_long));
  EXPECT_EQ(std::get<ApiError>(too_long).code, "context_length_exceeded");
  auto bad_char = run(R"({"prompt":"\u00e9"})");
  ASSERT_TRUE(std::holds_alternative<ApiError>(bad_char));
  EXPECT_EQ(std::get<ApiError>(bad_char).param, "prompt");
  // Past the context the window slides: prompt + max_tokens may exceed it.
  auto past_context = run(R"({"prompt":"abcd","max_tokens":40})");
  ASSERT_TRUE(std::holds_alternative<std::string>(past_context));
  EXPECT_EQ(json::parse(std::get<std::string>(past_context))["usage"]["completion_tokens"], 40);
  // Absent max_tokens is 16, as OpenAI's default.
  auto by_default = run(R"({"prompt":"abcdefghijkl"})");
  ASSERT_TRUE(std::holds_alternative<std::string>(by_default));
  EXPECT_EQ(json::parse(std::get<std::string>(by_default))["usage"]["completion_tokens"], 16);
}

TEST(SchedulerTest, PastTheContextTheWindowSlidesAsTheReferenceGenerator) {
  // Greedy decoding far past a 16-token context: the service (KV cache,
  // window re-prefilled once full) and model/generate.h's reference (the
  // whole cropped window re-run per token) pick the same tokens.
  const int T = 16;
  Service svc({}, T);
  std::shared_ptr<const ModelSnapshot> snap = svc.scheduler->CurrentModel()->shared_snapshot();
  auto served = RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(
                                  R"({"prompt":"abc","max_tokens":50,"temperature":0})")),
                              svc.scheduler.get());
  ASSERT_TRUE(std::holds_alternative<std::string>(served));
  const std::string text = json::parse(std::get<std::string>(served))["choices"][0]["text"];

  std::unique_ptr<Kernels> kernels = MakeKernels(Device::kCpu, 1).value();
  std::unique_ptr<Gpt> gpt = Gpt::Create(snap->config, 1, kernels.get()).value();
  kernels->CopyToDevice(gpt->params(), snap->params.data(), snap->params.size() * sizeof(float));
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  const std::vector<int32_t> prompt = snap->tokenizer.Encode("abc").value();
  const std::vector<int32_t> ids = Generate(*gpt, prompt, 50, greedy).value();
  EXPECT_EQ(text, snap->tokenizer.Decode(ids));
}

// Drops a job's output (the jobs here are only there to fill the service).
class IgnoringListener final : public CompletionListener {
 public:
  void OnEvent(std::string) override {}
  void OnDone(CompletionResult) override {}
};

// Waits (bounded: 30 s) until `gauge` reads `value`.
void AwaitGauge(const std::atomic<int64_t>& gauge, int64_t value) {
  for (int i = 0; i < 3000 && gauge.load() != value; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(gauge.load(), value);
}

TEST(SchedulerTest, FullQueueIs429) {
  Service svc({.max_batch = 1, .max_queue = 2});
  Scheduler* s = svc.scheduler.get();
  auto listener = std::make_shared<IgnoringListener>();
  const auto start = [&](const char* body) {
    const auto req = std::get<CompletionRequest>(ParseCompletionRequest(body));
    return CompletionJob::Start(req, s->CurrentModel(), s, listener);
  };
  // A long request holds the only slot; two sequences fill the queue behind it.
  ASSERT_FALSE(std::holds_alternative<ApiError>(start(R"({"prompt":"a","max_tokens":8192})")));
  AwaitGauge(svc.metrics.running_batch, 1);
  ASSERT_FALSE(std::holds_alternative<ApiError>(start(R"({"prompt":"a","n":2})")));
  const auto full = start(R"({"prompt":"a"})");
  ASSERT_TRUE(std::holds_alternative<ApiError>(full));
  EXPECT_EQ(std::get<ApiError>(full).status, 429);
  EXPECT_EQ(std::get<ApiError>(full).code, "queue_full");
}

// A streamed request cut short (the service draining on SIGTERM, a Cancel)
// ended in `data: [DONE]` with no chunk carrying a finish_reason, so a client
// could not tell it from a complete answer. Its last chunk says "cancelled".
TEST(SchedulerTest, CancelledStreamEndsWithAChunkSayingCancelled) {
  Service svc({.max_batch = 1});
  class Events final : public CompletionListener {
   public:
    void OnEvent(std::string event) override { events.push_back(std::move(event)); }
    void OnDone(CompletionResult) override { done.set_value(); }
    std::vector<std::string> events;  // scheduler thread until done
    std::promise<void> done;
  };
  auto listener = std::make_shared<Events>();
  const auto req = std::get<CompletionRequest>(
      ParseCompletionRequest(R"({"prompt":"a","max_tokens":8192,"n":2,"stream":true})"));
  auto started = CompletionJob::Start(req, svc.scheduler->CurrentModel(), svc.scheduler.get(),
                                      listener);
  ASSERT_FALSE(std::holds_alternative<ApiError>(started));
  std::get<std::shared_ptr<CompletionJob>>(started)->Cancel();
  ASSERT_EQ(listener->done.get_future().wait_for(std::chrono::seconds(30)),
            std::future_status::ready);
  const std::vector<std::string>& events = listener->events;
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "data: [DONE]\n\n");
  std::set<int> cancelled;  // the choices whose last chunk says so
  for (const std::string& e : events) {
    if (e == "data: [DONE]\n\n") continue;
    const json chunk = json::parse(e.substr(6));
    if (chunk["choices"][0]["finish_reason"] == "cancelled") {
      cancelled.insert(chunk["choices"][0]["index"].get<int>());
    }
  }
  EXPECT_EQ(cancelled, (std::set<int>{0, 1}));
}

// Sequences whose client left while they waited kept their queue places
// until their turn came, which behind a long running request is when it
// ends: meanwhile every new request was a 429. They now leave the queue at
// the next decode step, while the long request still runs.
TEST(SchedulerTest, CancelledWaitingSequencesFreeTheQueueAtOnce) {
  Service svc({.max_batch = 1, .max_queue = 2});
  Scheduler* s = svc.scheduler.get();
  class Done final : public CompletionListener {
   public:
    void OnEvent(std::string) override {}
    void OnDone(CompletionResult) override {
      done = true;
      promise.set_value();
    }
    std::atomic<bool> done{false};
    std::promise<void> promise;
  };
  const auto start = [&](const char* body, std::shared_ptr<CompletionListener> listener) {
    const auto req = std::get<CompletionRequest>(ParseCompletionRequest(body));
    return CompletionJob::Start(req, s->CurrentModel(), s, std::move(listener));
  };
  auto running = std::make_shared<Done>();
  ASSERT_FALSE(std::holds_alternative<ApiError>(
      start(R"({"prompt":"a","max_tokens":8192})", running)));
  AwaitGauge(svc.metrics.running_batch, 1);
  auto waiting = std::make_shared<Done>();
  auto job = start(R"({"prompt":"a","n":2})", waiting);  // fills the queue
  ASSERT_FALSE(std::holds_alternative<ApiError>(job));
  std::get<std::shared_ptr<CompletionJob>>(job)->Cancel();  // its client leaves
  ASSERT_EQ(waiting->promise.get_future().wait_for(std::chrono::seconds(30)),
            std::future_status::ready);
  EXPECT_FALSE(running->done) << "the waiting job was dropped only when the running one ended";
  EXPECT_EQ(svc.metrics.queue_length.load(), 0);
  EXPECT_FALSE(std::holds_alternative<ApiError>(
      start(R"({"prompt":"a"})", std::make_shared<IgnoringListener>())));
}

// A request with more sequences than the whole queue holds could never be
// queued; it was a 429 with Retry-After, which clients retry forever. It is
// a 400 naming n and --max-queue, even with the queue empty.
TEST(SchedulerTest, MoreSequencesThanTheQueueHoldsIs400NotA429) {
  Service svc({.max_batch = 1, .max_queue = 4});
  auto req = std::get<CompletionRequest>(ParseCompletionRequest(R"({"prompt":["a","b"],"n":3})"));
  auto out = RunCompletion(req, svc.scheduler.get());
  ASSERT_TRUE(std::holds_alternative<ApiError>(out));
  const ApiError& e = std::get<ApiError>(out);
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.code, "too_many_sequences");
  EXPECT_EQ(e.param, "n");
  EXPECT_NE(e.message.find("6 sequences (2 prompts x n 3); at most 4"), std::string::npos)
      << e.message;
  EXPECT_NE(e.message.find("--max-queue"), std::string::npos) << e.message;
  // One prompt is "1 prompt" (it was "1 prompts").
  auto one = std::get<CompletionRequest>(ParseCompletionRequest(R"({"prompt":"a","n":5})"));
  auto one_out = RunCompletion(one, svc.scheduler.get());
  ASSERT_TRUE(std::holds_alternative<ApiError>(one_out));
  EXPECT_NE(std::get<ApiError>(one_out).message.find("5 sequences (1 prompt x n 5); at most 4"),
            std::string::npos)
      << std::get<ApiError>(one_out).message;
  // The queue's own size still fits.
  req.n = 2;
  EXPECT_TRUE(std::holds_alternative<std::string>(RunCompletion(req, svc.scheduler.get())));
}

TEST(SchedulerTest, NoModelIs503AndShutdownIs503) {
  ServiceMetrics metrics;
  auto s = Scheduler::Create({}, &metrics);
  ASSERT_TRUE(s.ok());
  auto req = std::get<CompletionRequest>(ParseCompletionRequest(R"({"prompt":"a"})"));
  auto out = RunCompletion(req, s->get());
  ASSERT_TRUE(std::holds_alternative<ApiError>(out));
  EXPECT_EQ(std::get<ApiError>(out).status, 503);
  ASSERT_TRUE((*s)->SetModel(testing::TestSnapshot(3, 64)).ok());
  (*s)->Shutdown(std::chrono::milliseconds(100));
  out = RunCompletion(req, s->get());
  ASSERT_TRUE(std::holds_alternative<ApiError>(out));
  EXPECT_EQ(std::get<ApiError>(out).status, 503);
}

// A request still waiting when the service stops ran not at all: it was a
// 200 of empty choices saying "cancelled", which a client reads as the
// model's answer. It is now a 503 it can retry; a request cut short while
// running still gets its partial text.
TEST(SchedulerTest, RequestStillQueuedAtShutdownIs503) {
  Service svc({.max_batch = 1});
  auto running = std::async(std::launch::async, [&svc] {
    return RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(
                             R"({"prompt":"a","max_tokens":8192,"seed":1})")),
                         svc.scheduler.get());
  });
  AwaitGauge(svc.metrics.running_batch, 1);
  auto queued = std::async(std::launch::async, [&svc] {
    return RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(
                             R"({"prompt":"b","max_tokens":4,"n":2,"seed":2})")),
                         svc.scheduler.get());
  });
  AwaitGauge(svc.metrics.queue_length, 2);
  svc.scheduler->Shutdown(std::chrono::milliseconds(0));

  const CompletionResult queued_out = queued.get();
  ASSERT_TRUE(std::holds_alternative<ApiError>(queued_out));
  EXPECT_EQ(std::get<ApiError>(queued_out).status, 503);
  EXPECT_EQ(std::get<ApiError>(queued_out).code, "shutting_down");

  const CompletionResult running_out = running.get();
  ASSERT_TRUE(std::holds_alternative<std::string>(running_out));
  const json body = json::parse(std::get<std::string>(running_out));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "cancelled");
  EXPECT_GT(body["usage"]["completion_tokens"].get<int>(), 0);
}

// A reload while requests run: running ones finish on their weights, new
// ones get the new step, none fails.
TEST(SchedulerTest, SetModelUnderTrafficFailsNothing) {
  Service svc({.max_batch = 4});
  std::atomic<bool> go{true};
  std::atomic<int> failures{0}, done{0};
  std::set<int64_t> steps;
  std::mutex mu;
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      while (go) {
        auto req = std::get<CompletionRequest>(
            ParseCompletionRequest(json{{"prompt", "ab"}, {"max_tokens", 20}, {"seed", c}}.dump()));
        auto out = RunCompletion(req, svc.scheduler.get());
        if (!std::holds_alternative<std::string>(out)) {
          ++failures;
          continue;
        }
        std::lock_guard<std::mutex> lock(mu);
        steps.insert(json::parse(std::get<std::string>(out))["checkpoint_step"].get<int64_t>());
        ++done;
      }
    });
  }
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    ASSERT_TRUE(svc.scheduler->SetModel(testing::TestSnapshot(10 + i, 64, 2, 32, 200 + i)).ok());
  }
  // Until a request has been served by the last model (bounded: 60 s; a
  // fixed pause was too short on a busy machine).
  for (int i = 0; i < 6000; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (steps.count(203)) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  go = false;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(done, 0);
  EXPECT_TRUE(steps.count(203)) << "the last model served no request";
}

// Fairness (issue 9): a request with many long sequences holds at most
// half the batch, and waiting sequences join round-robin by request, so a
// short request submitted after it finishes while it is still running.
// Before, the queue was FIFO by sequence: the short one waited for all 16.
TEST(SchedulerTest, ManySequencesOfOneRequestDoNotStarveAnother) {
  Service svc({.max_batch = 4, .num_threads = 1, .max_request_tokens = 1 << 20});
  auto flood = std::async(std::launch::async, [&svc] {
    return RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(
                             R"({"prompt":"ROMEO:","n":16,"max_tokens":4000,"seed":1})")),
                         svc.scheduler.get());
  });
  for (int i = 0; i < 6000 && svc.metrics.running_batch.load() == 0; ++i) {  // bounded: 60 s
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(svc.metrics.running_batch.load(), 0);
  EXPECT_LE(svc.metrics.running_batch.load(), 2) << "one request held more than half the batch";
  const json shorty = Complete(svc.scheduler.get(), R"({"prompt":"ab","max_tokens":8,"seed":2})");
  EXPECT_EQ(shorty["usage"]["completion_tokens"], 8);
  EXPECT_EQ(flood.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the short request was answered only after the flood";
  svc.scheduler->Shutdown(std::chrono::milliseconds(0));  // cancels the flood
  flood.get();
}

TEST(SchedulerTest, RequestsJoinRoundRobinAndRespectTheCap) {
  // One slot per request at most: two requests of 3 sequences each take
  // turns, and their outputs are still what each gives alone.
  Service svc({.max_batch = 2, .max_running_per_request = 1});
  const std::string a = R"({"prompt":"ab","n":3,"max_tokens":10,"seed":3})";
  const std::string b = R"({"prompt":"cd","n":3,"max_tokens":10,"seed":4})";
  const json a_alone = Complete(svc.scheduler.get(), a);
  const json b_alone = Complete(svc.scheduler.get(), b);
  auto fa = std::async(std::launch::async, [&] { return Complete(svc.scheduler.get(), a); });
  auto fb = std::async(std::launch::async, [&] { return Complete(svc.scheduler.get(), b); });
  EXPECT_EQ(fa.get()["choices"], a_alone["choices"]);
  EXPECT_EQ(fb.get()["choices"], b_alone["choices"]);
}

TEST(SchedulerTest, CostBudgetIs400NamingTheLimitAndTheValue) {
  Service svc;  // the default budget: 65536 tokens per request
  std::string prompts;
  for (int i = 0; i < 16; ++i) prompts += std::string(i ? "," : "") + "\"ROMEO:\"";
  auto out = RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(
                               "{\"prompt\":[" + prompts + "],\"n\":16,\"max_tokens\":8192}")),
                           svc.scheduler.get());
  ASSERT_TRUE(std::holds_alternative<ApiError>(out));
  const ApiError& e = std::get<ApiError>(out);
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.code, "request_too_costly");
  EXPECT_NE(e.message.find("2097152"), std::string::npos) << e.message;  // 16 x 16 x 8192
  EXPECT_NE(e.message.find("65536"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("--max-request-tokens"), std::string::npos) << e.message;
  // At the limit is admitted, one token over is not.
  Service small({.max_request_tokens = 100});
  auto at_limit = RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(
                                    R"({"prompt":["ab","cd"],"n":2,"max_tokens":25})")),
                                small.scheduler.get());
  EXPECT_TRUE(std::holds_alternative<std::string>(at_limit));
  auto over = RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(
                                R"({"prompt":["ab","cd"],"n":3,"max_tokens":17})")),
                            small.scheduler.get());
  ASSERT_TRUE(std::holds_alternative<ApiError>(over));
  EXPECT_NE(std::get<ApiError>(over).message.find("102"), std::string::npos);
}

// The token budget bounds the top logprobs a non-streaming answer holds:
// a fixed cap of 262144 refused 4 prompts x n 4 x 4096 tokens x logprobs 5,
// which is within the default budget of 65536 tokens. Every choice comes
// back whole, and past the budget the request is refused as costly.
TEST(SchedulerTest, TopLogprobsWithinTheTokenBudgetAreAnswered) {
  Service svc({.max_batch = 16}, /*block_size=*/1024);
  // 16 x 1,024 tokens x 20 alternatives: past the old fixed 262,144.
  const json r = Complete(svc.scheduler.get(),
                          R"({"prompt":["a","b","c","d"],"n":4,"max_tokens":1024,"logprobs":20,)"
                          R"("seed":3})");
  ASSERT_EQ(r["choices"].size(), 16u);
  for (const json& choice : r["choices"]) {
    const json& lp = choice["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), 1024u);
    ASSERT_EQ(lp["top_logprobs"].size(), 1024u);
    EXPECT_EQ(lp["top_logprobs"][1023].size(), 20u);
    EXPECT_EQ(lp["text_offset"][1023], choice["text"].get<std::string>().size() -
                                           lp["tokens"][1023].get<std::string>().size());
  }
  Service small({.max_request_tokens = 100});
  auto over = RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(
                                R"({"prompt":["ab","cd"],"n":2,"max_tokens":26,"logprobs":20})")),
                            small.scheduler.get());
  ASSERT_TRUE(std::holds_alternative<ApiError>(over));
  EXPECT_EQ(std::get<ApiError>(over).code, "request_too_costly");
  EXPECT_EQ(std::get<ApiError>(over).param, "max_tokens");
}

// A budget raised past the default does not raise what a non-streaming
// answer holds: 9 prompts x 8,192 tokens x 20 alternatives (past 65,536 x
// 20) is refused, param logprobs, before any decoding, with the way out.
TEST(SchedulerTest, HeldTopLogprobsStayBoundedWhenTheBudgetIsRaised) {
  Service big({.max_request_tokens = int64_t{1} << 30});
  const std::string body =
      R"({"prompt":["a","b","c","d","e","f","g","h","i"],"max_tokens":8192,"logprobs":20})";
  auto held =
      RunCompletion(std::get<CompletionRequest>(ParseCompletionRequest(body)), big.scheduler.get());
  ASSERT_TRUE(std::holds_alternative<ApiError>(held));
  EXPECT_EQ(std::get<ApiError>(held).code, "request_too_costly");
  EXPECT_EQ(std::get<ApiError>(held).param, "logprobs");
  EXPECT_NE(std::get<ApiError>(held).message.find("\"stream\": true"), std::string::npos)
      << std::get<ApiError>(held).message;
}

// With several sequences past the context and others decoding, at most
// max_window_refills_per_step windows are re-run per step; a sequence that
// waits a step still draws exactly the tokens it draws alone.
TEST(SchedulerTest, CappedWindowRefillsKeepTheTokensExact) {
  const int T = 16;
  Service svc({.max_batch = 8, .max_window_refills_per_step = 1}, T);
  const std::string sliding =
      R"({"prompt":"abc","n":4,"max_tokens":60,"temperature":0.9,"seed":5})";
  const json alone = Complete(svc.scheduler.get(), sliding);
  auto crowd =
      std::async(std::launch::async, [&] { return Complete(svc.scheduler.get(), sliding); });
  for (int i = 0; i < 20; ++i) {  // short requests that never fill the window
    const json r = Complete(svc.scheduler.get(),
                            json{{"prompt", "xy"}, {"max_tokens", 6}, {"seed", i}}.dump());
    EXPECT_EQ(r["usage"]["completion_tokens"], 6);
  }
  EXPECT_EQ(crowd.get()["choices"], alone["choices"]);
}

TEST(SchedulerTest, BadFairnessOptionsAreRefused) {
  ServiceMetrics metrics;
  EXPECT_FALSE(Scheduler::Create({.max_running_per_request = -1}, &metrics).ok());
  EXPECT_FALSE(Scheduler::Create({.max_request_tokens = 0}, &metrics).ok());
  EXPECT_FALSE(Scheduler::Create({.max_window_refills_per_step = 0}, &metrics).ok());
}

// num_threads sizes the host threads that draw a step's tokens, each with
// scratch the size of the vocabulary: a negative count or a huge one is a
// configuration error named at start, whatever the device (the CUDA engine
// never looked at it).
TEST(SchedulerTest, BadThreadCountsAreRefused) {
  ServiceMetrics metrics;
  for (const int threads : {-1, InferenceOptions::kMaxThreads + 1, 100000}) {
    const auto s = Scheduler::Create({.num_threads = threads}, &metrics);
    ASSERT_FALSE(s.ok()) << threads;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("num_threads"), std::string_view::npos) << s.status();
  }
}

// A decode step's tokens are drawn on several host threads at once: each
// sequence's text, logprobs and alternatives are the same as when one
// thread draws them all in turn. GPT-2's vocabulary makes each draw long
// enough (about 0.3 ms) that rows sharing scratch would garble each other.
// A tiny model over GPT-2's 50,257 tokens: drawing a token is real work, and
// rows that shared scratch would disagree.
auto Gpt2VocabSnapshot() {
  const TextTokenizer tok = testing::Gpt2Tokenizer();
  const GptConfig config = testing::TinyConfig(tok.vocab_size(), 32);
  return MakeSnapshot(config, tok, testing::RandomParams(config, 5), 1, "gpt2-test", "");
}

TEST(SchedulerTest, DrawingOnManyThreadsGivesTheOneThreadTokens) {
  // Drawing threads are capped at the cores: one core would compare one
  // thread with itself.
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs 2 cores to draw on 2 threads";
  auto snap = Gpt2VocabSnapshot();
  ASSERT_TRUE(snap.ok()) << snap.status();
  const std::string req =
      R"({"prompt":"To be","max_tokens":12,"temperature":0.8,"top_k":30,"seed":99,"n":16,)"
      R"("logprobs":4})";
  json by_threads[2];
  for (const int threads : {1, 4}) {
    ServiceMetrics metrics;
    auto s = Scheduler::Create(
        {.max_batch = 16, .num_threads = threads, .max_running_per_request = 16}, &metrics);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->SetModel(*snap).ok());
    by_threads[threads == 1 ? 0 : 1] = Complete(s->get(), req);
  }
  const json& one = by_threads[0];
  ASSERT_EQ(one["choices"].size(), 16u);
  std::set<std::string> texts;
  for (const json& c : one["choices"]) texts.insert(c["text"].get<std::string>());
  EXPECT_GT(texts.size(), 1u) << "16 seeds should not all draw the same text";
  EXPECT_EQ(by_threads[1]["choices"], one["choices"]);
}

// A hot reload to a model with a larger vocabulary (the character model,
// then GPT-2's 50,257 tokens) while the old model's sequences may still
// run: the drawing threads' scratch grows, and the new model's tokens and
// logprobs are those of a service that only ever served it, on one thread.
TEST(SchedulerTest, AReloadToALargerVocabularyDrawsWhatAFreshServiceDraws) {
  auto snap = Gpt2VocabSnapshot();
  ASSERT_TRUE(snap.ok()) << snap.status();
  const std::string req =
      R"({"prompt":"To be","max_tokens":10,"temperature":0.8,"top_k":30,"seed":7,"n":8,)"
      R"("logprobs":3})";
  json fresh;
  {
    ServiceMetrics metrics;
    auto s = Scheduler::Create({.max_batch = 16, .num_threads = 1, .max_running_per_request = 16},
                               &metrics);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->SetModel(*snap).ok());
    fresh = Complete(s->get(), req);
  }
  ServiceMetrics metrics;
  auto s = Scheduler::Create({.max_batch = 16, .num_threads = 4, .max_running_per_request = 16},
                             &metrics);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->SetModel(testing::TestSnapshot(3, 64)).ok());
  json old;
  std::thread old_client(
      [&] { old = Complete(s->get(), R"({"prompt":"ab","max_tokens":40,"n":8,"seed":1})"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE((*s)->SetModel(*snap).ok());
  const json after = Complete(s->get(), req);
  old_client.join();
  ASSERT_EQ(old["choices"].size(), 8u) << old.dump();
  ASSERT_EQ(fresh["choices"].size(), 8u) << fresh.dump();
  EXPECT_EQ(after["choices"], fresh["choices"]);
}

// With max_queue 0 every request was a 429 (every sequence waits in the
// queue before it joins the batch): a service that refused all work.
TEST(SchedulerTest, EmptyQueueIsRefusedAtStart) {
  ServiceMetrics metrics;
  const auto s = Scheduler::Create({.max_queue = 0}, &metrics);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("max_queue: must be >= 1, got 0"), std::string_view::npos)
      << s.status();
}

// An engine that forwards to a real one but throws std::bad_alloc from the
// calls the test arms: what a machine out of memory does mid-request.
class FailingEngine final : public InferenceEngine {
 public:
  FailingEngine(std::unique_ptr<InferenceEngine> inner, std::atomic<int>* fail_prefills,
                std::atomic<int>* fail_decodes)
      : inner_(std::move(inner)), fail_prefills_(fail_prefills), fail_decodes_(fail_decodes) {}
  const GptConfig& config() const override { return inner_->config(); }
  int max_slots() const override { return inner_->max_slots(); }
  void Reset(int slot) override { inner_->Reset(slot); }
  int Length(int slot) const override { return inner_->Length(slot); }
  const float* Prefill(int slot, std::span<const int32_t> tokens) override {
    if (fail_prefills_->load() > 0) {
      --*fail_prefills_;
      throw std::bad_alloc();
    }
    return inner_->Prefill(slot, tokens);
  }
  const float* PrefillMany(std::span<const int> slots,
                           std::span<const std::span<const int32_t>> prompts) override {
    if (fail_prefills_->load() > 0) {
      --*fail_prefills_;
      throw std::bad_alloc();
    }
    return inner_->PrefillMany(slots, prompts);
  }
  const float* Decode(std::span<const int> slots, std::span<const int32_t> tokens) override {
    if (fail_decodes_->load() > 0) {
      --*fail_decodes_;
      throw std::bad_alloc();
    }
    return inner_->Decode(slots, tokens);
  }

 private:
  std::unique_ptr<InferenceEngine> inner_;
  std::atomic<int>* fail_prefills_;
  std::atomic<int>* fail_decodes_;
};

TEST(SchedulerTest, AFailedStepCancelsItsSequencesAndTheServiceServesOn) {
  std::atomic<int> fail_prefills{0}, fail_decodes{0};
  SchedulerOptions options{.max_batch = 4, .num_threads = 1};
  options.make_engine =
      [&](const GptConfig& config, std::span<const float> params,
          const InferenceOptions& io) -> absl::StatusOr<std::unique_ptr<InferenceEngine>> {
    absl::StatusOr<std::unique_ptr<InferenceEngine>> inner =
        MakeInferenceEngine(config, params, io);
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<InferenceEngine>(
        new FailingEngine(*std::move(inner), &fail_prefills, &fail_decodes));
  };
  Service svc(options);
  const std::string req = R"({"prompt":"To be","max_tokens":8,"seed":7})";
  const json healthy = Complete(svc.scheduler.get(), req);
  ASSERT_EQ(healthy["choices"][0]["finish_reason"], "length") << healthy;

  fail_decodes = 1;  // the first decode step of the next request throws
  const json decode_failed = Complete(svc.scheduler.get(), req);
  EXPECT_EQ(decode_failed["choices"][0]["finish_reason"], "cancelled") << decode_failed;
  EXPECT_EQ(fail_decodes.load(), 0);

  fail_prefills = 1;  // now its prefill
  const json prefill_failed = Complete(svc.scheduler.get(), req);
  EXPECT_EQ(prefill_failed["choices"][0]["finish_reason"], "cancelled") << prefill_failed;

  // The service serves on, with every slot back: the same text as before.
  for (int i = 0; i < 5; ++i) {
    const json again = Complete(svc.scheduler.get(), req);
    EXPECT_EQ(again["choices"][0]["text"], healthy["choices"][0]["text"]) << i;
  }
  EXPECT_EQ(svc.metrics.cancelled_sequences.load(), 2u);
}

}  // namespace
}  // namespace dropk
