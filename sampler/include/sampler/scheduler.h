// The generation scheduler: one thread that owns the inference engines and
// decodes every running sequence together (continuous batching). Sequences
// wait in their request's queue, join the running batch between decode steps
// when a slot is free, and leave it when they finish or are cancelled.
//
// Fairness across requests (one request's sequences cannot starve another's):
// waiting sequences join round-robin by request, one per request per turn;
// a request runs at most max_running_per_request sequences at once, so slots
// stay free for others; and past the context, where every token re-runs the
// whole window, at most max_window_refills_per_step windows are re-run per
// decode step while other sequences wait on that step.
//
// Each sequence is pinned to the ServingModel it was submitted with, so a
// hot reload (SetModel) never changes the weights under a running request;
// an old model's engine is freed when its last sequence lets go of it.
//
// Reproducibility (DESIGN invariant 5): a sequence's logits come from
// batch-invariant kernels and its draws from Philox keyed by its own seed,
// counter = its output position, so its tokens and logprobs do not depend on
// the other sequences in the batch.
#ifndef DROPK_SAMPLER_SCHEDULER_H_
#define DROPK_SAMPLER_SCHEDULER_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/generate.h"
#include "model/inference.h"
#include "sampler/metrics.h"
#include "sampler/model_snapshot.h"

namespace dropk {

// A snapshot with its inference engine (KV cache slots). The engine and the
// free-slot list belong to the scheduler thread.
class ServingModel {
 public:
  const ModelSnapshot& snapshot() const { return *snapshot_; }
  const std::shared_ptr<const ModelSnapshot>& shared_snapshot() const { return snapshot_; }

 private:
  friend class Scheduler;
  std::shared_ptr<const ModelSnapshot> snapshot_;
  std::unique_ptr<InferenceEngine> engine_;
  std::vector<int> free_slots_;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
};

// One generated token, as a sink sees it. logprob is the log-softmax of the
// model's raw logits (before temperature, top-k and top-p), as vLLM reports.
struct GeneratedToken {
  int32_t token = 0;
  int index = 0;  // 0-based position in the sequence's output
  float logprob = 0;
  std::span<const TokenLogprob> top;  // the most likely tokens, best first; valid during the call
};

// How a sequence ended. kCancelled: cut short while running (client gone, a
// failed step, the drain's deadline) or dropped waiting because its client
// left. kNotRun: the service shut down before the sequence got a slot, so it
// produced nothing; the client should retry it elsewhere. kDeviceFailed:
// the GPU failed (Scheduler::DeviceFailure says how) while it ran or
// waited; the client should retry it on another replica.
enum class FinishReason { kLength, kStop, kCancelled, kNotRun, kDeviceFailed };

// Receives one sequence's output. Called on the scheduler thread: must be
// quick and must not block or call back into the scheduler.
class SequenceSink {
 public:
  virtual ~SequenceSink() = default;
  // Returns false to end the sequence here (OnFinish(kStop) follows).
  virtual bool OnToken(const GeneratedToken& token) = 0;
  // Exactly once, last.
  virtual void OnFinish(FinishReason reason) = 0;
  // Polled between decode steps; true drops the sequence (OnFinish(kCancelled)).
  virtual bool Cancelled() const = 0;
};

struct SequenceRequest {
  std::shared_ptr<ServingModel> model;
  std::vector<int32_t> prompt;  // 1 <= size, prompt + max_tokens <= block_size
  int max_tokens = 16;          // >= 1
  SamplingOptions sampling;
  int top_logprobs = 0;  // alternatives reported per token, 0..kMaxTopLogprobs
  std::shared_ptr<SequenceSink> sink;
  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
};

struct SchedulerOptions {
  Device device = Device::kCpu;
  int cuda_device = 0;  // the GPU when device is kCuda
  bool cuda_graphs = true;  // InferenceOptions::cuda_graphs: decode steps as CUDA graphs
  EngineWeights weights = EngineWeights::kFp32;  // InferenceOptions::weights (CPU engine)
  EngineKvCache kv_cache = EngineKvCache::kFp32;  // InferenceOptions::kv_cache (CPU engine)
  int max_batch = 16;   // sequences decoded together
  int max_queue = 256;  // sequences waiting (>= 1); more is ResourceExhausted
  // Host threads (0 = all cores, at most InferenceOptions::kMaxThreads): the
  // CPU engine's, and those that draw a decode step's tokens from its logits
  // (at most one per core and per batch row), whatever the device.
  int num_threads = 0;
  // The most sequences of one request (one Submit) running at once; 0 means
  // max(1, max_batch / 2), which leaves half the batch to other requests.
  int max_running_per_request = 0;
  // The most tokens one request may ask for, prompts x n x max_tokens
  // (checked by CompletionJob::Start: a 400 naming the limit and the value).
  int64_t max_request_tokens = 65536;
  // Past the context a sequence re-runs its whole window for every token
  // (exact nanoGPT cropping: with learned absolute positions no cached key or
  // value stays valid when the window shifts), which costs block_size decode
  // steps' worth. While other sequences wait on a decode step, at most this
  // many windows are re-run in it (oldest first); the others wait a step.
  int max_window_refills_per_step = 2;
  // Builds the engine of each model SetModel installs; empty means
  // MakeInferenceEngine. A seam for tests (an engine that fails on demand).
  std::function<absl::StatusOr<std::unique_ptr<InferenceEngine>>(
      const GptConfig&, std::span<const float>, const InferenceOptions&)>
      make_engine = nullptr;

