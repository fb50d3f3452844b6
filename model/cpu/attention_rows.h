// Row operations of causal attention on the CPU, shared by the fp32
// kernels (attention_cpu.cc, OpenBLAS per head) and the bf16 ones
// (attention_bf16_cpu.cc, oneDNN over all heads at once).
//
// Row t of a head's (T,T) matrix holds query t's scores, then
// probabilities, over keys [0, t]; entries past t are zero. With attention
// dropout, forward marks each dropped probability by setting its sign bit in
// the probabilities it saves (probabilities are >= 0, so the magnitude stays
// the softmax), and backward reads the mask back from there rather than
// drawing the same Philox numbers a second time.
//
// Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_ATTENTION_ROWS_H_
#define DROPK_MODEL_CPU_ATTENTION_ROWS_H_

#include <cstddef>
#include <cstdint>

#include "model/dropout.h"

namespace dropk {

// Query rows per block: causality is exploited, not masked, by computing
// for the block [t0, t1) only keys [0, t1). Small enough to skip most of
// the masked half (0.56x the flops of the full products at T = 256), large
// enough that each product still runs near its peak.
inline constexpr int kQueryBlock = 32;

// Softmax in place of the causal row `row` of length t + 1 (the entries up to
// and including the diagonal), then zeros up to `width`.
void CausalSoftmaxRow(float* row, int t, int width);

// Softmax backward of row t in place: drow holds d(weights) [0, t] on entry
// and d(scores) on return, zero-filled to width. arow is the row that
// forward saved (sign bit set where dropped); keep_scale is 1/(1-p), or 1
// without dropout: d(att) = d(weights) * keep_scale where kept, 0 where dropped.
void SoftmaxBackwardRow(float* drow, const float* arow, int t, int width, float keep_scale);

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
  // set. scales is (t1-t0) x T floats of scratch.
  const float* DropWeights(float* dropped, float* scales, float* att, int t0, int t1) const;

  // Backward: the same weights as DropWeights gave for rows [t0, t1), read
  // back from the signs it left in att, into dropped (t1-t0, T).
  void DroppedWeights(float* dropped, const float* att, int t0, int t1) const;

  // What a kept probability is multiplied by: 1/(1-p), or 1 without dropout.
  float KeepScale() const { return dropout != nullptr ? DropoutKeepScale(p) : 1.0f; }
};

// The view of head h of sample b of qkv (B,T,3C) with C / NH columns per
// head, for the dropout of `layer` (null or rate 0: none).
inline HeadView MakeHeadView(const float* qkv, int b, int h, int T, int C, int NH, int layer,
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

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_ATTENTION_ROWS_H_
