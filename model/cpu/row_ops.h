// Per-row math shared by the CPU training kernels and the CPU inference
// engine, so both compute LayerNorm with the same arithmetic in the same
// order (the per-element parts come from kernel_math.h, shared with CUDA).
// Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_ROW_OPS_H_
#define DROPK_MODEL_CPU_ROW_OPS_H_

#include <cmath>

#include "kernel_math.h"

namespace dropk {

// The sum of term(i) over i < n in one fixed order: kSumLanes running sums
// (lane j adds i = j, j + kSumLanes, j + 2 kSumLanes, ...), then the lanes
// added in order. The lanes are independent adds, so the loop vectorises,
// where a single running sum waits on each add in turn (a fourth of the
// speed on a Zen 4). The order is written out, not left to the vectoriser,
// so a row's sum does not depend on its address, batch or thread count.
inline constexpr int kSumLanes = 16;
template <typename Term>
inline float FixedOrderSum(int n, Term term) {
  float lanes[kSumLanes] = {};
  int i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) {
    for (int j = 0; j < kSumLanes; ++j) lanes[j] += term(i + j);
  }
  for (int j = 0; i < n; ++i, ++j) lanes[j] += term(i);
  float sum = 0.0f;
  for (int j = 0; j < kSumLanes; ++j) sum += lanes[j];
  return sum;
}

// out (C) = LayerNorm(x (C)) * w + b; returns mean and 1/std through the
// pointers when they are not null.
inline void LayerNormRow(float* out, const float* x, const float* w, const float* b, int C,
                         float* mean_out = nullptr, float* rstd_out = nullptr) {
  const float m = FixedOrderSum(C, [x](int c) { return x[c]; }) / C;
  const float var = FixedOrderSum(C, [x, m](int c) { return (x[c] - m) * (x[c] - m); });
  const float s = LayerNormRstd(var, C);
  for (int c = 0; c < C; ++c) out[c] = LayerNormApply(x[c], m, s, w[c], b[c]);
  if (mean_out != nullptr) *mean_out = m;
  if (rstd_out != nullptr) *rstd_out = s;
}

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_ROW_OPS_H_
