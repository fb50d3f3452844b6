#include "trainer/schedule.h"

#include <cmath>

namespace dropk {

float LearningRateAt(const TrainConfig& config, int64_t step) {
  const double lr = config.learning_rate(), min_lr = config.min_lr();
  const int64_t warmup = config.warmup_iters(), decay_end = config.lr_decay_iters();
  if (step < warmup) return static_cast<float>(lr * (step + 1) / (warmup + 1));
  if (step > decay_end || decay_end <= warmup) return static_cast<float>(min_lr);
  const double ratio = static_cast<double>(step - warmup) / (decay_end - warmup);
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return static_cast<float>(min_lr + coeff * (lr - min_lr));
}

}  // namespace dropk
