// The learning-rate schedule of nanoGPT: linear warmup to learning_rate over
// warmup_iters, cosine decay to min_lr at lr_decay_iters, min_lr after.
#ifndef DROPK_TRAINER_SCHEDULE_H_
#define DROPK_TRAINER_SCHEDULE_H_

#include <cstdint>

#include "config.pb.h"

namespace dropk {

// The learning rate of optimizer step `step` (0-based).
float LearningRateAt(const TrainConfig& config, int64_t step);

}  // namespace dropk

#endif  // DROPK_TRAINER_SCHEDULE_H_
