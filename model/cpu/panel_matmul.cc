// PanelMatmul: tiles of rows x panels, each output one multiply-add chain in
// channel order (panel_matmul.h).
#include "cpu/panel_matmul.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/bf16_matmul.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace dropk {
namespace {

// The target's float vector, and the four operations the tiles use. Fma is
// one rounding where the target has FMA; elsewhere c + a * b, which the
// compiler then evaluates the same way in every tile (the same inline
// function), so outputs stay batch invariant on any target, though their
// bits differ between targets with and without FMA.
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kWidth = 16;
inline Vec Load(const float* p) { return _mm512_loadu_ps(p); }
inline void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec Splat(float x) { return _mm512_set1_ps(x); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
// The 2 * kWidth bf16 values at p, stored in pairs (PackedLinear's bf16
// layout): *lo = the first of each pair, *hi = the second, widened to
// floats exactly. A bf16 is a float's upper half, so the pair's 32 bits
// shifted up give the first and masked give the second: two cheap integer
// operations for two vectors, and no shuffle (vpmovzxwd crosses lanes and
// competed with the multiply-adds: bf16 panels ran at 0.8x fp32's speed at
// 64 rows with it).
inline void LoadBf16Pair(const uint16_t* p, Vec* lo, Vec* hi) {
  const __m512i pairs = _mm512_loadu_si512(p);
  // The all-lanes masked forms: GCC 12's unmasked ones start from an
  // "undefined" vector that -Wmaybe-uninitialized reports.
  constexpr __mmask16 kAll = 0xFFFF;
  *lo = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll, pairs, 16));
  *hi = _mm512_castsi512_ps(
      _mm512_maskz_and_epi32(kAll, pairs, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}
// Rows of the largest tile: 8 x 3 accumulators, 3 weight vectors and a
// broadcast fill 28 of the 32 vector registers.
constexpr int kBigTileRows = 8;
#elif defined(__AVX2__) && defined(__FMA__)
using Vec = __m256;
constexpr int kWidth = 8;
inline Vec Load(const float* p) { return _mm256_loadu_ps(p); }
inline void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec Splat(float x) { return _mm256_set1_ps(x); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline void LoadBf16Pair(const uint16_t* p, Vec* lo, Vec* hi) {
  const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  *lo = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
  *hi = _mm256_castsi256_ps(
      _mm256_and_si256(pairs, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
}
constexpr int kBigTileRows = 4;  // 12 accumulators of the 16 registers
#else
typedef float Vec __attribute__((vector_size(16)));
constexpr int kWidth = 4;
inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
inline Vec Splat(float x) { return Vec{x, x, x, x}; }
inline Vec Fma(Vec a, Vec b, Vec c) { return c + a * b; }
inline void LoadBf16Pair(const uint16_t* p, Vec* lo, Vec* hi) {
  for (int i = 0; i < kWidth; ++i) {
    (*lo)[i] = Bf16BitsToFloat(p[2 * i]);
    (*hi)[i] = Bf16BitsToFloat(p[2 * i + 1]);
  }
}
constexpr int kBigTileRows = 4;
#endif

constexpr int kVectors = 3;  // vectors per panel
constexpr int kColumns = kVectors * kWidth;

// Where bf16 panels keep channel c's weight of panel column `column`,
// counted in bf16s from the panel's start. Channels go in pairs (c, c + 1),
// c even, 2 * kColumns bf16s a pair (an odd count's last pair padded with
// zeros), in three runs of kWidth (first, second) pairs that LoadBf16Pair
// splits: columns of vectors 0 and 1 of channel c, the same of channel
// c + 1, then vector 2 of channel c with vector 2 of channel c + 1.
constexpr size_t Bf16Slot(int c, int column) {
  static_assert(kVectors == 3, "the pair layout splits three vectors a channel");
  const size_t pair = static_cast<size_t>(c / 2) * 2 * kColumns;
  const int second = c % 2, v = column / kWidth, i = column % kWidth;
  if (v < 2) return pair + second * 2 * kWidth + 2 * i + v;
  return pair + 4 * kWidth + 2 * i + second;
}

// bf16s a bf16 panel of C channels takes (C rounded up to even).
constexpr size_t Bf16PanelSize(int C) { return static_cast<size_t>((C + 1) / 2) * 2 * kColumns; }

// What every tile of one product reads and writes; Weight is float, or
// uint16_t for bf16 panels.
template <typename Weight>
struct Product {
  float* out;
  const float* inp;
  const PackedLinear* w;
  const Weight* panels;
};

// Rows [r, r + kRows) x panels [p, p + kPanels): the accumulators start at
// the bias, take one multiply-add per channel in order, and are stored to
// the columns that exist (the last panel's padding is dropped).
template <int kRows, int kPanels, typename Weight>
inline void Tile(const Product<Weight>& a, int r, int p) {
  const int C = a.w->in_features(), OC = a.w->out_features();
  Vec acc[kRows][kPanels][kVectors];
  constexpr bool kBf16 = std::is_same_v<Weight, uint16_t>;
  const size_t panel_size = kBf16 ? Bf16PanelSize(C) : static_cast<size_t>(C) * kColumns;
  const Weight* panel[kPanels];
  for (int q = 0; q < kPanels; ++q) {
    panel[q] = a.panels + static_cast<size_t>(p + q) * panel_size;
    for (int v = 0; v < kVectors; ++v) {
      const Vec b = Load(a.w->padded_bias() + (p + q) * kColumns + v * kWidth);
      for (int i = 0; i < kRows; ++i) acc[i][q][v] = b;
    }
  }
  const float* x[kRows];
  for (int i = 0; i < kRows; ++i) x[i] = a.inp + static_cast<size_t>(r + i) * C;
  // Channel k's multiply-adds, its weights in w.
  auto channel = [&](const Vec(&w)[kPanels][kVectors], int k) {
    for (int i = 0; i < kRows; ++i) {
      const Vec xi = Splat(x[i][k]);
      for (int q = 0; q < kPanels; ++q) {
        for (int v = 0; v < kVectors; ++v) acc[i][q][v] = Fma(xi, w[q][v], acc[i][q][v]);
      }
    }
  };
  if constexpr (kBf16) {
    // Two channels a pass (Bf16Slot's pairs), each still in order.
    for (int k = 0; k < C; k += 2) {
      Vec w0[kPanels][kVectors], w1[kPanels][kVectors];
      for (int q = 0; q < kPanels; ++q) {
        const uint16_t* pair = panel[q] + Bf16Slot(k, 0);
        LoadBf16Pair(pair, &w0[q][0], &w0[q][1]);
        LoadBf16Pair(pair + 2 * kWidth, &w1[q][0], &w1[q][1]);
        LoadBf16Pair(pair + 4 * kWidth, &w0[q][2], &w1[q][2]);
      }
      channel(w0, k);
      if (k + 1 < C) channel(w1, k + 1);
    }
  } else {
    for (int k = 0; k < C; ++k) {
      Vec w[kPanels][kVectors];
      for (int q = 0; q < kPanels; ++q) {
        for (int v = 0; v < kVectors; ++v) w[q][v] = Load(panel[q] + k * kColumns + v * kWidth);
      }
      channel(w, k);
    }
  }
  for (int i = 0; i < kRows; ++i) {
    float* row = a.out + static_cast<size_t>(r + i) * OC;
    for (int q = 0; q < kPanels; ++q) {
      const int c0 = (p + q) * kColumns;
      if (c0 + kColumns <= OC) {
        for (int v = 0; v < kVectors; ++v) Store(row + c0 + v * kWidth, acc[i][q][v]);
      } else {
        float staged[kColumns];
        for (int v = 0; v < kVectors; ++v) Store(staged + v * kWidth, acc[i][q][v]);
        std::memcpy(row + c0, staged, (OC - c0) * sizeof(float));
      }
    }
  }
}

// Tiles of kRows rows from row *r on while they fit in R, over panels
// [p0, p1): kPanels at a time, then two (if kPanels > 2), then one.
template <int kRows, int kPanels, typename Weight>
inline void RowTiles(const Product<Weight>& a, int R, int* r, int p0, int p1) {
  for (; *r + kRows <= R; *r += kRows) {
    int p = p0;
    for (; p + kPanels <= p1; p += kPanels) Tile<kRows, kPanels>(a, *r, p);
    if constexpr (kPanels > 2) {
      for (; p + 2 <= p1; p += 2) Tile<kRows, 2>(a, *r, p);
    }
    for (; p < p1; ++p) Tile<kRows, 1>(a, *r, p);
  }
}

}  // namespace

const int PackedLinear::kPanelColumns = kColumns;

PackedLinear::PackedLinear(const float* w, const float* bias, int out_features, int in_features,
                           PanelWeights weights)
    : out_features_(out_features),
      in_features_(in_features),
      num_panels_((out_features + kColumns - 1) / kColumns),
      weights_(weights),
      bias_(static_cast<size_t>(num_panels_) * kColumns, 0.0f) {
  if (weights == PanelWeights::kBf16) {
    bf16_panels_.assign(static_cast<size_t>(num_panels_) * Bf16PanelSize(in_features), 0);
  } else {
    panels_.assign(static_cast<size_t>(num_panels_) * in_features * kColumns, 0.0f);
  }
  for (int o = 0; o < out_features; ++o) {
    const float* row = w + static_cast<size_t>(o) * in_features;
    for (int c = 0; c < in_features; ++c) {
      if (weights == PanelWeights::kBf16) {
        bf16_panels_[Bf16At(o, c)] = ToBf16Bits(row[c]);
      } else {
        panels_[Fp32At(o, c)] = row[c];
      }
    }
    if (bias != nullptr) bias_[o] = bias[o];
  }
}

size_t PackedLinear::Fp32At(int o, int c) const {
  return (static_cast<size_t>(o / kColumns) * in_features_ + c) * kColumns + o % kColumns;
}

size_t PackedLinear::Bf16At(int o, int c) const {
  return static_cast<size_t>(o / kColumns) * Bf16PanelSize(in_features_) +
         Bf16Slot(c, o % kColumns);
}

void PackedLinear::CopyRow(int o, float* dst) const {
  for (int c = 0; c < in_features_; ++c) {
    dst[c] = weights_ == PanelWeights::kBf16 ? Bf16BitsToFloat(bf16_panels_[Bf16At(o, c)])
                                             : panels_[Fp32At(o, c)];
  }
}

size_t PackedLinear::bytes() const {
  return panels_.size() * sizeof(float) + bf16_panels_.size() * sizeof(uint16_t) +
         bias_.size() * sizeof(float);
}

namespace {

// PanelMatmul over panels of Weight (float, or bf16 bits).
template <typename Weight>
void PanelMatmulOf(const Product<Weight>& a, int R, int threads) {
  const int panels = a.w->num_panels();
  // Up to 4 panels a task (what one row tile runs over while its inputs stay
  // in L1), fewer where that would leave threads without work.
  const int per_task = std::clamp(panels / (4 * std::max(threads, 1)), 1, 4);
  const int tasks = (panels + per_task - 1) / per_task;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int t = 0; t < tasks; ++t) {
    const int p0 = t * per_task, p1 = std::min(panels, p0 + per_task);
    int r = 0;
    if constexpr (kBigTileRows >= 8) RowTiles<8, 1>(a, R, &r, p0, p1);
    RowTiles<4, 1>(a, R, &r, p0, p1);
    RowTiles<2, 2>(a, R, &r, p0, p1);
    // One row reads weights from memory at every step it runs alone: four
    // panels at a time (or two) keep more of them in flight (measured
    // 1.0-1.4x one).
    RowTiles<1, 4>(a, R, &r, p0, p1);
  }
}

}  // namespace

void PanelMatmul(float* out, const float* inp, const PackedLinear& w, int R, int threads) {
  if (w.weights() == PanelWeights::kBf16) {
    PanelMatmulOf(Product<uint16_t>{out, inp, &w, w.bf16_panels()}, R, threads);
  } else {
    PanelMatmulOf(Product<float>{out, inp, &w, w.panels()}, R, threads);
  }
}

}  // namespace dropk
