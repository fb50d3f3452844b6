// One attention head's key or value held in bf16, and the two products the
// inference engine's attention takes of it, in fp32 and in the orders the
// fp32 cache uses: FixedOrderDot's for a score, one multiply-add per channel
// for the weighted sum of values. Each bf16 is widened exactly, so either
// product over a packed head gives the bits the fp32 code gives over the
// widened values (tests/model/bf16_head_test.cc checks both vector widths).
//
// Layout of a packed head of n values: each whole 16 values [16i, 16i + 16)
// are stored as 8 pairs (x[16i + j], x[16i + 8 + j]), j = 0..7; the last
// n % 16 values follow in order. A load of 2W bf16s (W pairs) then splits
// into the W lanes of one float vector and the W lanes 8 further on by a
// shift and a mask of 32-bit words (as cpu/panel_matmul.cc's bf16 panels
// do): no widening that crosses lanes. Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_BF16_HEAD_H_
#define DROPK_MODEL_CPU_BF16_HEAD_H_

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/bf16_matmul.h"
#include "cpu/fixed_order_dot.h"

namespace dropk {

// Where a packed head keeps value d of n.
inline int Bf16HeadSlot(int d, int n) {
  const int whole = n / kDotLanes * kDotLanes;
  if (d >= whole) return d;
  const int chunk = d - d % kDotLanes, j = d % kDotLanes;
  return chunk + (j < kDotLanes / 2 ? 2 * j : 2 * (j - kDotLanes / 2) + 1);
}

// dst (n bf16s, packed) = src (n floats), each rounded to the nearest bf16
// (ties to even, as ToBf16Bits).
inline void PackBf16Head(uint16_t* dst, const float* src, int n) {
  for (int d = 0; d < n; ++d) dst[Bf16HeadSlot(d, n)] = ToBf16Bits(src[d]);
}

// dst (n floats) = the packed head src widened, in order (exact).
inline void UnpackBf16Head(float* dst, const uint16_t* src, int n) {
  for (int d = 0; d < n; ++d) dst[d] = Bf16BitsToFloat(src[Bf16HeadSlot(d, n)]);
}

// The 32-bit word vector as wide as Lanes.
template <typename Lanes>
using WordsLike = std::conditional_t<sizeof(Lanes) == 32, uint32_t __attribute__((vector_size(32))),
                                     uint32_t __attribute__((vector_size(16)))>;

// The W = lanes-of-Lanes pairs at p: *lo = their first values, *hi = their
// second, widened to floats (a bf16 is a float's upper half).
template <typename Lanes>
inline void WidenBf16Pairs(const uint16_t* p, Lanes* lo, Lanes* hi) {
  using Words = WordsLike<Lanes>;
  static_assert(sizeof(Words) == sizeof(Lanes));
  Words pairs;
  std::memcpy(&pairs, p, sizeof pairs);
  *lo = std::bit_cast<Lanes>(Words(pairs << 16));
  *hi = std::bit_cast<Lanes>(Words(pairs & 0xFFFF0000u));
}

// a · (packed head b, widened) over n values: FixedOrderDot(a, widened b, n)
// bit for bit, its 16 lanes held in vectors of Lanes (DotLanes by default;
// the tests run Lanes4 and Lanes8 both).
template <typename Lanes = DotLanes>
inline float FixedOrderDotBf16(const float* a, const uint16_t* b, int n) {
  constexpr int kWidth = sizeof(Lanes) / sizeof(float);
  constexpr int kVectors = kDotLanes / kWidth;
  constexpr int kHalf = kDotLanes / 2;
  Lanes acc[kVectors] = {};
  int i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes) {
    // Pairs [p, p + W) hold lanes [p, p + W) and [8 + p, 8 + p + W).
    for (int p = 0; p < kHalf; p += kWidth) {
      Lanes lo, hi;
      WidenBf16Pairs(b + i + 2 * p, &lo, &hi);
      acc[p / kWidth] += LoadLanes<Lanes>(a + i + p) * lo;
      acc[(kHalf + p) / kWidth] += LoadLanes<Lanes>(a + i + kHalf + p) * hi;
    }
  }
  // The tail is stored in order: FinishDot's sum over the widened values.
  float tail = 0.0f;
  for (; i < n; ++i) tail = MulAdd(a[i], Bf16BitsToFloat(b[i]), tail);
  return SumLanes(acc) + tail;
}

// o[d] = MulAdd(p, (packed head v, widened)[d], o[d]) for d < n: what the
// fp32 cache's loop does over the widened values (the vector body's
// o + scale * lo is contracted to a fused multiply-add exactly where MulAdd
// is one: on targets with FMA).
template <typename Lanes = DotLanes>
inline void AddScaledBf16(float* o, float p, const uint16_t* v, int n) {
  constexpr int kWidth = sizeof(Lanes) / sizeof(float);
  constexpr int kHalf = kDotLanes / 2;
  Lanes scale = {};
  for (int k = 0; k < kWidth; ++k) scale[k] = p;
  int i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes) {
    for (int q = 0; q < kHalf; q += kWidth) {
      Lanes lo, hi;
      WidenBf16Pairs(v + i + 2 * q, &lo, &hi);
      const Lanes o_lo = LoadLanes<Lanes>(o + i + q) + scale * lo;
      const Lanes o_hi = LoadLanes<Lanes>(o + i + kHalf + q) + scale * hi;
      std::memcpy(o + i + q, &o_lo, sizeof o_lo);
      std::memcpy(o + i + kHalf + q, &o_hi, sizeof o_hi);
    }
  }
  for (; i < n; ++i) o[i] = MulAdd(p, Bf16BitsToFloat(v[i]), o[i]);
}

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_BF16_HEAD_H_
