// Causal multi-head self-attention on the CPU: one task per (batch, head),
// each running single-threaded sgemm (the OpenMP build of OpenBLAS does not
// spawn threads inside our parallel region) on strided views of qkv.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <omp.h>

#include "cpu/cpu_kernels.h"

namespace dropk {

void CpuKernels::AttentionForward(float* out, float* probs, const float* qkv, int B, int T, int C,
                                  int NH, int layer, const DropoutPlan* dropout) {
  const int hs = C / NH;
  const int C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const bool drop = dropout != nullptr && dropout->rates.attention_probs > 0.0f;
  const float p = drop ? dropout->rates.attention_probs : 0.0f;
  const uint32_t site = DropoutSiteId(DropoutKind::kAttentionProbs, layer);
  const uint64_t per_sample = static_cast<uint64_t>(NH) * T * T;
  float* scratch = ThreadScratch(static_cast<size_t>(T) * T);
  const size_t scratch_stride = scratch_per_thread_;

#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* q = qkv + static_cast<size_t>(b) * T * C3 + h * hs;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* att = probs + (static_cast<size_t>(b) * NH + h) * T * T;  // (T,T)
      // att = q k^T / sqrt(hs); only the lower triangle is used.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0.0f,
                  att, T);
      for (int t = 0; t < T; ++t) {
        float* row = att + static_cast<size_t>(t) * T;
        float maxv = row[0];
        for (int j = 1; j <= t; ++j) maxv = std::max(maxv, row[j]);
        float sum = 0.0f;
        for (int j = 0; j <= t; ++j) {
          row[j] = std::exp(row[j] - maxv);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j <= t; ++j) row[j] *= inv;
        for (int j = t + 1; j < T; ++j) row[j] = 0.0f;
      }
      const float* weights = att;
      if (drop) {
        // Dropped probabilities go to scratch; att keeps the softmax for backward.
        float* dropped = scratch + scratch_stride * omp_get_thread_num();
        for (int t = 0; t < T; ++t) {
          const uint64_t i = (static_cast<uint64_t>(h) * T + t) * T;
          const DropoutAddress a = DropoutAddressOf(*dropout, b, per_sample, i);
          float* drow = dropped + static_cast<size_t>(t) * T;
          ResidualDropoutRun(drow, nullptr, att + static_cast<size_t>(t) * T, *dropout, a.stream,
                             site, a.element, t + 1, p);
          std::fill(drow + t + 1, drow + T, 0.0f);
        }
        weights = dropped;
      }
      // out_h (T,hs) = weights (T,T) · v (T,hs)
      float* o = out + static_cast<size_t>(b) * T * C + h * hs;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, weights, T, v, C3,
                  0.0f, o, C);
    }
  }
}

void CpuKernels::AttentionBackward(float* dqkv, const float* dout, const float* qkv,
                                   const float* probs, int B, int T, int C, int NH, int layer,
                                   const DropoutPlan* dropout) {
  const int hs = C / NH;
  const int C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const bool drop = dropout != nullptr && dropout->rates.attention_probs > 0.0f;
  const float p = drop ? dropout->rates.attention_probs : 0.0f;
  const uint32_t site = DropoutSiteId(DropoutKind::kAttentionProbs, layer);
  const uint64_t per_sample = static_cast<uint64_t>(NH) * T * T;
  const size_t tt = static_cast<size_t>(T) * T;
  float* scratch = ThreadScratch(2 * tt);
  const size_t scratch_stride = scratch_per_thread_;

#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* q = qkv + static_cast<size_t>(b) * T * C3 + h * hs;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* dq = dqkv + static_cast<size_t>(b) * T * C3 + h * hs;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      const float* att = probs + (static_cast<size_t>(b) * NH + h) * tt;
      const float* dout_h = dout + static_cast<size_t>(b) * T * C + h * hs;
      float* datt = scratch + scratch_stride * omp_get_thread_num();  // (T,T)
      float* dropped = datt + tt;                                     // (T,T)

      // The probabilities that multiplied v in forward, with the same mask.
      const float* weights = att;
      if (drop) {
        for (int t = 0; t < T; ++t) {
          const uint64_t i = (static_cast<uint64_t>(h) * T + t) * T;
          const DropoutAddress a = DropoutAddressOf(*dropout, b, per_sample, i);
          float* drow = dropped + static_cast<size_t>(t) * T;
          ResidualDropoutRun(drow, nullptr, att + static_cast<size_t>(t) * T, *dropout, a.stream,
                             site, a.element, t + 1, p);
          std::fill(drow + t + 1, drow + T, 0.0f);
        }
        weights = dropped;
      }
      // dv (T,hs) = weights^T · dout_h
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, weights, T, dout_h, C,
                  0.0f, dv, C3);
      // d(weights) (T,T) = dout_h · v^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dout_h, C, v, C3, 0.0f,
                  datt, T);
      for (int t = 0; t < T; ++t) {
        float* drow = datt + static_cast<size_t>(t) * T;
        const float* prow = att + static_cast<size_t>(t) * T;
        if (drop) {
          // Through the mask: d(att) = d(weights) * scale, where weights = att * scale.
          const uint64_t i = (static_cast<uint64_t>(h) * T + t) * T;
          const DropoutAddress a = DropoutAddressOf(*dropout, b, per_sample, i);
          ApplyDropoutScales(drow, *dropout, a.stream, site, a.element, t + 1, p);
        }
        // Softmax backward: dpre = att * (datt - sum(att * datt)).
        float dot = 0.0f;
        for (int j = 0; j <= t; ++j) dot += prow[j] * drow[j];
        for (int j = 0; j <= t; ++j) drow[j] = prow[j] * (drow[j] - dot);
        for (int j = t + 1; j < T; ++j) drow[j] = 0.0f;
      }
      // dq = scale * dpre · k ; dk = scale * dpre^T · q
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, scale, datt, T, k, C3, 0.0f,
                  dq, C3);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, scale, datt, T, q, C3, 0.0f,
                  dk, C3);
    }
  }
}

}  // namespace dropk
