// The OpenAI-compatible completions API, independent of HTTP: request
// parsing and validation, and a CompletionJob that turns one request into
// scheduler sequences and their output into response bodies (one JSON body,
// or server-sent events ending in `data: [DONE]`). The HTTP server and the
// offline `dropk sample --checkpoint` both run requests through here, so the
// same request and seed give the same text either way.
//
// Sampling order: temperature, then top-k, then top-p (model/generate.h).
// Choice j of every prompt samples with seed + j, so a choice can be
// reproduced alone with n = 1 and that seed.
#ifndef DROPK_SAMPLER_COMPLETIONS_H_
#define DROPK_SAMPLER_COMPLETIONS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "sampler/scheduler.h"
#include "sampler/stop_strings.h"

namespace dropk {

// An error a client caused (or a service condition it should see), as an
// HTTP status and an OpenAI error object.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" renders as null
  std::string code;   // "" renders as null
};

// {"error": {"message", "type", "param", "code"}}
std::string ErrorBody(const ApiError& error);

struct CompletionRequest {
  static constexpr int kMaxN = 16;
  static constexpr int kMaxPrompts = 64;
  static constexpr int kMaxStops = 4;
  // The longest stop string, in bytes of UTF-8 (a longer one is a 400
  // invalid_value naming it). Matching one costs a size_t per byte, shared
  // by the request's choices (StopStrings), and a stream holds back at most
  // its length of a choice's text; OpenAI sets no figure, and a stop string
  // is a short marker ("\n\n", "</s>", "END").
  static constexpr size_t kMaxStopBytes = 1024;
  // The most tokens one choice may generate (the window slides past the
  // context, so the context does not bound it).
  static constexpr int kMaxTokens = 8192;
  // The highest temperature; past it the distribution is uniform to float
  // precision anyway.
  static constexpr int kMaxTemperature = 1000000;

  // The prompts, as text to encode or, in OpenAI's other form, as token ids
  // given directly (a list of integers, or a list of such lists). Exactly one
  // of the two is non-empty; ids are checked against the model's vocabulary
  // when the request is submitted. Ids are kept as sent (any JSON integer
  // >= 0), so an error about one quotes the client's own number.
  std::vector<std::string> prompts;
  std::vector<std::vector<uint64_t>> token_prompts;

  // How many prompts the request has, in whichever form.
  size_t PromptCount() const { return prompts.size() + token_prompts.size(); }
  std::optional<int> max_tokens;  // absent: min(16, what fits the context)
  float temperature = 1.0f;       // 0: greedy
  int top_k = 0;                  // 0 or -1: off; clamped to V later
  float top_p = 1.0f;             // (0, 1]
  std::optional<uint64_t> seed;   // absent: drawn by the server
  std::vector<std::string> stop;
  int n = 1;
  bool stream = false;
  // stream_options.include_usage (stream only): every chunk has "usage":
  // null, and one more chunk before `data: [DONE]` has no choices and the
  // request's usage, as the non-streaming answer counts it.
  bool include_usage = false;
  int logprobs = -1;  // -1: none; else alternatives per token (0..20)
  // The model the client asked for, as sent; absent: whichever is served.
  // CompletionJob::Start refuses one that is not the served model's id.
  std::optional<std::string> model;
};

// Parses and validates a /v1/completions body. Errors are 400s naming the
// field (param) with code invalid_json, invalid_type or invalid_value ('model'
// must be a string when given; whether it names the served model is
// CompletionJob::Start's to say). A
// number a double cannot hold (1e-400, 1e400) is quoted as written. What a
// request costs is checked against the server's limits by
// CompletionJob::Start.
std::variant<CompletionRequest, ApiError> ParseCompletionRequest(std::string_view body);

// A finished job: the JSON body (non-streaming), "" (streaming, after the
// final `data: [DONE]` event), or an error to answer with instead of a body:
// a 503 (code shutting_down) for a non-streaming request of which the
// service ran nothing before it stopped, which a client may safely retry;
// a 503 (code device_failed, the message naming the GPU's error) for one
// that the GPU failed under (Scheduler::DeviceFailure). A stream that the
// GPU failed under ends its choices with finish_reason "cancelled", then
// sends `data: {"error": ...}` with that error, then `data: [DONE]`.
using CompletionResult = std::variant<std::string, ApiError>;

