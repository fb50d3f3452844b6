// Serving a GPT-2 BPE model: any UTF-8 prompt is accepted, logprobs carry
// tokens as text (a token that is not whole characters in OpenAI's
// "bytes:\xNN" form), and a stream never splits a UTF-8 character across
// events.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sampler/completions.h"
#include "sampler/scheduler.h"
#include "test_util.h"

namespace dropk {
namespace {

using json = nlohmann::json;

// A 2-layer model with random weights over GPT-2's 50,257 tokens.
std::shared_ptr<const ModelSnapshot> Gpt2Snapshot() {
  const TextTokenizer tok = testing::Gpt2Tokenizer();
  const GptConfig config = testing::TinyConfig(tok.vocab_size(), 32);
  auto snap = MakeSnapshot(config, tok, testing::RandomParams(config, 5), 1, "gpt2-test", "");
  EXPECT_TRUE(snap.ok()) << snap.status();
  return *snap;
}

// A byte-level BPE of the 256 bytes alone, with random weights: half its
// samples are bytes >= 0x80, so generated text is full of tokens that end
// inside a character, and now and then a lead byte followed by continuation
// bytes makes a whole character out of several tokens. (With GPT-2's full
// vocabulary such tokens are too rare in random samples to test with.)
std::shared_ptr<const ModelSnapshot> ByteBpeSnapshot() {
  Tokenizer proto;
  proto.set_kind(Tokenizer::GPT2_BPE);
  for (int b = 0; b < 256; ++b) proto.add_vocab(std::string(1, static_cast<char>(b)));
  auto tok = TextTokenizer::FromProto(proto);
  EXPECT_TRUE(tok.ok()) << tok.status();
  const GptConfig config = testing::TinyConfig(tok->vocab_size(), 64);
  auto snap = MakeSnapshot(config, *tok, testing::RandomParams(config, 9), 1, "bytes-test", "");
  EXPECT_TRUE(snap.ok()) << snap.status();
  return *snap;
}

// Code points >= U+0080 in UTF-8 `text` other than U+FFFD.
int WholeNonAsciiCharacters(const std::string& text) {
  int n = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0xC0 && text.compare(i, 3, "\xEF\xBF\xBD") != 0) ++n;
  }
  return n;
}

class Gpt2ServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Scheduler::Create({.num_threads = 2}, &metrics_);
    ASSERT_TRUE(s.ok());
    scheduler_ = *std::move(s);
  }

  // The response body, or the events of a stream (with stream: true).
  std::variant<std::string, ApiError> Run(const json& body,
                                          std::vector<std::string>* events = nullptr) {
    auto parsed = ParseCompletionRequest(body.dump());
    EXPECT_TRUE(std::holds_alternative<CompletionRequest>(parsed)) << body;
    return RunCompletion(std::get<CompletionRequest>(parsed), scheduler_.get(),
                         [events](const std::string& e) {
                           if (events != nullptr) events->push_back(e);
                         });
  }

  ServiceMetrics metrics_;
  std::unique_ptr<Scheduler> scheduler_;
};

// A prompt far past the context was encoded whole before it was refused,
// on an I/O thread: GPT-2's BPE takes about a second per megabyte of one
// long word, so a few such requests stalled every connection behind them
// (health checks included). A prompt with more bytes than the context's
// tokens can hold is refused without encoding it; one that may fit is still
// encoded and counted exactly.
TEST_F(Gpt2ServingTest, PromptTooLongForTheContextIsRefusedBeforeEncoding) {
  ASSERT_TRUE(scheduler_->SetModel(Gpt2Snapshot()).ok());  // context 32
  EXPECT_EQ(scheduler_->CurrentModel()->snapshot().tokenizer.max_token_bytes(), 128u);
  CompletionRequest huge;
  huge.prompts.push_back(std::string(64 << 20, 'a'));  // one 64 MiB word
  const auto start = std::chrono::steady_clock::now();
  std::variant<std::string, ApiError> out = RunCompletion(huge, scheduler_.get());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(std::holds_alternative<ApiError>(out));
  const ApiError& e = std::get<ApiError>(out);
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_NE(e.message.find("at least 524288 tokens (67108864 bytes, at most 128 per token)"),
            std::string::npos)
      << e.message;
  EXPECT_LT(seconds, 2.0) << "the prompt was encoded";  // that took 21 s on the 2-core VM
  // Within the byte bound the count is exact: 31 tokens fit, 32 do not.
  const std::string words = " a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e";
  ASSERT_TRUE(std::holds_alternative<std::string>(Run({{"prompt", words}, {"max_tokens", 1}})));
  out = Run({{"prompt", words + " f"}, {"max_tokens", 1}});
  ASSERT_TRUE(std::holds_alternative<ApiError>(out));
  EXPECT_NE(std::get<ApiError>(out).message.find("prompt 0 is 32 tokens"), std::string::npos)
      << std::get<ApiError>(out).message;
}

