#include "trainer/data_parallel.h"

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
    plan.stream_base =
        static_cast<uint32_t>(FirstSampleOf(micro, rank, world_size, config.batch_size()));
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

}  // namespace dropk
