#include "sampler/completions.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <random>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/cut_for_message.h"
#include "base/number_text.h"
#include "completion_text.h"
#include "model/utf8.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

using json = nlohmann::json;

// "1 prompt", "3 prompts": the request's prompt count, for messages.
std::string PromptsText(const CompletionRequest& request) {
  return absl::StrCat(request.PromptCount(), request.PromptCount() == 1 ? " prompt" : " prompts");
}

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
    return InvalidParam(
        "max_tokens",
        absl::StrCat("the request asks for up to ", cost, " tokens (", PromptsText(request),
                     " x n ", request.n, " x max_tokens ", max_tokens,
                     "); the limit per request is ", limit, " (--max-request-tokens)"),
        "request_too_costly");
  }
  if (!request.stream && request.logprobs > 0 && cost * request.logprobs > kMaxHeldAlternatives) {
    return InvalidParam(
        "logprobs",
        absl::StrCat("the answer would hold up to ", cost * request.logprobs, " top logprobs (",
                     cost, " tokens x logprobs ", request.logprobs,
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
    return InvalidParam("prompt",
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
      return InvalidParam("prompt", absl::StrCat("prompt ", p, ": ", encoded.status().message()),
                          "invalid_prompt");
    }
    ids = *std::move(encoded);
  } else {
    const std::vector<uint64_t>& given = request.token_prompts[p - request.prompts.size()];
    for (size_t i = 0; i < given.size(); ++i) {
      if (given[i] >= static_cast<uint64_t>(V)) {
        return InvalidParam("prompt",
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
  return InvalidParam(
      "n",
      absl::StrCat("the request needs ", sequences, " sequences (", PromptsText(request), " x n ",
                   request.n, "); at most ", max_queue, " can wait at once (--max-queue)"),
      "too_many_sequences");
}

// OpenAI's answer to a model it does not serve: a 404, code model_not_found.
// The id compared is the snapshot's the job would run on (after a hot
// reload, the new checkpoint's), so what a client reads in /v1/models is
// what it may send. The requested name is cut short and escaped
// (EscapeForMessage): it is the client's.
std::optional<ApiError> CheckModelName(const CompletionRequest& request,
                                       const std::string& served) {
  if (!request.model.has_value() || *request.model == served) return std::nullopt;
  return ApiError{404,
                  absl::StrCat("the model '", CutAndEscapeForMessage(*request.model, 100),
                               "' does not exist; this server serves '", served,
                               "' (GET /v1/models lists it; leave 'model' out to use whichever "
                               "model is served)"),
                  "invalid_request_error", "model", "model_not_found"};
}

// A token as logprobs name it: its text when that is UTF-8, else OpenAI's
// "bytes:" form, in which every byte that is not printable ASCII (a
// backslash included) is written \xNN. Before, such tokens were written
// with U+FFFD for their bytes, so GPT-2's and BYTE's partial characters
// all became the same "\ufffd" key of top_logprobs: of 20 alternatives a
// client parsed as few as 7, and top_logprobs[i][tokens[i]] could give
// another token's logprob.
std::string LogprobToken(const TextTokenizer& tok, int32_t id) {
  std::string text = tok.DecodeOne(id);
  if (!FirstNonUtf8Byte(text).has_value()) return text;
  std::string named = "bytes:";
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      named += ch;
    } else {
      absl::StrAppendFormat(&named, "\\x%02x", c);
    }
  }
  return named;
}

// OpenAI's usage object.
json UsageJson(int prompt_tokens, int completion_tokens) {
  return json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens}};
}

// The characters of `piece` as the answer's JSON gives them to the client:
// its code points, each stretch of bytes that is not UTF-8 being one U+FFFD
// (JsonText's replacement, which is what is counted).
size_t CharactersOf(std::string_view piece) {
  const std::string sent =
      json::parse(JsonText(json(std::string(piece)))).get<std::string>();  // valid UTF-8
  return static_cast<size_t>(std::count_if(sent.begin(), sent.end(), [](char ch) {
    return (static_cast<unsigned char>(ch) & 0xC0) != 0x80;  // not a continuation byte
  }));
}

// A generated token as the answer's logprobs report it.
struct LoggedToken {
  TokenLogprob drawn;
  size_t text_offset = 0;  // its text_offset: characters of the choice's text before it
  size_t top_count = 0;    // its alternatives: the next top_count in Choice::top
  // Its bytes in the choice's text, [byte_begin, byte_end), as generated
  // (before any cut at a stop string).
  size_t byte_begin = 0;
  size_t byte_end = 0;
};

// Whether `token` is part of the first `text_bytes` bytes of its choice's
// text: some of its bytes are, or it has none and ends within them. The
// logprobs of a choice report exactly the tokens of the text it returns (or
// has streamed so far): a token that a stop string cut off, or one whose
// text a stream still holds back, is not reported. A token that the cut
// splits (its first bytes returned, the rest the stop string's) is. Holds
// for a prefix of a choice's tokens, which are in text order.
bool InText(const LoggedToken& token, size_t text_bytes) {
  return token.byte_begin < text_bytes || token.byte_end <= text_bytes;
}

// The OpenAI "logprobs" object of `entries`, whose alternatives are `top`
// in order: tokens, token_logprobs, top_logprobs (text -> logprob, an
// object whose keys nlohmann orders by text) and text_offset.
json LogprobsJson(std::span<const LoggedToken> entries, std::span<const TokenLogprob> top,
                  const TextTokenizer& tok) {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array();
  size_t next = 0;
  for (const LoggedToken& e : entries) {
    tokens.push_back(LogprobToken(tok, e.drawn.token));
    token_logprobs.push_back(e.drawn.logprob);
    json alternatives = json::object();
    for (size_t i = 0; i < e.top_count; ++i, ++next) {
      alternatives[LogprobToken(tok, top[next].token)] = top[next].logprob;
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
  // With logprobs: the first counted_bytes bytes of text (whole characters)
  // are counted_chars characters, for text_offset.
  size_t counted_bytes = 0;
  size_t counted_chars = 0;
  int tokens = 0;
  bool stopped = false;  // a stop string was found
  StopStrings::Progress stop;  // where text stands against the stop strings
  std::string finish_reason;
  // With logprobs, per token, held as ids and floats (8 bytes an
  // alternative, not a JSON object of kilobytes) until they are sent:
  // streaming keeps only the tokens not yet sent.
  std::vector<LoggedToken> entries;
  std::vector<TokenLogprob> top;  // every entry's alternatives, in order

  // How many entries, from the first, are in the first text_bytes bytes of
  // text (InText).
  size_t LoggedTokensIn(size_t text_bytes) const {
    return static_cast<size_t>(
        std::find_if(entries.begin(), entries.end(),
                     [text_bytes](const LoggedToken& e) { return !InText(e, text_bytes); }) -
        entries.begin());
  }
  // Drops the entries past the first text_bytes bytes of text, with their
  // alternatives.
  void DropLoggedTokensPast(size_t text_bytes) {
    entries.resize(LoggedTokensIn(text_bytes));
    size_t kept_top = 0;
    for (const LoggedToken& e : entries) kept_top += e.top_count;
    top.resize(kept_top);
  }
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
  if (std::optional<ApiError> e = CheckModelName(request, model->snapshot().id)) return *e;
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
  job->include_usage_ = request.stream && request.include_usage;
  job->logprobs_ = request.logprobs;
  job->stop_ = StopStrings(request.stop);

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
  if (!s.ok()) return InvalidParam("", std::string(s.message()));
  return job;
}

bool CompletionJob::OnToken(int index, const GeneratedToken& token) {
  Choice& c = *choices_[index];
  ++c.tokens;
  const TextTokenizer& tok = model_->snapshot().tokenizer;
  const size_t before = c.text.size();
  c.text += tok.DecodeOne(token.token);
  if (logprobs_ >= 0) {
    // OpenAI's text_offset is a character position (a client slices the
    // text with it); it was the byte offset, past the token's place in any
    // text with a character of two or more bytes. The characters finished
    // before the token's first byte: a token that finishes a character
    // another began stands where that character does; an unfinished one
    // that the token does not continue is a U+FFFD before it. Counted as
    // the text grows, from the last whole character on.
    const bool continues_a_character =
        before < c.text.size() && (static_cast<unsigned char>(c.text[before]) & 0xC0) == 0x80;
    const size_t whole = continues_a_character ? CompleteUtf8Prefix(c.text, before) : before;
    if (whole > c.counted_bytes) {
      c.counted_chars +=
          CharactersOf(std::string_view(c.text).substr(c.counted_bytes, whole - c.counted_bytes));
      c.counted_bytes = whole;
    }
    c.entries.push_back(
        {{token.token, token.logprob}, c.counted_chars, token.top.size(), before, c.text.size()});
    c.top.insert(c.top.end(), token.top.begin(), token.top.end());
  }
  if (!stop_.empty()) {
    const size_t cut = stop_.Append(std::string_view(c.text).substr(before), &c.stop);
    if (cut != std::string::npos) {
      c.text.resize(cut);
      c.stopped = true;
      // The stop string's tokens go with its text: their logprobs were
      // reported while the text they made was not returned.
      c.DropLoggedTokensPast(cut);
      return false;
    }
  }
  if (stream_) StreamSettledText(index);
  return true;
}

void CompletionJob::StreamSettledText(int index) {
  Choice& c = *choices_[index];
  // Hold back what could still become a stop string (the longest end of
  // the text that begins one, none of it sent yet: StopStrings), and
  // partial UTF-8.
  const size_t safe = CompleteUtf8Prefix(c.text, c.text.size() - stop_.PossibleStopStart(c.stop));
  // The tokens of the text sent so far, and no others: a token held back
  // with its text (a possible stop string's start) was sent before it, and
  // stayed in the logprobs when the stop string then cut it off.
  const size_t settled_tokens = c.LoggedTokensIn(safe);
  if (safe > c.sent || settled_tokens > 0) {
    std::string delta = safe > c.sent ? c.text.substr(c.sent, safe - c.sent) : "";
    c.sent = std::max(c.sent, safe);
    listener_->OnEvent(
        absl::StrCat("data: ", ChunkJson(index, delta, nullptr, settled_tokens), "\n\n"));
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
    listener_->OnEvent(absl::StrCat(
        "data: ", ChunkJson(index, delta, c.finish_reason.c_str(), c.entries.size()), "\n\n"));
  }
  if (--unfinished_ > 0) return;
  if (stream_) {
    // The 200 and its headers are gone already: the failure travels as an
    // error event (OpenAI's shape) before the end of the stream.
    if (include_usage_) listener_->OnEvent(absl::StrCat("data: ", UsageChunkJson(), "\n\n"));
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

std::string CompletionJob::ChunkJson(int index, std::string_view text, const char* finish_reason,
                                     size_t tokens) {
  Choice& c = *choices_[index];
  json choice = {{"text", text}, {"index", index}};
  if (logprobs_ >= 0) {
    // Each entry is streamed once and then dropped: a long stream asking for
    // top logprobs held every token's alternatives (kilobytes each) to its end.
    const std::span<const LoggedToken> sent(c.entries.data(), tokens);
    size_t sent_top = 0;
    for (const LoggedToken& e : sent) sent_top += e.top_count;
    choice["logprobs"] = LogprobsJson(sent, c.top, model_->snapshot().tokenizer);
    c.entries.erase(c.entries.begin(), c.entries.begin() + static_cast<ptrdiff_t>(tokens));
    c.top.erase(c.top.begin(), c.top.begin() + static_cast<ptrdiff_t>(sent_top));
  } else {
    choice["logprobs"] = nullptr;
  }
  choice["finish_reason"] = finish_reason == nullptr ? json(nullptr) : json(finish_reason);
  const ModelSnapshot& snap = model_->snapshot();
  json chunk = {{"id", id_},
                {"object", "text_completion"},
                {"created", created_},
                {"model", snap.id},
                {"choices", json::array({std::move(choice)})},
                {"checkpoint_step", snap.step},
                {"seed", seed_}};
  if (include_usage_) chunk["usage"] = nullptr;  // OpenAI's: only the last chunk has it
  return JsonText(chunk);
}

std::string CompletionJob::UsageChunkJson() const {
  const ModelSnapshot& snap = model_->snapshot();
  return JsonText(json{{"id", id_},
                       {"object", "text_completion"},
                       {"created", created_},
                       {"model", snap.id},
                       {"choices", json::array()},
                       {"usage", UsageJson(prompt_tokens_, CompletionTokens())},
                       {"checkpoint_step", snap.step},
                       {"seed", seed_}});
}

int CompletionJob::CompletionTokens() const {
  int tokens = 0;
  for (const std::unique_ptr<Choice>& c : choices_) tokens += c->tokens;
  return tokens;
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
  const ModelSnapshot& snap = model_->snapshot();
  for (size_t i = 0; i < choices_.size(); ++i) {
    Choice& c = *choices_[i];
    json choice = {{"text", c.text}, {"index", i}, {"finish_reason", c.finish_reason}};
    choice["logprobs"] =
        logprobs_ >= 0 ? LogprobsJson(c.entries, c.top, snap.tokenizer) : json(nullptr);
    c.entries = {};
    c.top = {};
    absl::StrAppend(&body, i > 0 ? "," : "", JsonText(choice));
  }
  const std::string rest = JsonText(json{{"id", id_},
                                         {"object", "text_completion"},
                                         {"created", created_},
                                         {"model", snap.id},
                                         {"usage", UsageJson(prompt_tokens_, CompletionTokens())},
                                         {"checkpoint_step", snap.step},
                                         {"seed", seed_}});
  // rest is "{...}" with at least one member: "choices" goes first, and
  // the body is built in place rather than copied once more at the end.
  absl::StrAppend(&body, "],", absl::string_view(rest).substr(1));
  return body;
}

}  // namespace dropk
