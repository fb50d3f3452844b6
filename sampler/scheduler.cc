#include "sampler/scheduler.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "base/device_error.h"

namespace dropk {

using Clock = std::chrono::steady_clock;

struct Scheduler::Active {
  SequenceRequest request;
  uint64_t request_id = 0;  // the Submit it came with
  int slot = -1;
  int generated = 0;
  int32_t last_token = 0;
  Clock::time_point last_time;
  // Prompt and generated tokens so far: once the cache holds block_size
  // positions, the window of the last block_size tokens is prefilled again.
  std::vector<int32_t> context;
  uint64_t last_refill_step = 0;  // the decode step of its last window re-run
};

Scheduler::Scheduler(const SchedulerOptions& options, ServiceMetrics* metrics)
    : options_(options), metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& options,
                                                             ServiceMetrics* metrics) {
  if (options.max_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch: must be >= 1, got ", options.max_batch));
  }
  if (options.max_queue < 1) {
    // Every sequence waits in the queue before it joins the batch: with no
    // room there, every request would be refused as if the service were busy.
    return absl::InvalidArgumentError(
        absl::StrCat("max_queue: must be >= 1, got ", options.max_queue));
  }
  if (options.max_running_per_request < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_running_per_request: must be >= 0 (0: half the batch), got ",
                     options.max_running_per_request));
  }
  if (options.max_request_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_request_tokens: must be >= 1, got ", options.max_request_tokens));
  }
  if (options.max_window_refills_per_step < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_window_refills_per_step: must be >= 1, got ", options.max_window_refills_per_step));
  }
  if (options.num_threads < 0 || options.num_threads > InferenceOptions::kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrCat("num_threads: must be in [0, ",
                                                   InferenceOptions::kMaxThreads,
                                                   "] (0: all cores), got ", options.num_threads));
  }
  std::unique_ptr<Scheduler> s(new Scheduler(options, metrics));
  s->active_.reserve(options.max_batch);
  s->step_slots_.reserve(options.max_batch);
  s->step_tokens_.reserve(options.max_batch);
  s->step_rows_.reserve(options.max_batch);
  // Drawing is compute on the host: more threads than cores, or than rows
  // to draw, would only wait, and each holds scratch the size of the vocab.
  const int cores = std::max(1, omp_get_num_procs());
  const int wanted = options.num_threads > 0 ? options.num_threads : cores;
  s->draw_threads_ = std::max(1, std::min({wanted, cores, options.max_batch}));
  s->draws_.resize(options.max_batch);
  s->draw_top_.resize(static_cast<size_t>(options.max_batch) * kMaxTopLogprobs);
  s->thread_ = std::thread([p = s.get()] { p->Loop(); });
  return s;
}

Scheduler::~Scheduler() { Shutdown(std::chrono::milliseconds(0)); }

absl::Status Scheduler::SetModel(std::shared_ptr<const ModelSnapshot> snapshot) {
  InferenceOptions io;
  io.device = options_.device;
  io.max_slots = options_.max_batch;
  io.num_threads = options_.num_threads;
  io.cuda_device = options_.cuda_device;
  io.cuda_graphs = options_.cuda_graphs;
  io.weights = options_.weights;
  io.kv_cache = options_.kv_cache;
  absl::StatusOr<std::unique_ptr<InferenceEngine>> engine =
      options_.make_engine ? options_.make_engine(snapshot->config, snapshot->params, io)
                           : MakeInferenceEngine(snapshot->config, snapshot->params, io);
  if (!engine.ok()) return engine.status();
  auto model = std::make_shared<ServingModel>();
  model->snapshot_ = std::move(snapshot);
  model->engine_ = *std::move(engine);
  for (int s = options_.max_batch - 1; s >= 0; --s) model->free_slots_.push_back(s);
  const int64_t step = model->snapshot_->step;
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = std::move(model);
  }
  metrics_->checkpoint_step = step;
  return absl::OkStatus();
}

std::shared_ptr<ServingModel> Scheduler::CurrentModel() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