TEST_F(Gpt2ServingTest, AnyUtf8PromptIsAccepted) {
  ASSERT_TRUE(scheduler_->SetModel(Gpt2Snapshot()).ok());
  // Digits, accents, CJK, emoji: characters no char-level Shakespeare
  // vocabulary has.
  const std::string prompt = "Caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC 2026 \xF0\x9F\x99\x82 ROMEO:";
  auto out = Run({{"prompt", prompt}, {"max_tokens", 5}, {"seed", 1}});
  ASSERT_TRUE(std::holds_alternative<std::string>(out)) << std::get<ApiError>(out).message;
  const json body = json::parse(std::get<std::string>(out));
  const auto ids = Gpt2Snapshot()->tokenizer.Encode(prompt);
  EXPECT_EQ(body["usage"]["prompt_tokens"], ids->size());
  EXPECT_EQ(body["usage"]["completion_tokens"], 5);
}

TEST_F(Gpt2ServingTest, StreamNeverSplitsACharacterAndLogprobsAreText) {
  ASSERT_TRUE(scheduler_->SetModel(ByteBpeSnapshot()).ok());
  int fragments = 0;   // tokens that are not whole characters
  int characters = 0;  // whole non-ASCII characters made of several tokens
  for (int seed = 0; seed < 4; ++seed) {
    const json request = {{"prompt", "Hello"},
                          {"max_tokens", 64},
                          {"seed", seed},
                          {"logprobs", 1},
                          {"temperature", 1.0}};
    auto whole = Run(request);
    ASSERT_TRUE(std::holds_alternative<std::string>(whole));
    const json body = json::parse(std::get<std::string>(whole));
    const std::string text = body["choices"][0]["text"];
    const json& tokens = body["choices"][0]["logprobs"]["tokens"];
    ASSERT_EQ(tokens.size(), 64u);
    characters += WholeNonAsciiCharacters(text);
    for (const json& t : tokens) {
      ASSERT_TRUE(t.is_string());
      fragments += t.get<std::string>().starts_with("bytes:");
    }

    json streamed_request = request;
    streamed_request["stream"] = true;
    std::vector<std::string> events;
    ASSERT_TRUE(std::holds_alternative<std::string>(Run(streamed_request, &events)));
    ASSERT_GE(events.size(), 2u);
    std::string joined;
    for (size_t i = 0; i + 1 < events.size(); ++i) {
      // Each event is its own JSON document: a character split across two
      // would turn into two replacement characters here, not one character.
      joined += json::parse(events[i].substr(6))["choices"][0]["text"].get<std::string>();
    }
    EXPECT_EQ(joined, text) << "seed " << seed;
  }
  // Without both, the test could not fail.
  EXPECT_GT(fragments, 0) << "no token ended inside a character";
  EXPECT_GT(characters, 0) << "no character was made of several tokens";
  std::printf("%d of 256 tokens end inside a character; %d characters span tokens\n", fragments,
              characters);
}