  // max_running_per_request with its default resolved.
  int RunningPerRequest() const {
    return max_running_per_request > 0 ? max_running_per_request : std::max(1, max_batch / 2);
  }
};

class Scheduler {
 public:
  static constexpr int kMaxTopLogprobs = 20;

  // Starts the scheduler thread. metrics must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& options,
                                                           ServiceMetrics* metrics);
  ~Scheduler();  // Shutdown(0) if not yet done

  // Builds an engine for `snapshot` on the calling thread (slow, allocates),
  // then makes it the model new requests get. Thread-safe.
  absl::Status SetModel(std::shared_ptr<const ModelSnapshot> snapshot);
  // The model new requests should pin; null before the first SetModel.
  std::shared_ptr<ServingModel> CurrentModel() const;

  // Queues all of `sequences` (one request) or none: ResourceExhausted when
  // the queue would pass max_queue, Unavailable after Shutdown began,
  // InvalidArgument for a sequence that breaks SequenceRequest's limits.
  // Thread-safe.
  absl::Status Submit(std::vector<SequenceRequest> sequences);

  // Stops taking new sequences, lets queued and running ones finish for up
  // to `deadline`, cancels the rest, and joins the thread. Idempotent.
  void Shutdown(std::chrono::milliseconds deadline);

  // Empty while the device works; after an engine threw DeviceError (a
  // sticky CUDA error: the process's GPU context is unusable until it
  // restarts), "the GPU failed: <op>: <error>". From that moment every
  // running and waiting sequence ends with kDeviceFailed, Submit refuses
  // work (Unavailable, with this text), and it never becomes empty again:
  // /healthz reports it and dropk-serve exits so that it is restarted.
  // Thread-safe.
  std::string DeviceFailure() const;

  const SchedulerOptions& options() const { return options_; }