absl::Status Scheduler::Submit(std::vector<SequenceRequest> sequences) {
  for (const SequenceRequest& s : sequences) {
    if (s.model == nullptr || s.sink == nullptr) {
      return absl::InvalidArgumentError("sequence without a model or a sink");
    }
    const GptConfig& c = s.model->snapshot().config;
    if (s.prompt.empty() || s.max_tokens < 1 ||
        s.prompt.size() > static_cast<size_t>(c.block_size)) {
      return absl::InvalidArgumentError(
          "the prompt must hold 1 to block_size tokens, max_tokens >= 1");
    }
    for (int32_t t : s.prompt) {
      if (t < 0 || t >= c.vocab_size) return absl::InvalidArgumentError("prompt id outside vocab");
    }
    if (s.top_logprobs < 0 || s.top_logprobs > kMaxTopLogprobs) {
      return absl::InvalidArgumentError("top_logprobs out of range");
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!device_failure_.empty()) return absl::UnavailableError(device_failure_);
    if (!accepting_) return absl::UnavailableError("the server is shutting down");
    if (pending_sequences_ + sequences.size() > static_cast<size_t>(options_.max_queue)) {
      return absl::ResourceExhaustedError(absl::StrCat("too many queued sequences (",
                                                       pending_sequences_, " waiting, limit ",
                                                       options_.max_queue, ")"));
    }
    if (sequences.empty()) return absl::OkStatus();
    PendingRequest& request = pending_.emplace_back();
    request.id = next_request_id_++;
    pending_sequences_ += sequences.size();
    for (SequenceRequest& s : sequences) request.sequences.push_back(std::move(s));
    idle_ = false;
    metrics_->queue_length = static_cast<int64_t>(pending_sequences_);
  }
  work_cv_.notify_one();
  return absl::OkStatus();
}

void Scheduler::Shutdown(std::chrono::milliseconds deadline) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    accepting_ = false;
    idle_cv_.wait_for(lock, deadline, [this] { return idle_; });
    stop_now_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::Finish(Active& seq, FinishReason reason) {
  seq.request.sink->OnFinish(reason);
  if (reason == FinishReason::kCancelled) ++metrics_->cancelled_sequences;
  seq.request.model->free_slots_.push_back(seq.slot);
  seq.slot = -1;
  {
    // running_per_request_ is read by Admit under mu_ (on this thread too).
    std::lock_guard<std::mutex> lock(mu_);
    auto it = running_per_request_.find(seq.request_id);
    if (--it->second == 0) running_per_request_.erase(it);
  }
}

void Scheduler::ReserveScratch(size_t V) {
  if (V <= scratch_vocab_) return;  // only when a larger vocab is first served
  scratch_vocab_ = V;
  scratch_.resize(static_cast<size_t>(draw_threads_) * V);
  ids_.resize(static_cast<size_t>(draw_threads_) * V);
}