// Tokens that end inside a character were all written with U+FFFD, so in
// top_logprobs they were one key "\ufffd" many times over: a client asking
// for 20 alternatives parsed 7 to 14, and top_logprobs[i][tokens[i]] gave
// another token's logprob. Each token now has its own name.
TEST_F(Gpt2ServingTest, EveryTopLogprobIsItsOwnKey) {
  ASSERT_TRUE(scheduler_->SetModel(ByteBpeSnapshot()).ok());
  auto out = Run({{"prompt", "Hello"}, {"max_tokens", 8}, {"logprobs", 20}, {"temperature", 0}});
  ASSERT_TRUE(std::holds_alternative<std::string>(out)) << std::get<ApiError>(out).message;
  const std::string& text = std::get<std::string>(out);
  // Counted in the text itself: a JSON parser keeps one of a repeated key.
  size_t keys = 0;
  const json::parser_callback_t count_keys = [&](int depth, json::parse_event_t event, json&) {
    keys += event == json::parse_event_t::key && depth == 6;  // inside one top_logprobs entry
    return true;
  };
  const json body = json::parse(text, count_keys);
  const json& logprobs = body["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["top_logprobs"].size(), 8u);
  EXPECT_EQ(keys, 8u * 20);
  int byte_names = 0;
  for (size_t i = 0; i < 8; ++i) {
    const json& top = logprobs["top_logprobs"][i];
    EXPECT_EQ(top.size(), 20u) << top.dump();
    for (const auto& [name, logprob] : top.items()) byte_names += name.starts_with("bytes:\\x");
    // Greedy: the drawn token is the likeliest, so it is among them.
    const std::string drawn = logprobs["tokens"][i];
    ASSERT_TRUE(top.contains(drawn)) << drawn;
    EXPECT_EQ(top[drawn], logprobs["token_logprobs"][i]) << drawn;
  }
  EXPECT_GT(byte_names, 0) << "no alternative ended inside a character: the test cannot fail";
}

// A stop string that begins inside a multi-character token cuts that
// token's text: the logprobs keep the token (its first bytes are returned)
// and drop every token after it, streamed or not.
TEST_F(Gpt2ServingTest, ATokenAStopStringSplitsStaysInTheLogprobs) {
  ASSERT_TRUE(scheduler_->SetModel(Gpt2Snapshot()).ok());
  const json request = {
      {"prompt", "Hello"}, {"max_tokens", 24}, {"seed", 4}, {"logprobs", 1}, {"temperature", 0.7}};
  auto free_run = Run(request);
  ASSERT_TRUE(std::holds_alternative<std::string>(free_run));
  const json all = json::parse(std::get<std::string>(free_run))["choices"][0]["logprobs"];
  const std::string text = json::parse(std::get<std::string>(free_run))["choices"][0]["text"];
  // A token of two or more characters, after the first and in ASCII text
  // (so that text_offset counts bytes), with a token after it, whose tail
  // and the next token make a stop string that does not occur earlier.
  std::optional<size_t> split;
  std::string stop;
  for (size_t i = 1; i + 1 < all["tokens"].size() && !split; ++i) {
    const std::string token = all["tokens"][i], next = all["tokens"][i + 1];
    const size_t offset = all["text_offset"][i];
    const size_t end = offset + token.size() + next.size();
    if (token.size() < 2 || end > text.size() ||
        !std::all_of(text.begin(), text.begin() + end,
                     [](char c) { return c >= ' ' && c < 0x7f; })) {
      continue;
    }
    stop = token.substr(1) + next;
    if (text.find(stop) == offset + 1) split = i;
  }
  ASSERT_TRUE(split.has_value()) << "no token to split in: " << text;
  const size_t cut = static_cast<size_t>(all["text_offset"][*split]) + 1;
  json stopped_request = request;
  stopped_request["stop"] = stop;
  for (const bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "one body");
    stopped_request["stream"] = stream;
    std::vector<std::string> events;
    auto out = Run(stopped_request, &events);
    ASSERT_TRUE(std::holds_alternative<std::string>(out));
    std::string got_text;
    std::vector<std::string> tokens;
    const auto read_choice = [&](const json& choice) {
      got_text += choice["text"].get<std::string>();
      for (const json& t : choice["logprobs"]["tokens"]) tokens.push_back(t);
    };
    if (stream) {
      for (size_t i = 0; i + 1 < events.size(); ++i) {
        read_choice(json::parse(events[i].substr(6))["choices"][0]);
      }
    } else {
      read_choice(json::parse(std::get<std::string>(out))["choices"][0]);
    }
    EXPECT_EQ(got_text, text.substr(0, cut));
    ASSERT_EQ(tokens.size(), *split + 1);
    for (size_t i = 0; i <= *split; ++i) EXPECT_EQ(tokens[i], all["tokens"][i]) << i;
  }
}

}  // namespace
}  // namespace dropk
