// A dot product summed in one fixed order, for the inference engine's
// attention scores: the score of a query and a cached key depends only on
// those two vectors, never on the step's other rows (batch invariance).
//
// The order, for a dot of a and b over n: 16 lanes of strided partial sums
// (lane j sums a[i+j]*b[i+j] for i = 0, 16, 32, ...), a fixed pairwise tree
// over the lanes, then the tail past the last full 16 added to lane 0 in
// index order. (The engine's products use another fixed order, one chain
// per output: cpu/panel_matmul.h.) Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_FIXED_ORDER_DOT_H_
#define DROPK_MODEL_CPU_FIXED_ORDER_DOT_H_

#include <cmath>
#include <cstring>

namespace dropk {

inline constexpr int kDotLanes = 16;

// Float vectors (GCC/Clang vector extension) of 8, 4 and 2 lanes. A dot's
// 16 lanes are held in 16 / width vectors of one of them: lane j is element
// j % width of vector j / width. Each lane's arithmetic is the same whatever
// the width; only how many independent chains a core sees changes.
typedef float Lanes8 __attribute__((vector_size(32)));
typedef float Lanes4 __attribute__((vector_size(16)));
typedef float Lanes2 __attribute__((vector_size(8)));

// The 16 lanes are held in two 8-lane vectors where the target has them
// (two independent chains: measured 10-20% faster than one 16-lane vector
// on a Zen 4), else in four of 4. Results do not depend on the width.
#if defined(__AVX__)
using DotLanes = Lanes8;
#else
using DotLanes = Lanes4;
#endif

template <typename Lanes>
inline Lanes LoadLanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The tree's first two levels as vector adds of halves, the same adds of
// the same lanes as the scalar tree (lane j += lane j + 8 for j < 8, then
// lane j += lane j + 4 for j < 4), for acc holding 16 lanes as Lanes.
template <typename Lanes>
inline Lanes4 FoldTo4(const Lanes* acc) {
  constexpr int kWidth = sizeof(Lanes) / sizeof(float);
  if constexpr (kWidth == 8) {
    const Lanes8 s8 = acc[0] + acc[1];
    return __builtin_shufflevector(s8, s8, 0, 1, 2, 3) +
           __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  } else {
    static_assert(kWidth == 4, "16 lanes as 2 or 4 vectors");
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
  }
}

// acc + x * y: one rounding where the target has FMA, else two. Written out
// for the scalar loops of attention (a dot's tail, the weighted sum of
// values), so that each takes this arithmetic whatever the vectorizer makes
// of the loop around it: at -O3 GCC turned one such loop into vector
// products and in-order adds (two roundings) and a loop of the same shape
// over widened bf16 keys into fused multiply-adds.
inline float MulAdd(float x, float y, float acc) {
#if defined(__FMA__)
  return std::fma(x, y, acc);
#else
  return acc + x * y;
#endif
}

// The fixed tree over the 16 lanes of acc, to one sum.
template <typename Lanes>
inline float SumLanes(const Lanes* acc) {
  const Lanes4 s4 = FoldTo4(acc);
  const Lanes2 s2 = __builtin_shufflevector(s4, s4, 0, 1) + __builtin_shufflevector(s4, s4, 2, 3);
  return s2[0] + s2[1];
}

// The end of one dot: the fixed tree over its 16 lanes, plus a[from, n) *
// b[from, n) summed in index order (MulAdd).
template <typename Lanes>
inline float FinishDot(const Lanes* acc, const float* a, const float* b, int from, int n) {
  float tail = 0.0f;
  for (int i = from; i < n; ++i) tail = MulAdd(a[i], b[i], tail);
  return SumLanes(acc) + tail;
}

// a · b over n values, in the fixed order above.
inline float FixedOrderDot(const float* a, const float* b, int n) {
  constexpr int kWidth = sizeof(DotLanes) / sizeof(float);
  constexpr int kVectors = kDotLanes / kWidth;
  DotLanes acc[kVectors] = {};
  int i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes) {
    for (int v = 0; v < kVectors; ++v) {
      acc[v] += LoadLanes<DotLanes>(a + i + v * kWidth) * LoadLanes<DotLanes>(b + i + v * kWidth);
    }
  }
  return FinishDot(acc, a, b, i, n);
}

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_FIXED_ORDER_DOT_H_
