#include "trainer/data_parallel.h"

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
    plan.step = static_cast<uint32_t>(step * config.gradient_accumulation_steps() + micro);
    plan.stream_base = static_cast<uint32_t>(rank);
  }
  return plan;
}

}  // namespace dropk
