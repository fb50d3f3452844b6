// Which tokens every sample of every step reads.
//
// The data is cut into windows of block_size + 1 tokens (input and target).
// Each epoch shifts the window grid by a random offset and visits the
// windows in a random order, so within an epoch no window is read twice,
// whatever the number of ranks or micro-batches. The order is a keyed
// permutation (a Feistel network over Philox, cycle-walked to the window
// count), so the sample at any position is computed directly: the global
// batch of each step is a pure function of (seed, step), the same on rerun,
// after resume, and however it is split. Sample s of step t is the window at
// position t * samples_per_step + s of the endless sequence of epochs.
#ifndef DROPK_TRAINER_BATCH_LOADER_H_
#define DROPK_TRAINER_BATCH_LOADER_H_

#include <cstdint>

#include "trainer/token_dataset.h"

namespace dropk {

// A bijection of [0, n) keyed by (seed, key): a 4-round Feistel network on
// the smallest even-bit power of two >= n, cycle-walked into range.
// n >= 1; x < n.
uint64_t PermuteIndex(uint64_t x, uint64_t n, uint64_t seed, uint32_t key_hi, uint32_t key_lo);

class BatchLoader {
 public:
  // data must outlive the loader and hold more than block_size tokens.
  // samples_per_step is the global batch (batch_size * accumulation * ranks).
  // `split` keeps the streams of different uses apart (training batches,
  // evaluation batches of train and of val).
  BatchLoader(const TokenDataset* data, uint64_t seed, int block_size, uint32_t split,
              uint64_t samples_per_step);

  // Windows per epoch.
  uint64_t windows_per_epoch() const { return windows_; }

  // The start offset of sample `sample` (index in the global batch) of step
  // `step`, in [0, size - block_size - 1].
  uint64_t SampleOffset(uint64_t step, uint64_t sample) const;

  // Fills inputs and targets (B, T) with samples first_sample ..
  // first_sample + B - 1 of step `step`; targets are inputs shifted by one.
  void Fill(uint64_t step, uint64_t first_sample, int B, int32_t* inputs, int32_t* targets) const;

  int block_size() const { return block_size_; }

 private:
  const TokenDataset* data_;
  uint64_t seed_;
  int block_size_;
  uint32_t split_;
  uint64_t samples_per_step_;
  uint64_t windows_;      // per epoch
  uint64_t shift_range_;  // the epoch's grid shift is drawn from [0, shift_range_)
};

// The split keys of BatchLoader.
constexpr uint32_t kTrainBatches = 1;
constexpr uint32_t kEvalTrainBatches = 2;
constexpr uint32_t kEvalValBatches = 3;

}  // namespace dropk

#endif  // DROPK_TRAINER_BATCH_LOADER_H_
