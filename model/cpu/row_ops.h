// Per-row math shared by the CPU training kernels and the CPU inference
// engine, so both compute LayerNorm with the same arithmetic in the same
// order (the per-element parts come from kernel_math.h, shared with CUDA).
// Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_ROW_OPS_H_
#define DROPK_MODEL_CPU_ROW_OPS_H_

#include <cmath>

#include "kernel_math.h"

namespace dropk {

// out (C) = LayerNorm(x (C)) * w + b; returns mean and 1/std through the
// pointers when they are not null.
inline void LayerNormRow(float* out, const float* x, const float* w, const float* b, int C,
                         float* mean_out = nullptr, float* rstd_out = nullptr) {
  float sum = 0.0f;
  for (int c = 0; c < C; ++c) sum += x[c];
  const float m = sum / C;
  float var = 0.0f;
  for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
  const float s = LayerNormRstd(var, C);
  for (int c = 0; c < C; ++c) out[c] = LayerNormApply(x[c], m, s, w[c], b[c]);
  if (mean_out != nullptr) *mean_out = m;
  if (rstd_out != nullptr) *rstd_out = s;
}

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_ROW_OPS_H_
