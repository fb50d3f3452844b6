#include "model/dropout.h"

#include <algorithm>

namespace dropk {
namespace {

// Philox blocks generated side by side: 16 32-bit lanes fill an AVX-512
// register, and a batch of 64 decisions amortises the odd ends of a run.
constexpr int kLanes = 32;

// words[4 * j + w] = word w of Philox(seed, counter = (block0 + j, c1, c2,
// c3)), j < kLanes: the random words of elements 4 * block0 onwards, in
// order. Computed as Philox4x32_10 does, bit for bit, but across kLanes
// counters at once with the state kept word-major (one array per word), so
// that each round is a few vector operations over all lanes: Philox4x32_10
// on one block at a time does not vectorise.
void PhiloxLanes(uint64_t seed, uint64_t block0, uint32_t c1, uint32_t c2, uint32_t c3,
                 uint32_t words[4 * kLanes]) {
  using namespace philox_internal;
  uint32_t x0[kLanes], x1[kLanes], x2[kLanes], x3[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    x0[j] = static_cast<uint32_t>(block0 + j);
    x1[j] = c1;
    x2[j] = c2;
    x3[j] = c3;
  }
  uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  // Unrolling the rounds too would lead GCC into a scalar mess.
#pragma GCC unroll 1
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kWeyl0;
      key1 += kWeyl1;
    }
    // philox_internal::Round, lane by lane.
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      const uint64_t product0 = static_cast<uint64_t>(kMul0) * x0[j];
      const uint64_t product1 = static_cast<uint64_t>(kMul1) * x2[j];
      const uint32_t next0 = static_cast<uint32_t>(product1 >> 32) ^ x1[j] ^ key0;
      const uint32_t next2 = static_cast<uint32_t>(product0 >> 32) ^ x3[j] ^ key1;
      x0[j] = next0;
      x1[j] = static_cast<uint32_t>(product1);
      x2[j] = next2;
      x3[j] = static_cast<uint32_t>(product0);
    }
  }
  for (int j = 0; j < kLanes; ++j) {
    words[4 * j] = x0[j];
    words[4 * j + 1] = x1[j];
    words[4 * j + 2] = x2[j];
    words[4 * j + 3] = x3[j];
  }
}

}  // namespace

void DropoutScales(uint64_t seed, uint32_t stream, uint32_t site, uint32_t step, uint64_t e0,
                   int64_t n, float p, float* scale) {
  const uint64_t threshold = DropoutKeepThreshold(p);
  const float keep_scale = DropoutKeepScale(p);
  // Elements [e0, e0 + n) lie in blocks [e0 / 4, (e0 + n + 3) / 4); each
  // batch covers kLanes blocks, of which the run may use only part at either end.
  const uint64_t first_block = e0 >> 2, end = e0 + static_cast<uint64_t>(n);
  uint32_t words[4 * kLanes];
  for (uint64_t block0 = first_block; block0 * 4 < end; block0 += kLanes) {
    PhiloxLanes(seed, block0, stream, site, step, words);
    const uint64_t lo = std::max(e0, block0 * 4), hi = std::min(end, (block0 + kLanes) * 4);
    const uint32_t* word = words + (lo - block0 * 4);
    float* out = scale + (lo - e0);
    const int64_t count = static_cast<int64_t>(hi - lo);
#pragma omp simd
    for (int64_t i = 0; i < count; ++i) out[i] = word[i] < threshold ? keep_scale : 0.0f;
  }
}

}  // namespace dropk
