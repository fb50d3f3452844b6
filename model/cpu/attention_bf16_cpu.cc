// Causal multi-head self-attention on the CPU with precision bf16: the four
// (forward two) products per query block take bf16 inputs through oneDNN,
// batched over every (sample, head) at once, as PyTorch's autocast and
// dropk's CUDA kernels (CUBLAS_COMPUTE_32F_FAST_16BF) do; the softmax, its
// backward, dropout and every accumulation stay fp32.
//
// Why batched over heads rather than per head like the fp32 kernels: a
// oneDNN call costs microseconds to set up, and per head the products are
// tiny (32 x 64 x T), so one batched call per block amortises it. q, k, v
// and dout are first copied head by head into bf16 (B*NH,T,hs) arrays, so
// that every operand of a batch is a plain strided view; outputs come back
// head by head in fp32 and are scattered into (B,T,C) / (B,T,3C) at the end.
// The query blocks and the dropout mask in probs's signs are those of the
// fp32 kernels (attention_rows.h), so the two precisions differ only in
// the rounding of the products' inputs.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "cpu/attention_rows.h"
#include "cpu/cpu_kernels.h"

namespace dropk {
namespace {

// The shapes of one attention call.
struct Heads {
  int B, T, C, NH, hs;
  int count() const { return B * NH; }
  size_t elements() const { return static_cast<size_t>(count()) * T * hs; }
};

// dst (B*NH,T,hs) = bf16 of the columns [offset + h*hs, offset + (h+1)*hs)
// of each row of src (B,T,stride), head by head.
void GatherHeadsBf16(uint16_t* dst, const float* src, int stride, int offset, const Heads& s) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s.B; ++b) {
    for (int t = 0; t < s.T; ++t) {
      const float* row = src + (static_cast<size_t>(b) * s.T + t) * stride + offset;
      for (int h = 0; h < s.NH; ++h) {
        uint16_t* out = dst + ((static_cast<size_t>(b) * s.NH + h) * s.T + t) * s.hs;
        for (int d = 0; d < s.hs; ++d) out[d] = ToBf16Bits(row[h * s.hs + d]);
      }
    }
  }
}

// The columns [offset + h*hs, offset + (h+1)*hs) of each row of dst
// (B,T,stride) = head h of src (B*NH,T,hs).
void ScatterHeads(float* dst, int stride, int offset, const float* src, const Heads& s) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s.B; ++b) {
    for (int t = 0; t < s.T; ++t) {
      float* row = dst + (static_cast<size_t>(b) * s.T + t) * stride + offset;
      for (int h = 0; h < s.NH; ++h) {
        const float* in = src + ((static_cast<size_t>(b) * s.NH + h) * s.T + t) * s.hs;
        std::copy(in, in + s.hs, row + h * s.hs);
      }
    }
  }
}

// Strides of a head-by-head (B*NH,T,hs) array read as (rows, hs) matrices.
BatchStrides HeadRows(const Heads& s) { return {static_cast<int64_t>(s.T) * s.hs, s.hs, 1}; }
// The same array read transposed, as (hs, rows) matrices.
BatchStrides HeadRowsTransposed(const Heads& s) {
  return {static_cast<int64_t>(s.T) * s.hs, 1, s.hs};
}

template <typename T>
T* Grown(std::vector<T>& buffer, size_t count) {
  if (buffer.size() < count) buffer.resize(count);
  return buffer.data();
}

// q, k and v of qkv (B,T,3C) head by head in bf16, in the given buffers.
struct QkvHeads16 {
  const uint16_t* q;
  const uint16_t* k;
  const uint16_t* v;
};
QkvHeads16 GatherQkvBf16(std::vector<uint16_t>& q, std::vector<uint16_t>& k,
                         std::vector<uint16_t>& v, const float* qkv, const Heads& s) {
  GatherHeadsBf16(Grown(q, s.elements()), qkv, 3 * s.C, 0, s);
  GatherHeadsBf16(Grown(k, s.elements()), qkv, 3 * s.C, s.C, s);
  GatherHeadsBf16(Grown(v, s.elements()), qkv, 3 * s.C, 2 * s.C, s);
  return {q.data(), k.data(), v.data()};
}

}  // namespace

