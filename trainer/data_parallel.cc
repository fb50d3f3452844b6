#include "trainer/data_parallel.h"

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "trainer/config.h"

namespace dropk {

uint64_t FirstSampleOf(int micro, int rank, int world_size, int batch_size) {
  return (static_cast<uint64_t>(micro) * world_size + rank) * batch_size;
}

DropoutPlan DropoutPlanFor(const TrainConfig& config, int64_t step, int micro, int rank,
                           int world_size) {
  const SiteDropout rates = EffectiveDropout(config);
  DropoutPlan plan;
  plan.seed = config.seed();
  plan.rates = {rates.embedding, rates.attention_probs, rates.attention_output, rates.mlp_output};
  if (config.dropout_stream() == TrainConfig::PER_SAMPLE) {
    plan.per_sample = true;
    plan.step = static_cast<uint32_t>(step);
    // CheckSampleStreamsFit keeps every sample's stream within 32 bits.
    const uint64_t first = FirstSampleOf(micro, rank, world_size, config.batch_size());
    DROPK_CHECK(first + config.batch_size() - 1 <= UINT32_MAX)
        << "dropout sample stream " << first << " does not fit 32 bits";
    plan.stream_base = static_cast<uint32_t>(first);
  } else {
    plan.per_sample = false;
    // ValidateTrainConfig bounds max_iters x gradient_accumulation_steps to
    // what the counter holds when masks are drawn (MasksCountMicroBatches);
    // a wrapped counter would repeat earlier masks. Without dropout no mask
    // reads it.
    const int64_t micro_batches = step * config.gradient_accumulation_steps() + micro;
    DROPK_CHECK(!MasksCountMicroBatches(config) ||
                (micro_batches >= 0 && micro_batches <= int64_t{UINT32_MAX}))
        << "dropout step counter " << micro_batches << " does not fit 32 bits";
    plan.step = static_cast<uint32_t>(micro_batches);
    plan.stream_base = static_cast<uint32_t>(rank);
  }
  return plan;
}

absl::Status CheckSampleStreamsFit(const TrainConfig& config, int world_size) {
  if (config.dropout_stream() != TrainConfig::PER_SAMPLE || !EffectiveDropout(config).Any()) {
    return absl::OkStatus();
  }
  const uint64_t samples = static_cast<uint64_t>(world_size) *
                           static_cast<uint64_t>(config.gradient_accumulation_steps()) *
                           static_cast<uint64_t>(config.batch_size());
  constexpr uint64_t kStreams = uint64_t{1} << 32;
  if (samples <= kStreams) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      world_size, " ranks x gradient_accumulation_steps=", config.gradient_accumulation_steps(),
      " x batch_size=", config.batch_size(), " = ", samples,
      " samples per optimizer step: must be at most ", kStreams,
      " with dropout on and dropout_stream: per_sample (each sample's masks have a 32-bit stream "
      "number; past it they would repeat); lower gradient_accumulation_steps or batch_size, or "
      "use dropout_stream: per_rank"));
}

}  // namespace dropk
