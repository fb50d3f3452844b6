// Which tokens every sample of every step reads. A sample is a window of
// block_size + 1 tokens at an offset drawn from Philox keyed by the seed, the
// step and the sample's index in the optimizer step's global batch, so the
// global batch is a pure function of (seed, step): the same on rerun, after
// resume, and however it is split across ranks and micro-batches.
#ifndef DROPK_TRAINER_BATCH_LOADER_H_
#define DROPK_TRAINER_BATCH_LOADER_H_

#include <cstdint>

#include "trainer/token_file.h"

namespace dropk {

class BatchLoader {
 public:
  // data must outlive the loader and hold more than block_size tokens.
  // `split` keeps the random streams of different uses apart (training
  // batches, evaluation batches of train and of val).
  BatchLoader(const TokenFile* data, uint64_t seed, int block_size, uint32_t split);

  // The start offset of sample `sample` of step `step`, in [0, size - T - 1].
  uint64_t SampleOffset(uint64_t step, uint64_t sample) const;

  // Fills inputs and targets (B, T) with samples first_sample ..
  // first_sample + B - 1 of step `step`; targets are inputs shifted by one.
  void Fill(uint64_t step, uint64_t first_sample, int B, int32_t* inputs,
            int32_t* targets) const;

  int block_size() const { return block_size_; }

 private:
  const TokenFile* data_;
  uint64_t seed_;
  int block_size_;
  uint32_t split_;
};

// The split keys of BatchLoader.
constexpr uint32_t kTrainBatches = 1;
constexpr uint32_t kEvalTrainBatches = 2;
constexpr uint32_t kEvalValBatches = 3;

}  // namespace dropk

#endif  // DROPK_TRAINER_BATCH_LOADER_H_