double CpuBf16AttentionScratchBytes(int B, int T, int C, int NH) {
  const double btc = static_cast<double>(B) * T * C;
  const double block = static_cast<double>(B) * NH * kQueryBlock * T;
  return 4 * btc * sizeof(uint16_t) + 3 * btc * sizeof(float) +
         block * (sizeof(uint16_t) + sizeof(float));
}

void CpuKernels::AttentionForwardBf16(float* out, float* probs, const float* qkv, int B, int T,
                                      int C, int NH, int layer, const DropoutPlan* dropout) {
  const Heads s{B, T, C, NH, C / NH};
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hs));
  const auto [q16, k16, v16] = GatherQkvBf16(bf16_q_, bf16_k_, bf16_v_, qkv, s);
  const size_t block = static_cast<size_t>(kQueryBlock) * T;
  uint16_t* weights16 = Grown(bf16_block_, s.count() * block);  // (B*NH,kQueryBlock,T)
  float* heads_out = Grown(attention_heads_, s.elements());     // (B*NH,T,hs)
  float* scratch = ThreadScratch(2 * static_cast<size_t>(T));   // a row and its scales
  const size_t scratch_stride = scratch_per_thread_;
  const BatchStrides probs_rows{static_cast<int64_t>(T) * T, T, 1};
  const BatchStrides block_rows{static_cast<int64_t>(block), T, 1};

  for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
    const int t1 = std::min(T, t0 + kQueryBlock), rows = t1 - t0;
    // probs[:, t0:t1, 0:t1] = q[:, t0:t1] k[:, 0:t1]^T / sqrt(hs)
    bf16_->MultiplyBatched(probs + static_cast<size_t>(t0) * T, probs_rows,
                           q16 + static_cast<size_t>(t0) * s.hs, HeadRows(s), k16,
                           HeadRowsTransposed(s), s.count(), rows, t1, s.hs, scale, false);
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < s.count(); ++i) {
      for (int t = t0; t < t1; ++t) {
        const HeadView view = MakeHeadView(qkv, i / NH, i % NH, T, C, NH, layer, dropout);
        float* att = probs + static_cast<size_t>(i) * T * T;
        float* row = att + static_cast<size_t>(t) * T;
        CausalSoftmaxRow(row, t, T);
        // The row's weights: the dropped probabilities (att keeps the
        // softmax and the mask, in its signs), or the probabilities.
        float* dropped = scratch + scratch_stride * omp_get_thread_num();
        const float* weights = view.DropWeights(dropped, dropped + T, att, t, t + 1);
        uint16_t* w16 =
            weights16 + static_cast<size_t>(i) * block + static_cast<size_t>(t - t0) * T;
        for (int j = 0; j < t1; ++j) w16[j] = ToBf16Bits(j <= t ? weights[j] : 0.0f);
      }
    }
    // out[:, t0:t1] = weights (rows,t1) · v[:, 0:t1]
    bf16_->MultiplyBatched(heads_out + static_cast<size_t>(t0) * s.hs, HeadRows(s), weights16,
                           block_rows, v16, HeadRows(s), s.count(), rows, s.hs, t1, 1.0f, false);
  }
  ScatterHeads(out, C, 0, heads_out, s);
}

