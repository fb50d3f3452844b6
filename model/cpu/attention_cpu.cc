// Causal multi-head self-attention on the CPU: one task per (batch, head),
// each running its small products on its own thread (GemmOnThisThread:
// libxsmm's JIT kernels on AVX-512 CPUs, single-threaded OpenBLAS
// elsewhere) on strided views of qkv, with k (forward) or v (backward)
// first copied transposed so that every product with a T-long side takes it
// as a plain operand. On the 2-core Zen 4, attention ran 1.4-2x faster
// this way than with OpenBLAS's Haswell kernels per product (its choice on
// AVX2 CPUs or under OPENBLAS_CORETYPE=Haswell): forward and backward at
// the recipe's shape 0.31 -> 0.16 and 0.46 -> 0.23 ms, at the small
// config's (dropout 0.1) 7.8 -> 5.5 and 10.6 -> 6.4 ms; and as fast as
// (0-5% faster than) OpenBLAS's AVX-512 small-matrix kernels.
//
// The 1/sqrt(hs) scale is folded into the softmax (forward) and into
// d(pre-softmax) (backward) rather than into the products, whose kernels
// take alpha = 1.
//
// Causality is exploited, not masked: queries go in row blocks of
// kQueryBlock, and the block [t0, t1) multiplies only keys and values
// [0, t1), so the products above the diagonal block are never computed
// (0.56x the flops of the full T x T products at T = 256). Within the
// diagonal block the entries past each row's own position are zero; probs
// past the diagonal block are never written or read.
//
// With attention dropout, forward marks each dropped probability by setting
// its sign bit in probs, and backward reads the mask back from there rather
// than drawing the same Philox numbers a second time.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <omp.h>

#include "cpu/cpu_kernels.h"
#include "cpu/row_ops.h"
#include "cpu/xsmm_gemm.h"
#include "kernel_math.h"
#include "model/kernels.h"

namespace dropk {
namespace {

// Query rows per block: small enough to skip most of the masked half, large
// enough that each product still runs near its kernel's peak.
constexpr int kQueryBlock = 32;

// Softmax of scale * row in place of the causal row `row` of length t + 1
// (the entries up to and including the diagonal), then zeros up to
// `width`. scale > 0, so the largest scaled entry is scale * the largest.
// The exponentials and the sum are separate loops so that the first
// vectorises; the sum keeps FixedOrderSum's lanes.
void CausalSoftmaxRow(float* row, int t, int width, float scale) {
  const float maxv = RowMax(row, t + 1);
  for (int j = 0; j <= t; ++j) row[j] = FastExp((row[j] - maxv) * scale);
  const float inv = 1.0f / FixedOrderSum(t + 1, [row](int j) { return row[j]; });
  for (int j = 0; j <= t; ++j) row[j] *= inv;
  std::fill(row + t + 1, row + width, 0.0f);
}

// dst (hs,T) = the (T,hs) head view src (row stride C3), transposed. The
// products q·k^T and dout·v^T then take a plain right operand: libxsmm 1.17
// generates no kernel for a transposed one (in its column-major terms, a
// transposed left operand), and OpenBLAS multiplied a transposed one ~1.5x
// slower at these shapes; the copy costs a few percent of a product.
void TransposeHead(float* dst, const float* src, int T, int hs, int C3) {
  for (int t = 0; t < T; ++t) {
    const float* row = src + static_cast<size_t>(t) * C3;
    for (int d = 0; d < hs; ++d) dst[static_cast<size_t>(d) * T + t] = row[d];
  }
}

// The attention of one (batch b, head h): the views of qkv and of the
// per-head (T,T) probabilities, and the dropout addressing of its rows.
struct HeadView {
  const float* q;  // (T,hs), row stride 3C; k and v follow at +C and +2C
  const float* k;
  const float* v;
  int T, hs, C3;
  const DropoutPlan* dropout;  // null when attention-prob dropout is off
  float p;
  uint32_t site;
  int b, h;
  uint64_t per_sample;

