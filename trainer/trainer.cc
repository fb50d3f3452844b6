#include "trainer/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/generate.h"
#include "model/gpt.h"
#include "model/kernels.h"
#include "trainer/batch_loader.h"
#include "trainer/config.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"
#include "trainer/schedule.h"
#include "trainer/training_checkpoints.h"

namespace dropk {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Mean loss over eval_iters fixed held-out batches, without dropout.
float EvaluateLoss(Gpt& gpt, const BatchLoader& loader, int batches, int B,
                   std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  double total = 0.0;
  for (int i = 0; i < batches; ++i) {
    loader.Fill(/*step=*/i, /*first_sample=*/0, B, inputs.data(), targets.data());
    total += gpt.Forward(inputs.data(), targets.data(), B, loader.block_size(), nullptr);
  }
  return static_cast<float>(total / batches);
}

// The dropout plan of micro-batch `micro` of optimizer step `step` on `rank`
// of `world_size` (DESIGN invariant 1).
DropoutPlan PlanFor(const TrainConfig& config, int64_t step, int micro, int rank, int world_size) {
  const SiteDropout rates = EffectiveDropout(config);
  DropoutPlan plan;
  plan.seed = config.seed();
  plan.rates = {rates.embedding, rates.attention_probs, rates.attention_output, rates.mlp_output};
  if (config.dropout_stream() == TrainConfig::PER_SAMPLE) {
    plan.per_sample = true;
    plan.step = static_cast<uint32_t>(step);
    plan.stream_base =
        static_cast<uint32_t>((static_cast<int64_t>(micro) * world_size + rank) * config.batch_size());
  } else {
    plan.per_sample = false;
    plan.step = static_cast<uint32_t>(step * config.gradient_accumulation_steps() + micro);
    plan.stream_base = static_cast<uint32_t>(rank);
  }
  return plan;
}

}  // namespace