Scheduler::Draw Scheduler::DrawToken(const Active& seq, const float* logits, int thread,
                                     TokenLogprob* top) {
  const int V = seq.request.model->snapshot().config.vocab_size;
  float* scratch = scratch_.data() + static_cast<size_t>(thread) * scratch_vocab_;
  int32_t* ids = ids_.data() + static_cast<size_t>(thread) * scratch_vocab_;
  const std::span<const float> row(logits, V);
  Draw draw;
  draw.token = SampleToken(row, seq.request.sampling, static_cast<uint64_t>(seq.generated),
                           std::span<float>(scratch, V), std::span<int32_t>(ids, V));
  // Log-softmax of the raw logits (vectorised: 54 us for GPT-2's vocabulary,
  // against 310 us for a scalar double exp, per generated token).
  const float lse = LogSumExp(row);
  draw.logprob = row[draw.token] - lse;
  const int k = std::min(seq.request.top_logprobs, V);
  if (k > 0) {
    for (int i = 0; i < V; ++i) ids[i] = i;
    std::partial_sort(ids, ids + k, ids + V, [&row](int32_t a, int32_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    for (int i = 0; i < k; ++i) top[i] = {ids[i], row[ids[i]] - lse};
    draw.top_count = k;
  }
  return draw;
}

void Scheduler::DrawStep(const float* logits, size_t V, int engine_threads) {
  ReserveScratch(V);
  const int n = static_cast<int>(step_rows_.size());
  // One row per task; rows cost about the same. A single row (or a single
  // thread) stays on this thread: no team to wake for it. A CPU engine's
  // team shrinks while other processes hold cores; more drawing threads than
  // it has would wait too, and their waiting would shrink it further.
  int threads = std::min(draw_threads_, n);
  if (engine_threads > 0) threads = std::min(threads, engine_threads);
#pragma omp parallel for schedule(static, 1) num_threads(threads) if (threads > 1)
  for (int i = 0; i < n; ++i) {
    draws_[i] = DrawToken(*step_rows_[i], logits + static_cast<size_t>(i) * V, omp_get_thread_num(),
                          draw_top_.data() + static_cast<size_t>(i) * kMaxTopLogprobs);
  }
}

bool Scheduler::Emit(Active& seq, const float* logits) {
  ReserveScratch(seq.request.model->snapshot().config.vocab_size);
  const Draw draw = DrawToken(seq, logits, 0, draw_top_.data());
  return Deliver(seq, draw, draw_top_.data());
}

bool Scheduler::Deliver(Active& seq, const Draw& draw, const TokenLogprob* top) {
  GeneratedToken out;
  out.token = draw.token;
  out.index = seq.generated;
  out.logprob = draw.logprob;
  out.top = std::span<const TokenLogprob>(top, draw.top_count);
  const Clock::time_point now = Clock::now();
  if (seq.generated == 0) {
    metrics_->ttft_seconds.Observe(
        std::chrono::duration<double>(now - seq.request.arrival).count());
  } else {
    metrics_->inter_token_seconds.Observe(
        std::chrono::duration<double>(now - seq.last_time).count());
  }
  seq.last_time = now;
  ++metrics_->generated_tokens;
  ++seq.generated;
  seq.last_token = draw.token;
  seq.context.push_back(draw.token);
  if (!seq.request.sink->OnToken(out)) {
    Finish(seq, FinishReason::kStop);
    return false;
  }
  if (seq.generated >= seq.request.max_tokens) {
    Finish(seq, FinishReason::kLength);
    return false;
  }
  return true;
}

void Scheduler::Loop() {
  for (;;) {
    Admission admission = Admit();
    for (SequenceRequest& s : admission.dropped) {
      s.sink->OnFinish(FinishReason::kCancelled);
      ++metrics_->cancelled_sequences;
    }
    for (SequenceRequest& s : admission.not_run) {
      s.sink->OnFinish(FinishReason::kNotRun);
      ++metrics_->cancelled_sequences;
    }
    if (admission.stop) return CancelAll();
    Join(admission.joining);
    // A failed decode step (an allocation the machine cannot give, say) ends
    // the sequences running in it as cancelled, not the service. A failed
    // device ends the service's usefulness: FailDevice.
    try {
      Step();
    } catch (const DeviceError& e) {
      FailDevice(e);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dropk-serve: a decode step failed (%s); ending its %zu sequence(s)\n",
                   e.what(), active_.size());
      for (auto& a : active_) {
        if (a->slot >= 0) Finish(*a, FinishReason::kCancelled);
      }
      active_.clear();
      metrics_->running_batch = 0;
    }
  }
}

Scheduler::Admission Scheduler::Admit() {
  Admission out;
  std::unique_lock<std::mutex> lock(mu_);
  if (pending_.empty() && active_.empty()) {
    idle_ = true;
    idle_cv_.notify_all();
    work_cv_.wait(lock, [this] { return stop_now_ || !pending_.empty(); });
  }
  if (stop_now_) {
    out.stop = true;
    for (PendingRequest& r : pending_) {
      for (SequenceRequest& s : r.sequences) out.not_run.push_back(std::move(s));
    }
    pending_.clear();
    pending_sequences_ = 0;
    metrics_->queue_length = 0;
    return out;
  }
  DropCancelledWaiting(&out.dropped);
  // Turns of one sequence per request, in round-robin order: a request that
  // took a slot goes to the back, so the next free slot goes to another.
  // A model has max_batch slots and fewer than max_batch sequences run, so
  // every joining sequence's model has a free slot.
  const int cap = options_.RunningPerRequest();
  size_t free_slots = options_.max_batch - active_.size();
  size_t skipped = 0;  // requests in a row that could not take a turn
  while (free_slots > 0 && skipped < pending_.size()) {
    PendingRequest request = std::move(pending_.front());
    pending_.pop_front();
    int& running = running_per_request_[request.id];
    if (running < cap) {
      SequenceRequest s = std::move(request.sequences.front());
      request.sequences.pop_front();
      --pending_sequences_;
      if (s.sink->Cancelled()) {
        out.dropped.push_back(std::move(s));
      } else {
        out.joining.emplace_back(request.id, std::move(s));
        ++running;
        --free_slots;
      }
      skipped = 0;
    } else {
      ++skipped;
    }
    if (running == 0) running_per_request_.erase(request.id);
    if (!request.sequences.empty()) pending_.push_back(std::move(request));
  }
  metrics_->queue_length = static_cast<int64_t>(pending_sequences_);
  return out;
}

void Scheduler::DropCancelledWaiting(std::vector<SequenceRequest>* dropped) {
  for (auto request = pending_.begin(); request != pending_.end();) {
    std::deque<SequenceRequest>& waiting = request->sequences;
    for (auto s = waiting.begin(); s != waiting.end();) {
      if (s->sink->Cancelled()) {
        dropped->push_back(std::move(*s));
        s = waiting.erase(s);
        --pending_sequences_;
      } else {
        ++s;
      }
    }
    request = waiting.empty() ? pending_.erase(request) : std::next(request);
  }
}

void Scheduler::Join(std::vector<std::pair<uint64_t, SequenceRequest>>& joining) {
  // Joining sequences of one model are prefilled together, as many as one
  // step takes: one pass over the weights for all their prompts.
  std::vector<std::unique_ptr<Active>> batch;
  int batch_tokens = 0;
  for (auto& [request_id, s] : joining) {
    auto a = std::make_unique<Active>();
    a->request = std::move(s);
    a->request_id = request_id;
    a->context.reserve(a->request.prompt.size() + a->request.max_tokens);
    a->context = a->request.prompt;
    a->last_refill_step = steps_;
    ServingModel& m = *a->request.model;
    a->slot = m.free_slots_.back();
    m.free_slots_.pop_back();
    const int tokens = static_cast<int>(a->request.prompt.size());
    if (!batch.empty() && (batch[0]->request.model != a->request.model ||
                           batch_tokens + tokens > m.engine_->MaxStepTokens())) {
      PrefillTogether(batch);
      batch_tokens = 0;
    }
    batch.push_back(std::move(a));
    batch_tokens += tokens;
  }
  if (!batch.empty()) PrefillTogether(batch);
  joining.clear();
}

void Scheduler::PrefillTogether(std::vector<std::unique_ptr<Active>>& batch) {
  ServingModel& m = *batch[0]->request.model;
  if (device_failed_) {  // an earlier batch failed it: touch it no more
    for (auto& a : batch) Finish(*a, FinishReason::kDeviceFailed);
    batch.clear();
    return;
  }
  prefill_slots_.clear();
  prefill_prompts_.clear();
  for (const auto& a : batch) {
    prefill_slots_.push_back(a->slot);
    prefill_prompts_.emplace_back(a->request.prompt);
  }
  // A failed prefill ends these sequences as cancelled, not the service; a
  // failed device ends every sequence (FailDevice).
  try {
    for (const auto& a : batch) m.engine_->Reset(a->slot);
    const float* logits = m.engine_->PrefillMany(prefill_slots_, prefill_prompts_);
    const size_t V = m.snapshot().config.vocab_size;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (Emit(*batch[i], logits + i * V)) active_.push_back(std::move(batch[i]));
    }
  } catch (const DeviceError& e) {
    for (auto& a : batch) {
      if (a != nullptr) active_.push_back(std::move(a));
    }
    FailDevice(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dropk-serve: a prefill failed (%s); ending its %zu sequence(s)\n",
                 e.what(), batch.size());
    for (auto& a : batch) {
      if (a != nullptr && a->slot >= 0) Finish(*a, FinishReason::kCancelled);
    }
  }
  batch.clear();
}