  // Forward: the probabilities that multiply v for query rows [t0, t1),
  // each row [0, t1) with stride T: rows of att (T,T) itself without
  // dropout; else those rows with their dropout applied, written to dropped
  // (t1-t0, T), and each entry of att that dropout dropped gets its sign bit
  // set (probabilities are >= 0, so |att| stays the softmax), which is how
  // DroppedWeights finds the mask without drawing it again. scales is
  // (t1-t0) x T floats of scratch.
  const float* DropWeights(float* dropped, float* scales, float* att, int t0, int t1) const {
    if (dropout == nullptr) return att + static_cast<size_t>(t0) * T;
    for (int t = t0; t < t1; ++t) {
      float* drow = dropped + static_cast<size_t>(t - t0) * T;
      float* arow = att + static_cast<size_t>(t) * T;
      float* srow = scales + static_cast<size_t>(t - t0) * T;
      const uint64_t i = (static_cast<uint64_t>(h) * T + t) * T;
      const DropoutAddress a = DropoutAddressOf(*dropout, b, per_sample, i);
      DropoutScales(dropout->seed, a.stream, site, dropout->step, a.element, t + 1, p, srow);
      for (int j = 0; j <= t; ++j) {
        drow[j] = arow[j] * srow[j];
        arow[j] = srow[j] == 0.0f ? -arow[j] : arow[j];
      }
      std::fill(drow + t + 1, drow + t1, 0.0f);
    }
    return dropped;
  }

  // Backward: the same weights as DropWeights gave for rows [t0, t1),
  // read back from the signs it left in att, into dropped (t1-t0, T).
  void DroppedWeights(float* dropped, const float* att, int t0, int t1) const {
    const float keep_scale = DropoutKeepScale(p);
    for (int t = t0; t < t1; ++t) {
      float* drow = dropped + static_cast<size_t>(t - t0) * T;
      const float* arow = att + static_cast<size_t>(t) * T;
      for (int j = 0; j <= t; ++j) drow[j] = std::signbit(arow[j]) ? 0.0f : arow[j] * keep_scale;
      std::fill(drow + t + 1, drow + t1, 0.0f);
    }
  }
};

HeadView MakeHeadView(const float* qkv, int b, int h, int T, int C, int NH, int layer,
                      const DropoutPlan* dropout) {
  const int C3 = 3 * C, hs = C / NH;
  const bool drop = dropout != nullptr && dropout->rates.attention_probs > 0.0f;
  HeadView view;
  view.q = qkv + static_cast<size_t>(b) * T * C3 + h * hs;
  view.k = view.q + C;
  view.v = view.q + 2 * C;
  view.T = T;
  view.hs = hs;
  view.C3 = C3;
  view.dropout = drop ? dropout : nullptr;
  view.p = drop ? dropout->rates.attention_probs : 0.0f;
  view.site = DropoutSiteId(DropoutKind::kAttentionProbs, layer);
  view.b = b;
  view.h = h;
  view.per_sample = static_cast<uint64_t>(NH) * T * T;
  return view;
}

// Floats of scratch each thread takes in AttentionForward and
// AttentionBackward: two (kQueryBlock, T) blocks and a transposed (hs, T)
// head.
size_t AttentionScratchFloatsPerThread(int T, int hs) {
  return (2 * static_cast<size_t>(kQueryBlock) + static_cast<size_t>(hs)) * T;
}

}  // namespace

double CpuAttentionScratchBytes(int threads, int T, int hs) {
  return static_cast<double>(std::max(threads, 1)) *
         static_cast<double>(AttentionScratchFloatsPerThread(T, hs)) * sizeof(float);
}

void CpuKernels::AttentionForward(float* out, float* probs, const float* qkv, int B, int T, int C,
                                  int NH, int layer, const DropoutPlan* dropout) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(C / NH));
  const size_t block = static_cast<size_t>(kQueryBlock) * T;
  float* scratch = ThreadScratch(AttentionScratchFloatsPerThread(T, C / NH));
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
      float* kt = scales + block;                                        // (hs,T)
      TransposeHead(kt, view.k, T, hs, C3);
      for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
        const int t1 = std::min(T, t0 + kQueryBlock), rows = t1 - t0;
        float* att_block = att + static_cast<size_t>(t0) * T;
        // att[t0:t1, 0:t1] = q[t0:t1] k[0:t1]^T (scaled by 1/sqrt(hs) in the softmax)
        GemmOnThisThread(false, rows, t1, hs, view.q + static_cast<size_t>(t0) * C3, C3, kt, T,
                         /*accumulate=*/false, att_block, T);
        for (int t = t0; t < t1; ++t) {
          float* row = att + static_cast<size_t>(t) * T;
          // The keys in [t + 1, t1) get probability 0; those past t1 are
          // never read (writing them would double att's memory traffic).
          CausalSoftmaxRow(row, t, t1, scale);
        }
        // Dropped probabilities go to scratch; att keeps the softmax (and
        // the mask, in its signs) for backward.
        const float* weights = view.DropWeights(dropped, scales, att, t0, t1);
        // out[t0:t1] (rows,hs) = weights (rows,t1) · v[0:t1] (t1,hs)
        GemmOnThisThread(false, rows, hs, t1, weights, T, view.v, C3, /*accumulate=*/false,
                         o + static_cast<size_t>(t0) * C, C);
      }
    }
  }
}

