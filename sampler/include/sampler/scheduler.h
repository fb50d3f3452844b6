// The generation scheduler: one thread that owns the inference engines and
// decodes every running sequence together (continuous batching). Sequences
// wait in a FIFO queue, join the running batch between decode steps when a
// slot is free, and leave it when they finish or are cancelled.
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

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
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

enum class FinishReason { kLength, kStop, kCancelled };

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
  int max_batch = 16;   // sequences decoded together
  int max_queue = 256;  // sequences waiting; more is ResourceExhausted
  int num_threads = 0;  // engine threads; 0 = all cores
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

  // Queues all of `sequences` or none: ResourceExhausted when the queue would
  // pass max_queue, Unavailable after Shutdown began, InvalidArgument for a
  // sequence that breaks SequenceRequest's limits. Thread-safe.
  absl::Status Submit(std::vector<SequenceRequest> sequences);

  // Stops taking new sequences, lets queued and running ones finish for up
  // to `deadline`, cancels the rest, and joins the thread. Idempotent.
  void Shutdown(std::chrono::milliseconds deadline);

  const SchedulerOptions& options() const { return options_; }

 private:
  struct Active;
  Scheduler(const SchedulerOptions& options, ServiceMetrics* metrics);
  void Loop();
  // Samples the token that follows `logits` for `seq`, reports it, and
  // returns whether the sequence goes on.
  bool Emit(Active& seq, const float* logits);
  void Finish(Active& seq, FinishReason reason);

  const SchedulerOptions options_;
  ServiceMetrics* metrics_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // pending work or stop
  std::condition_variable idle_cv_;  // nothing pending or running
  std::deque<SequenceRequest> pending_;
  std::shared_ptr<ServingModel> current_;
  bool accepting_ = true;
  bool stop_now_ = false;
  bool idle_ = true;
  bool shut_down_ = false;

  // Scheduler thread only.
  std::vector<std::unique_ptr<Active>> active_;
  std::vector<float> scratch_;
  std::vector<int32_t> ids_;
  std::vector<TokenLogprob> top_;
  std::vector<int> step_slots_;
  std::vector<int32_t> step_tokens_;
  std::vector<Active*> step_rows_;
  std::vector<ServingModel*> step_models_;

  std::thread thread_;
};

}  // namespace dropk

#endif  // DROPK_SAMPLER_SCHEDULER_H_
