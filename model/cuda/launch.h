// The CUDA kernels' launchers: plain functions over device pointers that
// enqueue one or two kernels on `stream` and return cudaGetLastError(). They
// are the only code nvcc compiles (the .cu files); CudaKernels (a host C++
// file) calls them, checks the returned code and owns every buffer. Private
// to model/cuda/.
//
// Legend as model/kernels.h: B batch, T time, C channels, NH heads,
// hs = C/NH, V vocab, N = B*T rows. Tensors are row-major and contiguous.
// No kernel here uses floating-point atomics: every sum has a fixed order
// (a fixed tree over a fixed number of threads, or a loop), so a result does
// not change from run to run.
#ifndef DROPK_MODEL_CUDA_LAUNCH_H_
#define DROPK_MODEL_CUDA_LAUNCH_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/site_dropout.h"
#include "kernel_math.h"
#include "model/dropout.h"

namespace dropk::cuda {

// out (B,T,C) = wte[tokens] + wpe[0:T], then dropout d.
cudaError_t EmbeddingForward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                             int B, int T, int C, const SiteDropout& d, cudaStream_t stream);
// dwte (V,C) += dout rows gathered by token, summed for each token in
// position order starting from dwte's value (the CPU's order); dwpe (T,C) +=
// the batch sum of dout. dout (B,T,C) must already hold the masked gradient.
// The positions are sorted by token first (CUB's stable radix sort), so the
// work is linear in B*T; scratch holds EmbeddingBackwardScratchBytes(B*T)
// bytes, 256-byte aligned.
cudaError_t EmbeddingBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                              int B, int T, int C, void* scratch, cudaStream_t stream);
// Scratch bytes EmbeddingBackward needs for N = B*T positions.
size_t EmbeddingBackwardScratchBytes(int N);

// out = residual + x * scale (residual may be null: out = x * scale) over a
// (B, per_sample) tensor, scale from dropout d (1 when d.p == 0). out may
// alias x or residual.
cudaError_t DropoutApply(float* out, const float* residual, const float* x, int B,
                         uint64_t per_sample, const SiteDropout& d, cudaStream_t stream);

// LayerNorm over rows of C: out (N,C), mean and rstd (N).
cudaError_t LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                             const float* b, int N, int C, cudaStream_t stream);
// Accumulates dinp (N,C), dw (C), db (C). scratch holds at least
// ColumnSumScratchFloats(N, C) * 2 floats.
cudaError_t LayerNormBackward(float* dinp, float* dw, float* db, const float* dout,
                              const float* inp, const float* w, const float* mean,
                              const float* rstd, int N, int C, float* scratch, cudaStream_t stream);
// dsum (C) += the column sums of x (N,C). scratch holds at least
// ColumnSumScratchFloats(N, C) floats.
cudaError_t ColumnSums(float* dsum, const float* x, int N, int C, float* scratch,
                       cudaStream_t stream);
size_t ColumnSumScratchFloats(int N, int C);

cudaError_t GeluForward(float* out, const float* inp, size_t n, cudaStream_t stream);
// dinp = GeluGrad(inp) * dout; dinp may alias dout.
cudaError_t GeluBackward(float* dinp, const float* inp, const float* dout, size_t n,
                         cudaStream_t stream);

// Per row of logits (N,V): lse = log-sum-exp, losses = lse - logit[target].
cudaError_t CrossEntropyForward(float* losses, float* lse, const float* logits,
                                const int32_t* targets, int N, int V, cudaStream_t stream);
// In place: logits become (softmax - onehot(target)) * scale.
cudaError_t CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets, int N,
                                 int V, float scale, cudaStream_t stream);

// *result (device double) = sum of x^2, through kSumSquaresBlocks partial sums
// in scratch (that many doubles) added in order: the same bits for the same x
// on any GPU.
constexpr int kSumSquaresBlocks = 512;
cudaError_t SumSquares(double* result, const float* x, size_t n, double* scratch,
                       cudaStream_t stream);
cudaError_t AdamW(float* params, const float* grads, float* m, float* v, size_t n,
                  const AdamWConstants& k, cudaStream_t stream);
cudaError_t Scale(float* x, float alpha, size_t n, cudaStream_t stream);
// Dense column-major dst (rows, cols) = src (column-major, leading dimension
// ld >= rows) rounded to bf16, nearest even; dst holds the bf16 bits. The
// operands of a bf16 product (MatmulPrecision::kBf16).
cudaError_t ToBf16(uint16_t* dst, const float* src, size_t rows, size_t cols, size_t ld,
                   cudaStream_t stream);
// Every row of out (N,OC) = bias (OC): the starting value of a product that
// then accumulates onto it (the fallback when cuBLASLt has no bias epilogue
// for a shape).
cudaError_t BroadcastRows(float* out, const float* bias, int N, int OC, cudaStream_t stream);