void CpuKernels::AttentionBackward(float* dqkv, const float* dout, const float* qkv,
                                   const float* /*out: probs hold all this needs*/,
                                   const float* probs, int B, int T, int C, int NH, int layer,
                                   const DropoutPlan* dropout) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(C / NH));
  const size_t block = static_cast<size_t>(kQueryBlock) * T;
  float* scratch = ThreadScratch(AttentionScratchFloatsPerThread(T, C / NH));
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
      float* vt = dropped + block;                                    // (hs,T)
      TransposeHead(vt, view.v, T, hs, C3);
      // Through the mask, d(att) = d(weights) * keep_scale where kept, 0 where
      // dropped (a set sign bit; never set without dropout).
      const float keep_scale = view.dropout != nullptr ? DropoutKeepScale(view.p) : 1.0f;
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
        GemmOnThisThread(true, t1, hs, rows, weights, T, dout_block, C, /*accumulate=*/true, dv,
                         C3);
        // d(weights) (rows,t1) = dout[t0:t1] · v[0:t1]^T
        GemmOnThisThread(false, rows, t1, hs, dout_block, C, vt, T, /*accumulate=*/false, datt, T);
        for (int t = t0; t < t1; ++t) {
          float* drow = datt + static_cast<size_t>(t - t0) * T;
          const float* arow = att + static_cast<size_t>(t) * T;
          // Softmax backward: dpre = att * (datt - sum(att * datt)), att = |arow|,
          // times the forward's scale (the products below take alpha = 1).
          for (int j = 0; j <= t; ++j)
            drow[j] = std::signbit(arow[j]) ? 0.0f : drow[j] * keep_scale;
          const float dot =
              FixedOrderSum(t + 1, [&](int j) { return std::fabs(arow[j]) * drow[j]; });
          for (int j = 0; j <= t; ++j) drow[j] = std::fabs(arow[j]) * (drow[j] - dot) * scale;
          std::fill(drow + t + 1, drow + t1, 0.0f);
        }
        // dq[t0:t1] = dpre (rows,t1, scale included) · k[0:t1]
        GemmOnThisThread(false, rows, hs, t1, datt, T, view.k, C3, /*accumulate=*/false,
                         dq + static_cast<size_t>(t0) * C3, C3);
        // dk[0:t1] += dpre^T (t1,rows, scale included) · q[t0:t1]
        GemmOnThisThread(true, t1, hs, rows, datt, T, view.q + static_cast<size_t>(t0) * C3, C3,
                         /*accumulate=*/true, dk, C3);
      }
    }
  }
}

}  // namespace dropk
