// How a data-parallel step is split: which samples of the global batch each
// (rank, micro-batch) reads, and which dropout randomness it draws (DESIGN
// invariant 1).
#ifndef DROPK_TRAINER_DATA_PARALLEL_H_
#define DROPK_TRAINER_DATA_PARALLEL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "config.pb.h"
#include "model/dropout.h"

namespace dropk {

// Index of the first sample of micro-batch `micro` of `rank` in the global
// batch of world_size ranks: micro-batch m of every rank comes before
// micro-batch m + 1 of any, so N ranks x 1 micro-batch read the same samples
// as 1 rank x N micro-batches.
uint64_t FirstSampleOf(int micro, int rank, int world_size, int batch_size);

// The dropout plan of micro-batch `micro` of optimizer step `step` on `rank`:
//   PER_RANK:   stream = rank, step = micro-batches since the start of
//               training (step * accumulation + micro); masks differ between
//               ranks and between micro-batches.
//   PER_SAMPLE: stream = the sample's index in the global batch, step = the
//               optimizer step; masks do not depend on the number of ranks or
//               micro-batches.
// Precondition: CheckSampleStreamsFit(config, world_size) is OK (checked).
DropoutPlan DropoutPlanFor(const TrainConfig& config, int64_t step, int micro, int rank,
                           int world_size);

// OK unless PER_SAMPLE masks are drawn (dropout on, dropout_stream:
// per_sample) and a global batch of world_size x gradient_accumulation_steps
// x batch_size samples has more samples than their 32-bit stream numbers
// (past it, later samples would reuse earlier samples' masks); then
// InvalidArgument naming the three and the limit. Checked at start, once the
// world size is known.
absl::Status CheckSampleStreamsFit(const TrainConfig& config, int world_size);

}  // namespace dropk

#endif  // DROPK_TRAINER_DATA_PARALLEL_H_
