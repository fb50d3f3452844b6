// Per-row and per-element math shared by the CPU training kernels and the CPU
// inference engine, so both compute LayerNorm and GELU with the same
// arithmetic in the same order. Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_ROW_OPS_H_
#define DROPK_MODEL_CPU_ROW_OPS_H_

#include <cmath>

namespace dropk {

constexpr float kLayerNormEps = 1e-5f;
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

// out (C) = LayerNorm(x (C)) * w + b; returns mean and 1/std through the
// pointers when they are not null.
inline void LayerNormRow(float* out, const float* x, const float* w, const float* b, int C,
                         float* mean_out = nullptr, float* rstd_out = nullptr) {
  float sum = 0.0f;
  for (int c = 0; c < C; ++c) sum += x[c];
  const float m = sum / C;
  float var = 0.0f;
  for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
  const float s = 1.0f / std::sqrt(var / C + kLayerNormEps);
  for (int c = 0; c < C; ++c) out[c] = (x[c] - m) * s * w[c] + b[c];
  if (mean_out != nullptr) *mean_out = m;
  if (rstd_out != nullptr) *rstd_out = s;
}

// GELU with the tanh approximation.
inline float Gelu(float x) {
  return 0.5f * x * (1.0f + std::tanh(kGeluScale * (x + kGeluCubic * x * x * x)));
}

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_ROW_OPS_H_
