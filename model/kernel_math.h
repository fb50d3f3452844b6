// The per-element and per-row arithmetic that the CPU kernels (model/cpu/)
// and the CUDA kernels (model/cuda/) share, written once as DROPK_HOST_DEVICE
// functions, so the CPU tests (gradcheck, golden) cover what the GPU computes
// too. Only the reductions around these (sums over a row or a column) differ
// between backends, in summation order. Private to model/.
#ifndef DROPK_MODEL_KERNEL_MATH_H_
#define DROPK_MODEL_KERNEL_MATH_H_

#include <math.h>

#include "model/host_device.h"

namespace dropk {

constexpr float kLayerNormEps = 1e-5f;
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

// e^x for float x, within about 2 ulp of expf over its whole range (0 below
// -87.3, +inf is never reached: x is clamped at 88.7). Written out, not
// expf, because it is branch-free straight-line arithmetic that compilers
// vectorise (16 lanes under AVX-512) where libm's expf stays a scalar call;
// softmax and GELU run it billions of times per epoch. Method: x = n ln2 + r
// with |r| <= ln2/2 (ln2 split in two parts for an exact r), e^r by its
// Taylor series to r^7 (truncation error below 6e-9 relative), times 2^n
// built in the exponent bits.
DROPK_HOST_DEVICE float FastExp(float x) {
  x = x < -87.3f ? -87.3f : x;  // ternaries, not fminf/fmaxf, vectorise (NaN stays NaN)
  x = x > 88.7f ? 88.7f : x;
  const float n = rintf(x * 1.44269504088896341f);  // round(x / ln2)
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n for n in [-126, 128]: n + 127 in the exponent field; n = 128 (x near
  // 88.7) is reached as 2^127 * 2.
  const int ni = static_cast<int>(n);
  const int half = ni >> 1;
  union {
    int i;
    float f;
  } a, b;
  a.i = (half + 127) << 23;
  b.i = (ni - half + 127) << 23;
  return p * a.f * b.f;
}

// tanh(x) = 1 - 2 / (e^2x + 1) through FastExp: absolute error below 2e-7
// (relative error grows near 0, where tanh is tiny, which GELU's
// 0.5 x (1 + tanh) does not see).
DROPK_HOST_DEVICE float FastTanh(float x) { return 1.0f - 2.0f / (FastExp(2.0f * x) + 1.0f); }

// GELU with the tanh approximation.
DROPK_HOST_DEVICE float Gelu(float x) {
  return 0.5f * x * (1.0f + FastTanh(kGeluScale * (x + kGeluCubic * x * x * x)));
}

// d Gelu(x) / dx.
DROPK_HOST_DEVICE float GeluGrad(float x) {
  const float th = FastTanh(kGeluScale * (x + kGeluCubic * x * x * x));
  const float sech2 = 1.0f - th * th;
  return 0.5f * (1.0f + th) + 0.5f * x * sech2 * kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
}

// 1/std of a row of C values whose squared deviations from the mean sum to
// sum_sq_dev (the biased variance, as PyTorch's LayerNorm).
DROPK_HOST_DEVICE float LayerNormRstd(float sum_sq_dev, int C) {
  return 1.0f / sqrtf(sum_sq_dev / C + kLayerNormEps);
}

// One output of LayerNorm: the normalised x, scaled and shifted.
DROPK_HOST_DEVICE float LayerNormApply(float x, float mean, float rstd, float w, float b) {
  return (x - mean) * rstd * w + b;
}

// d loss / d x of one LayerNorm input, given dnorm = w * dy, the normalised
// value norm = (x - mean) * rstd, and the row means of dnorm and dnorm * norm.
DROPK_HOST_DEVICE float LayerNormInputGrad(float dnorm, float norm, float dnorm_mean,
                                           float dnorm_norm_mean, float rstd) {
  return (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rstd;
}

// The per-step constants of AdamW, computed once on the host from AdamWArgs.
struct AdamWConstants {
  float lr, beta1, beta2, eps;
  float decay;             // 1 - lr * weight_decay
  float inv_bc1, inv_bc2;  // 1 / bias corrections
  float grad_scale;        // multiplies the gradient first (clipping)
};

struct AdamWArgs;  // model/kernels.h
// The constants of one step's arguments (host code, model/kernels.cc).
AdamWConstants AdamWConstantsOf(const AdamWArgs& args);

// One AdamW update of one parameter in PyTorch's order: decoupled decay
// first, then the Adam step. Updates *param, *m and *v.
DROPK_HOST_DEVICE void AdamWUpdate(float* param, float* m, float* v, float grad,
                                   const AdamWConstants& k) {
  const float g = grad * k.grad_scale;
  const float mi = k.beta1 * *m + (1.0f - k.beta1) * g;
  const float vi = k.beta2 * *v + (1.0f - k.beta2) * g * g;
  *m = mi;
  *v = vi;
  const float m_hat = mi * k.inv_bc1;
  const float v_hat = vi * k.inv_bc2;
  *param = *param * k.decay - k.lr * m_hat / (sqrtf(v_hat) + k.eps);
}

}  // namespace dropk

#endif  // DROPK_MODEL_KERNEL_MATH_H_
