// Launchers of the CUDA inference engine's kernels (inference.cu): the row
// kernels of prefill and decode over a KV cache. Private to model/cuda/.
//
// Batch invariance (DESIGN invariant 5) on the GPU: every output element is
// one reduction in a fixed order (a fixed per-lane stride, then a fixed
// butterfly or block tree over a fixed number of threads) that reads only
// its own row's inputs, the weights and its own slot's cache. The number of
// rows in a step, a row's index in it and the other rows never change the
// arithmetic, so a sequence's logits are the same bits alone or among 15
// others. That is why products go through RowMatmul and not cuBLAS, whose
// algorithm (split-K included) may change with the number of rows.
//
// Legend: R rows of a step, C channels, NH heads, hs = C/NH, T block_size
// (positions per slot), OC output columns. Every launcher enqueues on
// `stream` and returns cudaGetLastError().
#ifndef DROPK_MODEL_CUDA_INFERENCE_LAUNCH_H_
#define DROPK_MODEL_CUDA_INFERENCE_LAUNCH_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace dropk::cuda {

// x (R,C) = wte[tokens[r]] + wpe[positions[r]].
cudaError_t EmbedRows(float* x, const int32_t* tokens, const int32_t* positions, const float* wte,
                      const float* wpe, int R, int C, cudaStream_t stream);

// What RowMatmul does with each y = inp · w^T [+ bias]: store it, store
// Gelu(y) (kernel_math.h's, as GeluForward), or add it to out in place
// (out += y, the residual add). Each gives the same bits as storing y and
// then running the separate kernel on it; fusing saves a launch and a pass.
enum class RowEpilogue { kStore, kGelu, kAddToOut };

// out (R,OC) = epilogue(inp (R,C) · w (OC,C)^T [+ bias (OC), when not null]).
// One warp computes one output column for a group of rows. out must not
// overlap inp or w (with kAddToOut it is read and written in place).
cudaError_t RowMatmul(float* out, const float* inp, const float* w, const float* bias, int R, int C,
                      int OC, cudaStream_t stream, RowEpilogue epilogue = RowEpilogue::kStore);

// Writes row r's key and value (columns [C,2C) and [2C,3C) of qkv (R,3C))
// into one layer's caches (slots, T, C) at (slots[r], positions[r]).
cudaError_t WriteKvCache(float* k_cache, float* v_cache, const float* qkv, const int32_t* slots,
                         const int32_t* positions, int R, int C, int T, cudaStream_t stream);

// out (R,C): for row r and head h, the softmax of q·k_j / sqrt(hs) over the
// positions j in [0, positions[r]] of its slot's cache, times v_j. Run
// WriteKvCache for the step's rows first. T must be at most
// kMaxCachedAttentionPositions.
constexpr int kMaxCachedAttentionPositions = 8192;
cudaError_t CachedAttention(float* out, const float* qkv, const float* k_cache,
                            const float* v_cache, const int32_t* slots, const int32_t* positions,
                            int R, int C, int NH, int T, cudaStream_t stream);

// dst row h (C) = src row rows[h], h < H.
cudaError_t GatherRows(float* dst, const float* src, const int32_t* rows, int H, int C,
                       cudaStream_t stream);

}  // namespace dropk::cuda

#endif  // DROPK_MODEL_CUDA_INFERENCE_LAUNCH_H_
