#include "trainer/batch_loader.h"

#include "model/philox.h"

namespace dropk {
namespace {
constexpr uint32_t kPermuteStream = 0x5045524Du;  // "PERM"
constexpr uint32_t kShiftStream = 0x53484654u;    // "SHFT"
constexpr int kFeistelRounds = 4;
}  // namespace

uint64_t PermuteIndex(uint64_t x, uint64_t n, uint64_t seed, uint32_t key_hi, uint32_t key_lo) {
  int bits = 2;
  while (bits < 64 && (uint64_t{1} << bits) < n) bits += 2;
  const int half = bits / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  do {
    uint64_t left = x >> half, right = x & mask;
    for (int round = 0; round < kFeistelRounds; ++round) {
      const Philox4x32Block r =
          Philox(seed, static_cast<uint32_t>(right), static_cast<uint32_t>(right >> 32) ^ round,
                 key_hi, key_lo ^ kPermuteStream);
      const uint64_t f = ((static_cast<uint64_t>(r.v[0]) << 32) | r.v[1]) & mask;
      const uint64_t next = left ^ f;
      left = right;
      right = next;
    }
    x = (left << half) | right;
  } while (x >= n);  // cycle-walk: the walk stays inside the cycle of x, so it ends in [0, n)
  return x;
}

BatchLoader::BatchLoader(const TokenDataset* data, uint64_t seed, int block_size, uint32_t split,
                         uint64_t samples_per_step)
    : data_(data),
      seed_(seed),
      block_size_(block_size),
      split_(split),
      samples_per_step_(samples_per_step) {
  const uint64_t n = data->size(), T = block_size;
  if (n >= 2 * T) {
    windows_ = (n - T) / T;  // grid offset + k*T with offset < T: last window ends by n
    shift_range_ = T;
  } else {
    windows_ = 1;  // tiny data: one window anywhere it fits
    shift_range_ = n - T;
  }
}

uint64_t BatchLoader::SampleOffset(uint64_t step, uint64_t sample) const {
  const uint64_t position = step * samples_per_step_ + sample;
  const uint64_t epoch = position / windows_;
  const uint64_t index = position % windows_;
  const uint32_t epoch_lo = static_cast<uint32_t>(epoch);
  const uint32_t key_hi = static_cast<uint32_t>(epoch >> 32) ^ (split_ << 24);
  const uint64_t window = PermuteIndex(index, windows_, seed_, key_hi, epoch_lo);
  const Philox4x32Block r = Philox(seed_, epoch_lo, key_hi, kShiftStream, split_);
  const uint64_t shift = r.v[0] % shift_range_;
  return shift + window * static_cast<uint64_t>(block_size_);
}

void BatchLoader::Fill(uint64_t step, uint64_t first_sample, int B, int32_t* inputs,
                       int32_t* targets) const {
  const int T = block_size_;
  for (int b = 0; b < B; ++b) {
    const uint64_t offset = SampleOffset(step, first_sample + b);
    data_->Read(offset, T, inputs + static_cast<size_t>(b) * T);
    data_->Read(offset + 1, T, targets + static_cast<size_t>(b) * T);
  }
}

}  // namespace dropk