void Scheduler::Step() {
  // Leave: cancelled sequences free their slots before the step.
  for (auto& a : active_) {
    if (a->request.sink->Cancelled()) Finish(*a, FinishReason::kCancelled);
  }
  std::erase_if(active_, [](const std::unique_ptr<Active>& a) { return a->slot < 0; });
  metrics_->running_batch = static_cast<int64_t>(active_.size());
  // One decode step per model that has running sequences (normally one;
  // two while a hot reload drains the old weights).
  step_models_.clear();
  for (auto& a : active_) {
    ServingModel* m = a->request.model.get();
    if (std::find(step_models_.begin(), step_models_.end(), m) == step_models_.end()) {
      step_models_.push_back(m);
    }
  }
  const std::vector<Active*> refill = ChooseRefills();
  for (ServingModel* m : step_models_) StepModel(m, refill);
  ++steps_;
  std::erase_if(active_, [](const std::unique_ptr<Active>& a) { return a->slot < 0; });
  metrics_->running_batch = static_cast<int64_t>(active_.size());
}

namespace {
bool WindowFull(InferenceEngine& engine, int slot) {
  return engine.Length(slot) >= engine.config().block_size;
}
}  // namespace

std::vector<Scheduler::Active*> Scheduler::ChooseRefills() {
  std::vector<Active*> full;
  bool others_wait = false;  // a sequence with an ordinary decode in this step
  for (auto& a : active_) {
    if (WindowFull(*a->request.model->engine_, a->slot)) {
      full.push_back(a.get());
    } else {
      others_wait = true;
    }
  }
  const size_t limit = static_cast<size_t>(options_.max_window_refills_per_step);
  if (others_wait && full.size() > limit) {
    // Oldest re-run first (ties by batch position), so every full window
    // gets its turn.
    std::stable_sort(full.begin(), full.end(), [](const Active* x, const Active* y) {
      return x->last_refill_step < y->last_refill_step;
    });
    full.resize(limit);
  }
  return full;
}