absl::StatusOr<TrainingData> LoadTrainingData(const std::string& data_dir) {
  const std::string tokenizer_path = data_dir + "/tokenizer.pb";
  absl::StatusOr<TextTokenizer> tokenizer = LoadTokenizer(tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<TokenFile> train = TokenFile::Open(data_dir + "/train.bin");
  if (!train.ok()) return train.status();
  absl::StatusOr<TokenFile> val = TokenFile::Open(data_dir + "/val.bin");
  if (!val.ok()) return val.status();
  for (const TokenFile* f : {&*train, &*val}) {
    if (f->vocab_size() != tokenizer->vocab_size()) {
      return absl::FailedPreconditionError(
          absl::StrCat(f->path(), ": vocab_size ", f->vocab_size(), " differs from ",
                       tokenizer_path, "'s ", tokenizer->vocab_size(),
                       "; prepare the data again with `dropk data prepare`"));
    }
  }
  return TrainingData{std::move(*tokenizer), std::move(*train), std::move(*val)};
}

absl::StatusOr<TrainSummary> RunTraining(const TrainConfig& config, std::ostream& log) {
  absl::StatusOr<TrainingData> data = LoadTrainingData(config.data_dir());
  if (!data.ok()) return data.status();
  if (absl::Status s = ValidateAgainstData(config, data->train.size(), data->val.size()); !s.ok()) {
    return s;
  }
  std::vector<int32_t> prompt;
  if (config.sample_tokens() > 0) {
    absl::StatusOr<std::vector<int32_t>> encoded = data->tokenizer.Encode(config.sample_prompt());
    if (!encoded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample_prompt: ", encoded.status().message()));
    }
    prompt = *std::move(encoded);
    if (prompt.empty()) return absl::InvalidArgumentError("sample_prompt: must not be empty");
  }
  std::error_code ec;
  std::filesystem::create_directories(config.out_dir(), ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("out_dir=", config.out_dir(), ": cannot create: ", ec.message()));
  }

  absl::StatusOr<std::unique_ptr<Kernels>> kernels = MakeKernels(Device::kCpu, config.num_threads());
  if (!kernels.ok()) return kernels.status();
  const GptConfig shape{data->tokenizer.vocab_size(), config.block_size(), config.n_layer(),
                        config.n_head(), config.n_embd()};
  const int B = config.batch_size(), T = config.block_size();
  const int accum = config.gradient_accumulation_steps();
  absl::StatusOr<std::unique_ptr<Gpt>> created = Gpt::Create(shape, B, kernels->get());
  if (!created.ok()) return created.status();
  Gpt& gpt = **created;
  gpt.InitWeights(config.seed());
  AdamWOptimizer optimizer(&gpt, {config.beta1(), config.beta2(), 1e-8f, config.weight_decay()});

  // Checkpoints: resume (or not), then save on schedule and on SIGTERM/SIGINT.
  std::unique_ptr<Communicator> comm = MakeSingleProcessCommunicator();
  InstallStopSignalHandlers();
  absl::StatusOr<ResumePoint> resume =
      MaybeResume(config, data->tokenizer.proto(), gpt, optimizer, comm->Size(), log);
  if (!resume.ok()) return resume.status();
  TrainingCheckpointer checkpointer(config, comm.get());
  absl::StatusOr<MetricsLog> metrics =
      resume->resumed ? MetricsLog::OpenForResume(config.out_dir() + "/metrics.jsonl", resume->step)
                      : MetricsLog::Create(config.out_dir() + "/metrics.jsonl");
  if (!metrics.ok()) return metrics.status();

  const BatchLoader train_batches(&data->train, config.seed(), T, kTrainBatches);
  const BatchLoader eval_train_batches(&data->train, config.seed(), T, kEvalTrainBatches);
  const BatchLoader eval_val_batches(&data->val, config.seed(), T, kEvalValBatches);
  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  const int64_t tokens_per_step = static_cast<int64_t>(B) * T * accum;

  log << absl::StrFormat(
             "dropk-train: %d parameters (%d layers, %d heads, %d embd, vocab %d, context %d), "
             "%d tokens/step, %s\n",
             gpt.num_params(), shape.n_layer, shape.n_head, shape.n_embd, shape.vocab_size, T,
             tokens_per_step, (*kernels)->Describe())
      << std::flush;

  TrainSummary summary;
  summary.steps = resume->step;
  summary.last_train_loss = resume->last_train_loss;
  summary.resumed_from = resume->dir;
  const int64_t max_steps = config.max_iters();
  const Clock::time_point start = Clock::now();
  double train_seconds = 0.0;          // excluding evaluation
  double window_seconds = 0.0;         // since the last progress line
  int64_t window_tokens = 0;
  for (int64_t step = resume->step; step <= max_steps; ++step) {
    MetricsRow row;
    row.step = step;
    row.lr = LearningRateAt(config, step);
    const bool evaluate = step % config.eval_interval() == 0 || step == max_steps;
    if (evaluate) {
      row.eval_train_loss = EvaluateLoss(gpt, eval_train_batches, config.eval_iters(), B, inputs, targets);
      row.val_loss = EvaluateLoss(gpt, eval_val_batches, config.eval_iters(), B, inputs, targets);
      summary.eval_train_loss = row.eval_train_loss;
      summary.val_loss = row.val_loss;
    }
    if (step == max_steps) {
      // The last iteration only evaluates the final parameters.
      row.elapsed_s = SecondsSince(start);
      row.tokens_per_s = train_seconds > 0 ? tokens_per_step * (step - resume->step) / train_seconds : 0;
      row.train_loss = summary.last_train_loss;
      log << ProgressLine(row, max_steps) << "\n" << std::flush;
      if (absl::Status s = metrics->Append(row); !s.ok()) return s;
      break;
    }

    const Clock::time_point step_start = Clock::now();
    gpt.ZeroGrad();
    double loss_sum = 0.0;
    for (int micro = 0; micro < accum; ++micro) {
      train_batches.Fill(step, static_cast<uint64_t>(micro) * B, B, inputs.data(), targets.data());
      const DropoutPlan plan = PlanFor(config, step, micro, /*rank=*/0, /*world_size=*/1);
      loss_sum += gpt.Forward(inputs.data(), targets.data(), B, T, &plan);
      gpt.Backward(1.0f / accum);
    }
    const double norm = std::sqrt(gpt.kernels()->SumSquares(gpt.grads(), gpt.num_params()));
    optimizer.Step(row.lr, ClipScale(norm, config.grad_clip()));
    const double step_seconds = SecondsSince(step_start);
    train_seconds += step_seconds;
    window_seconds += step_seconds;
    window_tokens += tokens_per_step;
    const float loss = static_cast<float>(loss_sum / accum);
    if (!std::isfinite(loss)) {
      return absl::InternalError(absl::StrCat(
          "step ", step, ": training loss is ", loss,
          "; lower learning_rate (", config.learning_rate(), ") or enable grad_clip"));
    }
    summary.last_train_loss = loss;
    summary.steps = step + 1;

    if (step % config.log_interval() == 0 || evaluate) {
      row.train_loss = loss;
      row.elapsed_s = SecondsSince(start);
      row.tokens_per_s = window_seconds > 0 ? window_tokens / window_seconds : 0;
      row.eta_s = train_seconds / (step + 1) * (max_steps - step - 1);
      window_seconds = 0;
      window_tokens = 0;
      log << ProgressLine(row, max_steps) << "\n" << std::flush;
      if (absl::Status s = metrics->Append(row); !s.ok()) return s;
    }

    const bool stop = StopRequested();
    if (stop || checkpointer.Due(step + 1, max_steps)) {
      if (absl::Status s = checkpointer.Save(config, data->tokenizer.proto(), gpt, optimizer,
                                             step + 1, tokens_per_step * (step + 1),
                                             summary.last_train_loss, log);
          !s.ok()) {
        return s;
      }
    }
    if (stop) {
      summary.stopped_by_signal = true;
      break;
    }
  }
  summary.elapsed_s = SecondsSince(start);
  summary.tokens_per_s =
      train_seconds > 0 ? tokens_per_step * (summary.steps - resume->step) / train_seconds : 0;

  if (config.sample_tokens() > 0 && !summary.stopped_by_signal) {
    SamplingOptions sampling;
    sampling.temperature = config.sample_temperature();
    sampling.top_k = config.sample_top_k();
    sampling.seed = config.seed();
    absl::StatusOr<std::vector<int32_t>> ids =
        Generate(gpt, prompt, config.sample_tokens(), sampling);
    if (!ids.ok()) return ids.status();
    summary.sample = config.sample_prompt() + data->tokenizer.Decode(*ids);
  }
  return summary;
}

}  // namespace dropk
