// Dot products whose every result is summed in one fixed order, computed a
// tile of (row, column) pairs at a time. The inference engine's batch
// invariance rests on this: an output's value depends only on its own two
// vectors, never on which other outputs share its tile, so a row decoded
// alone and the same row among 15 others give the same bits.
//
// The order, for a dot of a and b over n: 16 lanes of strided partial sums
// (lane j sums a[i+j]*b[i+j] for i = 0, 16, 32, ...), a fixed pairwise tree
// over the lanes, then the tail past the last full 16 added to lane 0 in
// index order. A tile keeps one 16-lane accumulator per output and runs each
// through exactly that sequence, so tiles only change how many outputs share
// a pass over their inputs (what makes a batch of rows cheaper than the rows
// one by one), not what any output adds. Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_FIXED_ORDER_DOT_H_
#define DROPK_MODEL_CPU_FIXED_ORDER_DOT_H_

#include <cstring>
#include <type_traits>

namespace dropk {

inline constexpr int kDotLanes = 16;

// Float vectors (GCC/Clang vector extension) of 16, 8, 4 and 2 lanes. A dot's
// 16 lanes are held in 16 / width vectors of one of them: lane j is element
// j % width of vector j / width. Each lane's arithmetic is the same whatever
// the width; only how many independent chains a core sees changes.
typedef float Lanes16 __attribute__((vector_size(64)));
typedef float Lanes8 __attribute__((vector_size(32)));
typedef float Lanes4 __attribute__((vector_size(16)));
typedef float Lanes2 __attribute__((vector_size(8)));

// Per target: the widest vector, for tiles of several outputs (their own
// accumulators give the core enough independent chains), and a narrower one
// for a single output, whose 16 lanes then form two chains instead of one
// (measured 10-20% faster for one row on a Zen 4). Tile shapes keep a tile's
// accumulators in registers (32 vector registers with AVX-512, 16 with AVX2
// or SSE); picked by measuring 1, 4 and 16 rows of the engine's products on a
// Zen 4. Results do not depend on any of these.
#if defined(__AVX512F__)
using TileLanes = Lanes16;
using SingleLanes = Lanes8;
inline constexpr int kDotTileRows = 2, kDotTileCols = 8;
#elif defined(__AVX__)
using TileLanes = Lanes8;
using SingleLanes = Lanes8;
inline constexpr int kDotTileRows = 2, kDotTileCols = 2;
#else
using TileLanes = Lanes4;
using SingleLanes = Lanes4;
inline constexpr int kDotTileRows = 1, kDotTileCols = 2;
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
  if constexpr (kWidth == 16) {
    const Lanes8 s8 = __builtin_shufflevector(acc[0], acc[0], 0, 1, 2, 3, 4, 5, 6, 7) +
                      __builtin_shufflevector(acc[0], acc[0], 8, 9, 10, 11, 12, 13, 14, 15);
    return __builtin_shufflevector(s8, s8, 0, 1, 2, 3) +
           __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  } else if constexpr (kWidth == 8) {
    const Lanes8 s8 = acc[0] + acc[1];
    return __builtin_shufflevector(s8, s8, 0, 1, 2, 3) +
           __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  } else {
    static_assert(kWidth == 4, "16 lanes as 1, 2 or 4 vectors");
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
  }
}

// The end of one dot: the fixed tree over its 16 lanes, then a[from, n) *
// b[from, n) in index order.
template <typename Lanes>
inline float FinishDot(const Lanes* acc, const float* a, const float* b, int from, int n) {
  const Lanes4 s4 = FoldTo4(acc);
  const Lanes2 s2 = __builtin_shufflevector(s4, s4, 0, 1) + __builtin_shufflevector(s4, s4, 2, 3);
  float tail = 0.0f;
  for (int i = from; i < n; ++i) tail += a[i] * b[i];
  return (s2[0] + s2[1]) + tail;
}

// out[r][c] = rows[r] · cols[c] over n values, for every r < kRows and
// c < kCols, each summed in the fixed order above. Lanes: TileLanes for
// tiles, SingleLanes for 1 x 1 (the default picks by shape).
template <int kRows, int kCols,
          typename Lanes = std::conditional_t<kRows * kCols == 1, SingleLanes, TileLanes>>
inline void DotTile(const float* const (&rows)[kRows], const float* const (&cols)[kCols], int n,
                    float (&out)[kRows][kCols]) {
  constexpr int kWidth = sizeof(Lanes) / sizeof(float);
  constexpr int kVectors = kDotLanes / kWidth;
  Lanes acc[kRows][kCols][kVectors] = {};
  int i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes) {
    for (int v = 0; v < kVectors; ++v) {
      const int at = i + v * kWidth;
      Lanes w[kCols];
      for (int c = 0; c < kCols; ++c) w[c] = LoadLanes<Lanes>(cols[c] + at);
      for (int r = 0; r < kRows; ++r) {
        const Lanes x = LoadLanes<Lanes>(rows[r] + at);
        for (int c = 0; c < kCols; ++c) acc[r][c][v] += x * w[c];
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) out[r][c] = FinishDot(acc[r][c], rows[r], cols[c], i, n);
  }
}

// a · b over n values, in the fixed order: the 1 x 1 tile.
inline float FixedOrderDot(const float* a, const float* b, int n) {
  float out[1][1];
  DotTile<1, 1>({a}, {b}, n, out);
  return out[0][0];
}

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_FIXED_ORDER_DOT_H_