void Scheduler::StepModel(ServingModel* m, const std::vector<Active*>& refill) {
  step_slots_.clear();
  step_tokens_.clear();
  step_rows_.clear();
  const size_t T = m->snapshot().config.block_size;
  for (auto& a : active_) {
    if (a->request.model.get() != m) continue;
    if (!WindowFull(*m->engine_, a->slot)) {
      step_slots_.push_back(a->slot);
      step_tokens_.push_back(a->last_token);
      step_rows_.push_back(a.get());
      continue;
    }
    if (std::find(refill.begin(), refill.end(), a.get()) == refill.end()) continue;
    // The cache is full: slide the window, as a model with learned positions
    // must (nanoGPT's sample.py crops the same way). The last block_size
    // tokens, ending with the new one, are prefilled again; this sequence
    // alone decides that, so batch invariance holds.
    a->last_refill_step = steps_;
    m->engine_->Reset(a->slot);
    const float* logits = m->engine_->Prefill(
        a->slot, std::span<const int32_t>(a->context).subspan(a->context.size() - T));
    Emit(*a, logits);
  }
  if (step_slots_.empty()) return;
  const float* logits = m->engine_->Decode(step_slots_, step_tokens_);
  // Draw every row's token (in parallel), then tell the sinks in batch
  // order on this thread, as they expect.
  DrawStep(logits, m->snapshot().config.vocab_size, m->engine_->HostThreads());
  for (size_t i = 0; i < step_rows_.size(); ++i) {
    Deliver(*step_rows_[i], draws_[i], draw_top_.data() + i * kMaxTopLogprobs);
  }
}

std::string Scheduler::DeviceFailure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return device_failure_;
}

void Scheduler::FailDevice(const std::exception& error) {
  const std::string why = absl::StrCat("the GPU failed: ", error.what());
  std::vector<SequenceRequest> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (device_failure_.empty()) device_failure_ = why;
    device_failed_ = true;
    accepting_ = false;
    for (PendingRequest& r : pending_) {
      for (SequenceRequest& s : r.sequences) waiting.push_back(std::move(s));
    }
    pending_.clear();
    pending_sequences_ = 0;
    metrics_->queue_length = 0;
  }
  std::fprintf(stderr,
               "dropk-serve: %s; failing %zu running and %zu waiting sequence(s); the GPU cannot "
               "be used again by this process\n",
               why.c_str(), active_.size(), waiting.size());
  for (auto& a : active_) {
    if (a->slot >= 0) Finish(*a, FinishReason::kDeviceFailed);
  }
  active_.clear();
  metrics_->running_batch = 0;
  for (SequenceRequest& s : waiting) s.sink->OnFinish(FinishReason::kDeviceFailed);
}

void Scheduler::CancelAll() {
  for (auto& a : active_) Finish(*a, FinishReason::kCancelled);
  active_.clear();
  metrics_->running_batch = 0;
  std::lock_guard<std::mutex> lock(mu_);
  idle_ = true;
  idle_cv_.notify_all();
}

}  // namespace dropk