 private:
  struct Active;
  // One request's sequences that have not joined the batch yet.
  struct PendingRequest {
    uint64_t id = 0;
    std::deque<SequenceRequest> sequences;
  };
  // What one turn of the loop takes from the queue.
  struct Admission {
    std::vector<std::pair<uint64_t, SequenceRequest>> joining;  // (request id, sequence)
    std::vector<SequenceRequest> dropped;                       // cancelled while waiting
    std::vector<SequenceRequest> not_run;  // still waiting when the service stopped
    bool stop = false;
  };
  Scheduler(const SchedulerOptions& options, ServiceMetrics* metrics);
  void Loop();
  // Waits for work, then takes waiting sequences for the free slots,
  // round-robin by request within each request's running cap.
  Admission Admit();
  // Moves every waiting sequence whose sink is cancelled (its client left)
  // to *dropped, under mu_. Done at every turn, not only when a slot frees:
  // behind a batch of long requests that turn may be minutes away, and the
  // places they held would have the queue refuse everyone meanwhile.
  void DropCancelledWaiting(std::vector<SequenceRequest>* dropped);
  // Prefills the joining sequences (those of one model together, as many as
  // a step takes) and draws each one's first token.
  void Join(std::vector<std::pair<uint64_t, SequenceRequest>>& joining);
  // One PrefillMany of batch (sequences of one model, their slots taken),
  // then each one's first token; moves those that go on into active_ and
  // leaves batch empty.
  void PrefillTogether(std::vector<std::unique_ptr<Active>>& batch);
  // Drops cancelled sequences, then runs one decode step per model.
  void Step();
  // One decode step of the running sequences of model m; `refill` says
  // which of its full-window sequences re-run their window this step.
  void StepModel(ServingModel* m, const std::vector<Active*>& refill);
  // The full-window sequences that re-run their window this step.
  std::vector<Active*> ChooseRefills();
  // Ends every running sequence (shutdown).
  void CancelAll();
  // After a DeviceError: records why, stops taking work, and ends every
  // running and waiting sequence with kDeviceFailed. Scheduler thread.
  void FailDevice(const std::exception& error);
  // One sequence's next token, drawn from its logits, and what its sink is
  // told about it.
  struct Draw {
    int32_t token = 0;
    float logprob = 0;
    int top_count = 0;  // alternatives written to the draw's row of draw_top_
  };
  // Draws seq's next token from logits (V) with host thread `thread`'s
  // scratch, writing its best alternatives to top (kMaxTopLogprobs entries).
  // Reads only seq's own request, position and logits and writes only its
  // scratch and top, so threads can draw different rows at once and a row's
  // draw does not depend on which thread made it. Does not throw.
  Draw DrawToken(const Active& seq, const float* logits, int thread, TokenLogprob* top);
  // Draws the tokens of step_rows_ from logits (one row of V per entry) into
  // draws_ and draw_top_, on up to draw_threads_ host threads (and at most
  // engine_threads, when positive: a CPU engine's current team): a decode
  // step of B sequences had B draws in a row on this thread (about 0.3 ms
  // each for GPT-2's 50,257 tokens) while the GPU waited for the next step.
  void DrawStep(const float* logits, size_t V, int engine_threads);
  // Reports a drawn token to seq's sink and metrics, and returns whether the
  // sequence goes on. Scheduler thread only, in batch order.
  bool Deliver(Active& seq, const Draw& draw, const TokenLogprob* top);
  // DrawToken on this thread, then Deliver: one sequence's prefill logits.
  bool Emit(Active& seq, const float* logits);
  // Makes room in scratch_ and ids_ for draw_threads_ rows of V.
  void ReserveScratch(size_t V);
  void Finish(Active& seq, FinishReason reason);

  const SchedulerOptions options_;
  ServiceMetrics* metrics_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;     // pending work or stop
  std::condition_variable idle_cv_;     // nothing pending or running
  std::deque<PendingRequest> pending_;  // round-robin order: the next turn starts at the front
  size_t pending_sequences_ = 0;
  uint64_t next_request_id_ = 0;
  std::shared_ptr<ServingModel> current_;
  bool accepting_ = true;
  bool stop_now_ = false;
  bool idle_ = true;
  bool shut_down_ = false;
  std::string device_failure_;  // DeviceFailure()

  // Scheduler thread only.
  std::vector<std::unique_ptr<Active>> active_;
  std::map<uint64_t, int> running_per_request_;  // running sequences by request id
  uint64_t steps_ = 0;                           // decode steps so far
  int draw_threads_ = 1;                         // host threads of DrawStep
  size_t scratch_vocab_ = 0;                     // V of one thread's row of scratch_ and ids_
  std::vector<float> scratch_;                   // (draw_threads_, scratch_vocab_)
  std::vector<int32_t> ids_;                     // (draw_threads_, scratch_vocab_)
  std::vector<Draw> draws_;                      // (max_batch): DrawStep's, by batch row
  std::vector<TokenLogprob> draw_top_;           // (max_batch, kMaxTopLogprobs)
  std::vector<int> step_slots_;
  std::vector<int32_t> step_tokens_;
  std::vector<Active*> step_rows_;
  std::vector<ServingModel*> step_models_;
  std::vector<int> prefill_slots_;                         // PrefillTogether's
  std::vector<std::span<const int32_t>> prefill_prompts_;  // PrefillTogether's
  bool device_failed_ = false;  // device_failure_ is set, read without the lock

  std::thread thread_;
};

}  // namespace dropk

#endif  // DROPK_SAMPLER_SCHEDULER_H_
