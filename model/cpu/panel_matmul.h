// The inference engine's products, in one fixed order per output and fast at
// any number of rows.
//
// out (R,OC) = inp (R,C) · W (OC,C)^T + bias, where every output is the chain
//   bias[o] + inp[r][0]*W[o][0] + inp[r][1]*W[o][1] + ... + inp[r][C-1]*W[o][C-1]
// summed in channel order, each step one fused multiply-add (one rounding)
// on targets with FMA. That chain depends only on the output's own row and
// column, never on how many rows a step has, which rows share its tile, or
// the thread count: the batch invariance DESIGN invariant 5 asks for.
//
// Why not dot products in fixed_order_dot.h's order (which these products
// used, in tiles, until 2026-12-01): a dot product puts the reduction inside
// each vector (16 lanes of one output), so every output ends in a
// horizontal sum and a tile reloads both operands for every 16 channels. Here a vector holds 16
// outputs and runs along the channels: one broadcast input value times one vector of packed weights
// per multiply-add, the shape of a BLAS micro-kernel, with no split of any sum. Measured on the
// 2-core Zen 5 VM at 64 rows of GPT-2's products: about 2.5x the dot tiles and 2x OpenBLAS sgemm
// (which this order cannot use: sgemm's k blocking varies with the shape).
//
// The weights are packed once (PackedLinear): panels of kPanelColumns output
// columns, each stored channel-major, so a tile reads one contiguous stream.
// They may be packed as bf16 (PanelWeights::kBf16): each weight rounded to
// the nearest bf16 once, and widened back to fp32 (exactly) as it is loaded,
// so the chain above is the same fp32 chain over the rounded weights. Half
// the bytes: a step of few rows reads its weights from memory, so it runs up
// to twice as fast.
// Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_PANEL_MATMUL_H_
#define DROPK_MODEL_CPU_PANEL_MATMUL_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dropk {

// How PackedLinear stores its weights: fp32, or bf16 (rounded to nearest,
// ties to even; the bias stays fp32).
enum class PanelWeights { kFp32, kBf16 };

// A linear layer's weight W (OC rows of C values: one row per output
// column) and bias, packed for PanelMatmul: panel p holds columns
// [p*W, p*W + W) as C groups of W values (channel c of the W columns side by
// side), W = kPanelColumns, the last panel padded with zeros; the bias is
// padded alike (all zeros without one). bf16 panels hold the channels in
// pairs, interleaved so that each load splits into two vectors by integer
// operations alone (panel_matmul.cc, Bf16Slot).
class PackedLinear {
 public:
  // Output columns per panel: three vectors of the widest float vector the
  // target has (48 with AVX-512).
  static const int kPanelColumns;

  PackedLinear() = default;
  // Packs w, row-major (out_features, in_features), and bias
  // (out_features values, or null for none), storing the weights as
  // `weights` says. Both sizes must be >= 1.
  PackedLinear(const float* w, const float* bias, int out_features, int in_features,
               PanelWeights weights = PanelWeights::kFp32);

  int out_features() const { return out_features_; }
  int in_features() const { return in_features_; }
  PanelWeights weights() const { return weights_; }
  // Copies W's row o (in_features values, as stored: bf16-rounded under
  // kBf16) to dst: the embedding lookup of a tied LM head reads its rows
  // from the packed copy.
  void CopyRow(int o, float* dst) const;
  int num_panels() const { return num_panels_; }
  const float* panels() const { return panels_.data(); }               // kFp32
  const uint16_t* bf16_panels() const { return bf16_panels_.data(); }  // kBf16: bf16 bits
  const float* padded_bias() const { return bias_.data(); }  // num_panels() * kPanelColumns
  // Bytes the weights and bias take.
  size_t bytes() const;

 private:
  int out_features_ = 0, in_features_ = 0, num_panels_ = 0;
  // Where weight (o, c) is in panels_, or in bf16_panels_.
  size_t Fp32At(int o, int c) const;
  size_t Bf16At(int o, int c) const;

  PanelWeights weights_ = PanelWeights::kFp32;
  std::vector<float> panels_, bias_;
  std::vector<uint16_t> bf16_panels_;
};

// out (R, w.out_features()) = inp (R, w.in_features()) · W^T + bias, each
// output summed as the header says (from zero without a bias). Threads (an
// OpenMP team of `threads`) take blocks of panels; R >= 0.
void PanelMatmul(float* out, const float* inp, const PackedLinear& w, int R, int threads);

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_PANEL_MATMUL_H_
