#include "model/dropout.h"

#include <algorithm>

#if defined(__AVX512F__) && defined(__BMI2__)
#include <immintrin.h>
#define DROPK_PHILOX_AVX512 1
// GCC 12's AVX-512 headers trip its own -Wuninitialized (GCC bug 105593,
// the `__Y = __Y` of _mm512_undefined_epi32) wherever a shift or product is
// inlined; the warning is about the header, not this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace dropk {
namespace {

#ifndef DROPK_PHILOX_AVX512
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

#endif  // !DROPK_PHILOX_AVX512

#ifdef DROPK_PHILOX_AVX512
// The AVX-512 form of PhiloxLanes for 2 x 16 counters, with the keep
// decision taken in registers: GCC's vectorisation of the lane loop above
// narrows each 64-bit product back to 32 bits, which costs more than the
// product. Here the products of the even and of the odd lanes
// (_mm512_mul_epu32) are blended into hi and lo words directly.
//
// keep[k] gets bit i = element 4 * block0 + 64 * k + i is kept (word < threshold).
struct PhiloxVectors {
  __m512i x0, x1, x2, x3;
};

inline void MulHiLo(__m512i x, __m512i multiplier, __m512i* hi, __m512i* lo) {
  const __m512i even = _mm512_mul_epu32(x, multiplier);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), multiplier);
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

inline void RoundOf(PhiloxVectors* v, __m512i key0, __m512i key1) {
  using namespace philox_internal;
  __m512i hi0, lo0, hi1, lo1;
  MulHiLo(v->x0, _mm512_set1_epi32(static_cast<int>(kMul0)), &hi0, &lo0);
  MulHiLo(v->x2, _mm512_set1_epi32(static_cast<int>(kMul1)), &hi1, &lo1);
  v->x0 = _mm512_ternarylogic_epi32(hi1, v->x1, key0, 0x96);  // three-way xor
  v->x2 = _mm512_ternarylogic_epi32(hi0, v->x3, key1, 0x96);
  v->x1 = lo1;
  v->x3 = lo0;
}

// 16 bits, one per lane, of the keep decisions of word w of each block,
// spread to bit 4 * lane + w of a 64-bit mask.
inline uint64_t Spread(__m512i words, __m512i threshold, bool keep_all, int w) {
  const uint64_t lanes = keep_all ? 0xFFFFu : _mm512_cmplt_epu32_mask(words, threshold);
  return _pdep_u64(lanes, 0x1111111111111111ull << w);
}

void PhiloxKeepMasks(uint64_t seed, uint64_t block0, uint32_t c1, uint32_t c2, uint32_t c3,
                     uint64_t threshold, uint64_t keep[2]) {
  using namespace philox_internal;
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  PhiloxVectors v[2];
  for (int k = 0; k < 2; ++k) {
    v[k].x0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(block0 + 16 * k)), iota);
    v[k].x1 = _mm512_set1_epi32(static_cast<int>(c1));
    v[k].x2 = _mm512_set1_epi32(static_cast<int>(c2));
    v[k].x3 = _mm512_set1_epi32(static_cast<int>(c3));
  }
  uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kWeyl0;
      key1 += kWeyl1;
    }
    const __m512i k0 = _mm512_set1_epi32(static_cast<int>(key0));
    const __m512i k1 = _mm512_set1_epi32(static_cast<int>(key1));
    RoundOf(&v[0], k0, k1);
    RoundOf(&v[1], k0, k1);
  }
  // A threshold of 2^32 (p = 0) keeps every word; it does not fit 32 bits.
  const bool keep_all = threshold > 0xFFFFFFFFull;
  const __m512i t = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(threshold)));
  for (int k = 0; k < 2; ++k) {
    keep[k] = Spread(v[k].x0, t, keep_all, 0) | Spread(v[k].x1, t, keep_all, 1) |
              Spread(v[k].x2, t, keep_all, 2) | Spread(v[k].x3, t, keep_all, 3);
  }
}
#endif  // DROPK_PHILOX_AVX512

}  // namespace

void DropoutScales(uint64_t seed, uint32_t stream, uint32_t site, uint32_t step, uint64_t e0,
                   int64_t n, float p, float* scale) {
  const uint64_t threshold = DropoutKeepThreshold(p);
  const float keep_scale = DropoutKeepScale(p);
  const uint64_t first_block = e0 >> 2, end = e0 + static_cast<uint64_t>(n);
#ifdef DROPK_PHILOX_AVX512
  // Batches of 32 blocks (128 elements), stored 16 at a time: a group of 16
  // that starts inside the run is one store, masked where the run ends; only
  // the group holding e0, when e0 is not its first element, goes element by
  // element (writing the whole group would write before `scale`).
  const __m512 kept = _mm512_set1_ps(keep_scale);
  for (uint64_t block0 = first_block; block0 * 4 < end; block0 += 32) {
    uint64_t keep[2];
    PhiloxKeepMasks(seed, block0, stream, site, step, threshold, keep);
    const uint64_t base = block0 * 4;  // the element of keep's bit 0
    const uint64_t lo = std::max(e0, base), hi = std::min(end, base + 128);
    for (int q = 0; q < 8; ++q) {
      const uint64_t g0 = base + 16 * q, g1 = std::min(hi, g0 + 16);
      if (g1 <= lo || g0 >= hi) continue;
      if (g0 >= lo) {
        const __mmask16 keep16 = static_cast<__mmask16>(keep[q / 4] >> (16 * (q % 4)));
        const __mmask16 in_run = static_cast<__mmask16>((1u << (g1 - g0)) - 1u);
        _mm512_mask_storeu_ps(scale + (g0 - e0), in_run, _mm512_maskz_mov_ps(keep16, kept));
      } else {
        for (uint64_t e = lo; e < g1; ++e) {
          const uint64_t bit = e - base;
          scale[e - e0] = (keep[bit / 64] >> (bit % 64)) & 1 ? keep_scale : 0.0f;
        }
      }
    }
  }
#else
  // Elements [e0, e0 + n) lie in blocks [e0 / 4, (e0 + n + 3) / 4); each
  // batch covers kLanes blocks, of which the run may use only part at either end.
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
#endif
}

}  // namespace dropk