void CpuKernels::AttentionBackwardBf16(float* dqkv, const float* dout, const float* qkv,
                                       const float* probs, int B, int T, int C, int NH, int layer,
                                       const DropoutPlan* dropout) {
  const Heads s{B, T, C, NH, C / NH};
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hs));
  const auto [q16, k16, v16] = GatherQkvBf16(bf16_q_, bf16_k_, bf16_v_, qkv, s);
  uint16_t* dout16 = Grown(bf16_dout_, s.elements());
  GatherHeadsBf16(dout16, dout, C, 0, s);
  const size_t block = static_cast<size_t>(kQueryBlock) * T;
  uint16_t* block16 = Grown(bf16_block_, s.count() * block);    // weights, then d(scores)
  float* dscores = Grown(attention_block_, s.count() * block);  // (B*NH,kQueryBlock,T)
  float* heads = Grown(attention_heads_, 3 * s.elements());
  float* dq = heads;  // (B*NH,T,hs) each
  float* dk = dq + s.elements();
  float* dv = dk + s.elements();
  // dk and dv gather from every later query block: start them at zero.
  std::fill(dk, dv + s.elements(), 0.0f);
  float* scratch = ThreadScratch(static_cast<size_t>(T));  // one row of weights
  const size_t scratch_stride = scratch_per_thread_;
  const BatchStrides block_rows{static_cast<int64_t>(block), T, 1};
  const BatchStrides block_rows_transposed{static_cast<int64_t>(block), 1, T};

  for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
    const int t1 = std::min(T, t0 + kQueryBlock), rows = t1 - t0;
    // The probabilities that multiplied v in forward, with the same mask.
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < s.count(); ++i) {
      for (int t = t0; t < t1; ++t) {
        const HeadView view = MakeHeadView(qkv, i / NH, i % NH, T, C, NH, layer, dropout);
        const float* att = probs + static_cast<size_t>(i) * T * T;
        const float* weights = att + static_cast<size_t>(t) * T;
        if (view.dropout != nullptr) {
          float* dropped = scratch + scratch_stride * omp_get_thread_num();
          view.DroppedWeights(dropped, att, t, t + 1);
          weights = dropped;
        }
        uint16_t* w16 = block16 + static_cast<size_t>(i) * block + static_cast<size_t>(t - t0) * T;
        for (int j = 0; j < t1; ++j) w16[j] = ToBf16Bits(j <= t ? weights[j] : 0.0f);
      }
    }
    // dv[:, 0:t1] += weights^T (t1,rows) · dout[:, t0:t1]
    bf16_->MultiplyBatched(dv, HeadRows(s), block16, block_rows_transposed,
                           dout16 + static_cast<size_t>(t0) * s.hs, HeadRows(s), s.count(), t1,
                           s.hs, rows, 1.0f, true);
    // d(weights) (rows,t1) = dout[:, t0:t1] · v[:, 0:t1]^T
    bf16_->MultiplyBatched(dscores, block_rows, dout16 + static_cast<size_t>(t0) * s.hs,
                           HeadRows(s), v16, HeadRowsTransposed(s), s.count(), rows, t1, s.hs, 1.0f,
                           false);
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < s.count(); ++i) {
      for (int t = t0; t < t1; ++t) {
        const HeadView view = MakeHeadView(qkv, i / NH, i % NH, T, C, NH, layer, dropout);
        float* drow = dscores + static_cast<size_t>(i) * block + static_cast<size_t>(t - t0) * T;
        SoftmaxBackwardRow(drow, probs + (static_cast<size_t>(i) * T + t) * T, t, t1,
                           view.KeepScale());
        uint16_t* d16 = block16 + static_cast<size_t>(i) * block + static_cast<size_t>(t - t0) * T;
        for (int j = 0; j < t1; ++j) d16[j] = ToBf16Bits(drow[j]);
      }
    }
    // dq[:, t0:t1] = d(scores) (rows,t1) · k[:, 0:t1] / sqrt(hs)
    bf16_->MultiplyBatched(dq + static_cast<size_t>(t0) * s.hs, HeadRows(s), block16, block_rows,
                           k16, HeadRows(s), s.count(), rows, s.hs, t1, scale, false);
    // dk[:, 0:t1] += d(scores)^T (t1,rows) · q[:, t0:t1] / sqrt(hs)
    bf16_->MultiplyBatched(dk, HeadRows(s), block16, block_rows_transposed,
                           q16 + static_cast<size_t>(t0) * s.hs, HeadRows(s), s.count(), t1, s.hs,
                           rows, scale, true);
  }
  ScatterHeads(dqkv, 3 * C, 0, dq, s);
  ScatterHeads(dqkv, 3 * C, C, dk, s);
  ScatterHeads(dqkv, 3 * C, 2 * C, dv, s);
}

}  // namespace dropk