// Attention layout changes. Rows (B,T,row_stride) with head h at columns
// [col0 + h*hs, col0 + (h+1)*hs) <-> heads (B,NH,T,hs).
cudaError_t RowsToHeads(float* heads, const float* rows, int row_stride, int B, int T, int NH,
                        int hs, cudaStream_t stream);
cudaError_t HeadsToRows(float* rows, int row_stride, const float* heads, int B, int T, int NH,
                        int hs, cudaStream_t stream);

// In place over att (B,NH,T,T), which holds the scaled scores: each row t
// becomes the causal softmax over columns [0, t], zeros after. When d.p > 0,
// weights (B,NH,T,T) receives the probabilities with dropout applied (site
// d, element (h*T + t)*T + j of sample b), and each dropped probability in
// att gets its sign bit set (|att| stays the softmax; the CPU's convention),
// else weights is not touched and no sign is set.
cudaError_t SoftmaxForward(float* att, float* weights, int B, int NH, int T, const SiteDropout& d,
                           cudaStream_t stream);
// weights = dropout(|probs|) with the mask read from the signs SoftmaxForward
// set in probs (no Philox draw); zeros above the diagonal.
cudaError_t AttentionDropWeights(float* weights, const float* probs, int B, int NH, int T,
                                 const SiteDropout& d, cudaStream_t stream);
// In place over datt (B,NH,T,T), which holds d(weights): each row becomes
// d(scores) = p * (g - sum(p * g)) with p = |probs| and g = d(weights)
// through the mask that probs' signs carry; zeros above the diagonal.
cudaError_t SoftmaxBackward(float* datt, const float* probs, int B, int NH, int T,
                            const SiteDropout& d, cudaStream_t stream);

// Flash-style causal attention (model/cuda/flash_attention.cu): TF32 tensor
// cores, scores and probabilities only in shared memory, dropout d decided in
// the kernels (the same mask as SoftmaxForward). For head sizes
// FlashAttentionSupports accepts.
bool FlashAttentionSupports(int hs);  // 16, 32 or 64
// Shared memory per block the flash kernels need at head size hs (the
// backward kernels', the larger): 111,104 bytes at 64, more than sm_86 and
// sm_89 allow a block, so those keep the materialised kernels.
size_t FlashAttentionSharedBytes(int hs);
// Floats of `saved` that FlashAttentionForward fills for backward: the
// log-sum-exp of each (b, h, t) row.
size_t FlashAttentionSavedFloats(int B, int T, int NH);
// out (B,T,C) = causal softmax(q k^T / sqrt(hs)) with dropout, times v, per
// head, from qkv (B,T,3C); saved as above.
cudaError_t FlashAttentionForward(float* out, float* saved, const float* qkv, int B, int T, int C,
                                  int NH, const SiteDropout& d, cudaStream_t stream);
// dqkv (B,T,3C) overwritten from dout (B,T,C), qkv, forward's out and what
// it saved; delta is scratch of B*NH*T floats.
cudaError_t FlashAttentionBackward(float* dqkv, const float* dout, const float* qkv,
                                   const float* out, const float* saved, float* delta, int B, int T,
                                   int C, int NH, const SiteDropout& d, cudaStream_t stream);
// delta (B*NH*T) = each row's dout . out over its head: the row term of the
// flash kernels' score gradients.
cudaError_t FlashAttentionDelta(float* delta, const float* dout, const float* out, int B, int T,
                                int C, int NH, cudaStream_t stream);

// The same attention through bf16 tensor cores (model/cuda/
// flash_attention_bf16.cu: mma.sync with scores, probabilities and output in
// registers, FA2's scheme): q, k, v, the probabilities and the score
// gradients rounded to bf16, every sum in fp32. The same head sizes, saved
// floats and dropout decisions as the TF32 flash kernels; at most 37,376
// bytes of shared memory a block, so any GPU from sm_80 takes them.
// Shared memory per block of the bf16 kernels at head size hs (the larger
// backward kernel's), 0 for a head size they do not take.
size_t FlashBf16AttentionSharedBytes(int hs);
cudaError_t FlashBf16AttentionForward(float* out, float* saved, const float* qkv, int B, int T,
                                      int C, int NH, const SiteDropout& d, cudaStream_t stream);
cudaError_t FlashBf16AttentionBackward(float* dqkv, const float* dout, const float* qkv,
                                       const float* out, const float* saved, float* delta, int B,
                                       int T, int C, int NH, const SiteDropout& d,
                                       cudaStream_t stream);

}  // namespace dropk::cuda

#endif  // DROPK_MODEL_CUDA_LAUNCH_H_
