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

// The largest of x[0..n), n >= 1, in kSumLanes running maxima, so the loop
// vectorises where a single running maximum waits on each compare in turn.
// A maximum does not depend on order, so this is exactly std::max over the
// row (for rows without NaN).
inline float RowMax(const float* x, int n) {
  float lanes[kSumLanes];
  for (int j = 0; j < kSumLanes; ++j) lanes[j] = x[0];
  int i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) {
    for (int j = 0; j < kSumLanes; ++j) lanes[j] = lanes[j] < x[i + j] ? x[i + j] : lanes[j];
  }
  for (int j = 0; i < n; ++i, ++j) lanes[j] = lanes[j] < x[i] ? x[i] : lanes[j];
  float m = lanes[0];
  for (int j = 1; j < kSumLanes; ++j) m = m < lanes[j] ? lanes[j] : m;
  return m;
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
