// Causal multi-head self-attention on the CPU in fp32: one task per
// (batch, head), each running single-threaded sgemm (the OpenMP build of
// OpenBLAS does not spawn threads inside our parallel region) on strided
// views of qkv, in query blocks that skip the masked half (attention_rows.h,
// which also says how the dropout mask travels from forward to backward).
// With precision bf16 the products go to attention_bf16_cpu.cc instead.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <omp.h>

#include "cpu/attention_rows.h"
#include "cpu/cpu_kernels.h"

namespace dropk {

void CpuKernels::AttentionForward(float* out, float* probs, const float* qkv, int B, int T, int C,
                                  int NH, int layer, const DropoutPlan* dropout) {
  if (bf16_ != nullptr) return AttentionForwardBf16(out, probs, qkv, B, T, C, NH, layer, dropout);
  const float scale = 1.0f / std::sqrt(static_cast<float>(C / NH));
  const size_t block = static_cast<size_t>(kQueryBlock) * T;
  float* scratch = ThreadScratch(2 * block);
  const size_t scratch_stride = scratch_per_thread_;

#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const HeadView view = MakeHeadView(qkv, b, h, T, C, NH, layer, dropout);
      const int hs = view.hs, C3 = view.C3;
      float* att = probs + (static_cast<size_t>(b) * NH + h) * T * T;    // (T,T)
      float* o = out + static_cast<size_t>(b) * T * C + h * hs;          // (T,hs), stride C
      float* dropped = scratch + scratch_stride * omp_get_thread_num();  // (kQueryBlock,T)
      float* scales = dropped + block;                                   // (kQueryBlock,T)
      for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
        const int t1 = std::min(T, t0 + kQueryBlock), rows = t1 - t0;
        float* att_block = att + static_cast<size_t>(t0) * T;
        // att[t0:t1, 0:t1] = q[t0:t1] k[0:t1]^T / sqrt(hs)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, t1, hs, scale,
                    view.q + static_cast<size_t>(t0) * C3, C3, view.k, C3, 0.0f, att_block, T);
        for (int t = t0; t < t1; ++t) {
          float* row = att + static_cast<size_t>(t) * T;
          CausalSoftmaxRow(row, t, T);  // the skipped keys get probability 0
        }
        // Dropped probabilities go to scratch; att keeps the softmax (and
        // the mask, in its signs) for backward.
        const float* weights = view.DropWeights(dropped, scales, att, t0, t1);
        // out[t0:t1] (rows,hs) = weights (rows,t1) · v[0:t1] (t1,hs)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, t1, 1.0f, weights, T,
                    view.v, C3, 0.0f, o + static_cast<size_t>(t0) * C, C);
      }
    }
  }
}

void CpuKernels::AttentionBackward(float* dqkv, const float* dout, const float* qkv,
                                   const float* probs, int B, int T, int C, int NH, int layer,
                                   const DropoutPlan* dropout) {
  if (bf16_ != nullptr) {
    return AttentionBackwardBf16(dqkv, dout, qkv, probs, B, T, C, NH, layer, dropout);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(C / NH));
  const size_t block = static_cast<size_t>(kQueryBlock) * T;
  float* scratch = ThreadScratch(2 * block);
  const size_t scratch_stride = scratch_per_thread_;

#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const HeadView view = MakeHeadView(qkv, b, h, T, C, NH, layer, dropout);
      const int hs = view.hs, C3 = view.C3;
      float* dq = dqkv + static_cast<size_t>(b) * T * C3 + h * hs;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      const float* att = probs + (static_cast<size_t>(b) * NH + h) * T * T;
      const float* dout_h = dout + static_cast<size_t>(b) * T * C + h * hs;
      float* datt = scratch + scratch_stride * omp_get_thread_num();  // (kQueryBlock,T)
      float* dropped = datt + block;                                  // (kQueryBlock,T)
      const float keep_scale = view.KeepScale();
      // dk and dv gather from every later query block: start them at zero.
      for (int t = 0; t < T; ++t) {
        std::fill(dk + static_cast<size_t>(t) * C3, dk + static_cast<size_t>(t) * C3 + hs, 0.0f);
        std::fill(dv + static_cast<size_t>(t) * C3, dv + static_cast<size_t>(t) * C3 + hs, 0.0f);
      }
      for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
        const int t1 = std::min(T, t0 + kQueryBlock), rows = t1 - t0;
        const float* dout_block = dout_h + static_cast<size_t>(t0) * C;
        // The probabilities that multiplied v in forward, with the same mask.
        const float* weights = att + static_cast<size_t>(t0) * T;
        if (view.dropout != nullptr) {
          view.DroppedWeights(dropped, att, t0, t1);
          weights = dropped;
        }
        // dv[0:t1] += weights^T (t1,rows) · dout[t0:t1] (rows,hs)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, hs, rows, 1.0f, weights, T,
                    dout_block, C, 1.0f, dv, C3);
        // d(weights) (rows,t1) = dout[t0:t1] · v[0:t1]^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, t1, hs, 1.0f, dout_block, C,
                    view.v, C3, 0.0f, datt, T);
        for (int t = t0; t < t1; ++t) {
          SoftmaxBackwardRow(datt + static_cast<size_t>(t - t0) * T,
                             att + static_cast<size_t>(t) * T, t, t1, keep_scale);
        }
        // dq[t0:t1] = scale * dpre (rows,t1) · k[0:t1]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, t1, scale, datt, T, view.k,
                    C3, 0.0f, dq + static_cast<size_t>(t0) * C3, C3);
        // dk[0:t1] += scale * dpre^T (t1,rows) · q[t0:t1]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, hs, rows, scale, datt, T,
                    view.q + static_cast<size_t>(t0) * C3, C3, 1.0f, dk, C3);
      }
    }
  }
}

}  // namespace dropk
