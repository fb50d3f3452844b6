// Philox4x32-10, the counter-based RNG of Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3" (SC'11), as specified by Random123.
//
// A pure function of (counter, key): no state, so any element's random bits
// can be recomputed anywhere (backward pass, resumed run, another rank, a GPU).
// Written with plain 32-bit integer arithmetic only, and marked
// DROPK_HOST_DEVICE, so the CUDA kernels compile this same code: CPU and GPU
// draw bitwise-identical numbers.
#ifndef DROPK_MODEL_PHILOX_H_
#define DROPK_MODEL_PHILOX_H_

#include <cstdint>

#include "model/host_device.h"

namespace dropk {

// Four 32-bit words: a counter or one output block.
struct Philox4x32Block {
  uint32_t v[4];
};

namespace philox_internal {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

DROPK_HOST_DEVICE void MulHiLo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(product >> 32);
  *lo = static_cast<uint32_t>(product);
}

DROPK_HOST_DEVICE void Round(Philox4x32Block* ctr, uint32_t k0, uint32_t k1) {
  uint32_t hi0, lo0, hi1, lo1;
  MulHiLo(kMul0, ctr->v[0], &hi0, &lo0);
  MulHiLo(kMul1, ctr->v[2], &hi1, &lo1);
  const uint32_t c1 = ctr->v[1], c3 = ctr->v[3];
  ctr->v[0] = hi1 ^ c1 ^ k0;
  ctr->v[1] = lo1;
  ctr->v[2] = hi0 ^ c3 ^ k1;
  ctr->v[3] = lo0;
}
}  // namespace philox_internal

// Philox4x32 with 10 rounds: 128 random bits for (counter, key).
DROPK_HOST_DEVICE Philox4x32Block Philox4x32_10(Philox4x32Block counter, uint32_t key0,
                                                uint32_t key1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += philox_internal::kWeyl0;
      key1 += philox_internal::kWeyl1;
    }
    philox_internal::Round(&counter, key0, key1);
  }
  return counter;
}

// Convenience: the 64-bit seed is the key (low word first).
DROPK_HOST_DEVICE Philox4x32Block Philox(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2,
                                         uint32_t c3) {
  Philox4x32Block counter{{c0, c1, c2, c3}};
  return Philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Maps 32 random bits to a float in [0, 1) using the top 24 bits (exact).
DROPK_HOST_DEVICE float UniformFloat(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

}  // namespace dropk

#endif  // DROPK_MODEL_PHILOX_H_