// Receives a job's output on the scheduler thread; must not block.
class CompletionListener {
 public:
  virtual ~CompletionListener() = default;
  // Streaming only: one server-sent event ("data: ...\n\n"), in order.
  virtual void OnEvent(std::string event) = 0;
  // Exactly once, last.
  virtual void OnDone(CompletionResult result) = 0;
};

// One request in flight. Thread-safe to Cancel from any thread.
class CompletionJob : public std::enable_shared_from_this<CompletionJob> {
 public:
  // Validates `request` against `model` (the model it names, prompt
  // encoding, context length)
  // and the scheduler's cost budget (prompts x n x max_tokens at most
  // SchedulerOptions::max_request_tokens, code request_too_costly; the same
  // budget bounds the top logprobs a non-streaming answer holds, at most
  // budget x Scheduler::kMaxTopLogprobs and never past 65,536 x that,
  // code request_too_costly, param logprobs) and
  // submits its prompts x n sequences. Errors: 400 for the request (more
  // sequences than SchedulerOptions::max_queue included: code
  // too_many_sequences), 404 when request.model is given and is not the
  // id of `model` (code model_not_found, param model, naming both), 429 when
  // the queue is full, 503 when shutting
  // down (code shutting_down) or after the GPU failed (code device_failed,
  // naming the error). On success the listener gets the output; on error it
  // is never called.
  static std::variant<std::shared_ptr<CompletionJob>, ApiError> Start(
      const CompletionRequest& request, std::shared_ptr<ServingModel> model, Scheduler* scheduler,
      std::shared_ptr<CompletionListener> listener);

  // Ends the job's sequences at the next decode step (client gone).
  void Cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  uint64_t seed() const { return seed_; }

 private:
  class ChoiceSink;
  struct Choice;
  CompletionJob() = default;
  bool OnToken(int choice, const GeneratedToken& token);
  void OnFinish(int choice, FinishReason reason);
  // Streaming: sends, as one event, the part of the choice's text that can
  // no longer change (neither a possible stop-string prefix nor partial
  // UTF-8). The one place that decides what streamed text is released.
  void StreamSettledText(int choice);
  // One chunk of a stream: `text`, and the logprobs of the choice's first
  // `tokens` held tokens, which it then drops.
  std::string ChunkJson(int choice, std::string_view text, const char* finish_reason,
                        size_t tokens);
  // Streaming with include_usage: the last chunk before `data: [DONE]`, no
  // choices and the request's usage.
  std::string UsageChunkJson() const;
  // The tokens generated so far, every choice's.
  int CompletionTokens() const;
  // The 503 for a job that the GPU failed under, naming the failure.
  ApiError DeviceFailedError() const;
  std::string BodyJson();

  std::atomic<bool> cancelled_{false};
  std::shared_ptr<CompletionListener> listener_;
  std::shared_ptr<ServingModel> model_;
  std::string id_;
  int64_t created_ = 0;
  uint64_t seed_ = 0;
  bool stream_ = false;
  bool include_usage_ = false;  // CompletionRequest::include_usage
  int logprobs_ = -1;
  StopStrings stop_;  // the request's; each choice follows its text (Choice::stop)
  int prompt_tokens_ = 0;
  std::vector<std::unique_ptr<Choice>> choices_;  // touched on the scheduler thread only
  int unfinished_ = 0;
  int not_run_ = 0;  // choices the service stopped before running
  int device_failed_ = 0;           // choices ended by a failed GPU
  Scheduler* scheduler_ = nullptr;  // for its DeviceFailure(); outlives the job's output
};

// Runs `request` on the scheduler's current model and blocks until it is
// done: returns the JSON body (non-streaming) or "" (streaming, after each
// SSE event was passed to on_event in order, on the scheduler thread), or
// the error the request was refused or ended with.
// The offline `dropk sample --checkpoint` and the tests use this.
CompletionResult RunCompletion(const CompletionRequest& request, Scheduler* scheduler,
                               const std::function<void(const std::string&)>& on_event = nullptr);

}  // namespace dropk

#endif  // DROPK_SAMPLER_COMPLETIONS_H_
