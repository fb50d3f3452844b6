// The CUDA inference engine's kernels; contracts in inference_launch.h.
// Every sum below runs in an order fixed by the kernel's constants and the
// row's own length, never by the number of rows in the step.
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "cuda/device_util.cuh"
#include "cuda/inference_launch.h"
#include "kernel_math.h"

namespace dropk::cuda {
namespace {

constexpr int kMatmulWarps = 8;         // output columns per RowMatmul block, one per warp
constexpr int kMatmulRows = 8;          // rows per RowMatmul block, sharing each weight load
constexpr int kMatmulLoads = 8;         // weight loads in flight per RowMatmul lane
constexpr int kAttentionThreads = 128;  // threads per (row, head) of CachedAttention
constexpr int kAttentionLoads = 8;      // cached values in flight per CachedAttention thread

__global__ void EmbedRowsKernel(float* x, const int32_t* tokens, const int32_t* positions,
                                const float* wte, const float* wpe, int R, int C) {
  const size_t total = static_cast<size_t>(R) * C;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / C, c = i % C;
    x[i] = wte[static_cast<size_t>(tokens[r]) * C + c] +
           wpe[static_cast<size_t>(positions[r]) * C + c];
  }
}

// Block (kMatmulWarps warps): rows [blockIdx.x * kMatmulRows, +kMatmulRows),
// column blockIdx.y * kMatmulWarps + warp. Each lane sums channels lane,
// lane + 32, ... of every row in order, then the warp adds its lanes in a
// fixed butterfly: a row's result is the same whichever block it is in.
//
// A lane loads kMatmulLoads of its weights (one per 32 channels) before it
// uses any: a decode step reads each weight once and is bound by memory
// latency, and with one load in flight per warp a row of 3072 channels took
// 96 round trips to memory (GPT-2's decode step took 1.57 ms on an H200 for
// 0.5 GB of weights, 7% of the memory's bandwidth). The sums still run
// channel by channel in the order above: the same bits as one load at a time.
//
// The epilogue then stores y = sum (+ bias) as kEpilogue says; y is rounded
// to float first in every case, so a fused GELU or residual add gives the
// same bits as storing y and running GeluForward or the residual add on it.
template <RowEpilogue kEpilogue>
__global__ void RowMatmulKernel(float* out, const float* inp, const float* w, const float* bias,
                                int R, int C, int OC) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int col = blockIdx.y * kMatmulWarps + warp;
  const int r0 = blockIdx.x * kMatmulRows;
  if (col >= OC) return;  // a whole warp leaves together: the shuffles stay full
  const int rows = min(kMatmulRows, R - r0);
  const float* wrow = w + static_cast<size_t>(col) * C;
  float acc[kMatmulRows];
#pragma unroll
  for (int g = 0; g < kMatmulRows; ++g) acc[g] = 0.0f;
  // A row of the block past R (the last group of a step) multiplies zeros
  // into an accumulator that is never stored; the real rows' sums are what
  // the comments above say.
  int c = lane;
  for (; c + (kMatmulLoads - 1) * kWarpSize < C; c += kMatmulLoads * kWarpSize) {
    float wc[kMatmulLoads];
#pragma unroll
    for (int u = 0; u < kMatmulLoads; ++u) wc[u] = __ldg(wrow + c + u * kWarpSize);
#pragma unroll
    for (int u = 0; u < kMatmulLoads; ++u) {
#pragma unroll
      for (int g = 0; g < kMatmulRows; ++g) {
        const size_t at = static_cast<size_t>(r0 + g) * C + c + u * kWarpSize;
        const float x = g < rows ? inp[at] : 0.0f;
        acc[g] = fmaf(x, wc[u], acc[g]);
      }
    }
  }
  for (; c < C; c += kWarpSize) {  // the last channels of the row, fewer than a round
    const float wc = __ldg(wrow + c);
#pragma unroll
    for (int g = 0; g < kMatmulRows; ++g) {
      const float x = g < rows ? inp[static_cast<size_t>(r0 + g) * C + c] : 0.0f;
      acc[g] = fmaf(x, wc, acc[g]);
    }
  }
#pragma unroll
  for (int g = 0; g < kMatmulRows; ++g) {
    const float sum = WarpSum(acc[g]);
    if (lane == 0 && g < rows) {
      const float y = bias != nullptr ? sum + bias[col] : sum;
      float* o = out + static_cast<size_t>(r0 + g) * OC + col;
      if constexpr (kEpilogue == RowEpilogue::kGelu) {
        *o = Gelu(y);
      } else if constexpr (kEpilogue == RowEpilogue::kAddToOut) {
        *o = *o + y;
      } else {
        *o = y;
      }
    }
  }
}

__global__ void WriteKvCacheKernel(float* k_cache, float* v_cache, const float* qkv,
                                   const int32_t* slots, const int32_t* positions, int R, int C,
                                   int T) {
  const size_t total = static_cast<size_t>(R) * C;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / C, c = i % C;
    const size_t at = (static_cast<size_t>(slots[r]) * T + positions[r]) * C + c;
    const float* row = qkv + r * 3 * C;
    k_cache[at] = row[C + c];
    v_cache[at] = row[2 * C + c];
  }
}

// Block (row blockIdx.x, head blockIdx.y), kAttentionThreads threads; the
// scores of positions [0, pos] live in dynamic shared memory. Rows go on x:
// a decode step has one row per slot, and --max-batch may exceed gridDim.y's
// limit of 65535.
__global__ void CachedAttentionKernel(float* out, const float* qkv, const float* k_cache,
                                      const float* v_cache, const int32_t* slots,
                                      const int32_t* positions, int C, int NH, int T) {
  extern __shared__ float shared[];
  float* reduce = shared;       // 33 values for BlockReduce
  float* scores = shared + 33;  // (T)
  const int r = blockIdx.x, h = blockIdx.y;
  const int hs = C / NH, pos = positions[r];
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  const float* q = qkv + static_cast<size_t>(r) * 3 * C + h * hs;
  const size_t base = static_cast<size_t>(slots[r]) * T * C + h * hs;
  const float* kb = k_cache + base;
  const float* vb = v_cache + base;

  float local_max = -INFINITY;
  for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
    const float* k = kb + static_cast<size_t>(j) * C;
    float s = 0.0f;
    for (int d = 0; d < hs; ++d) s = fmaf(q[d], k[d], s);
    s *= scale;
    scores[j] = s;
    local_max = fmaxf(local_max, s);
  }
  const float row_max = BlockReduce<float, true>(local_max, reduce);
  float local_sum = 0.0f;
  for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
    const float e = expf(scores[j] - row_max);
    scores[j] = e;
    local_sum += e;
  }
  const float inv = 1.0f / BlockReduce<float, false>(local_sum, reduce);  // syncs scores too
  float* o = out + static_cast<size_t>(r) * C + h * hs;
  for (int d = threadIdx.x; d < hs; d += blockDim.x) {
    // Position by position in order, with kAttentionLoads values loaded
    // before any is used: each is another cache row, a round trip to memory
    // that the sum would otherwise wait on one at a time.
    float acc = 0.0f;
    int j = 0;
    for (; j + kAttentionLoads <= pos + 1; j += kAttentionLoads) {
      float v[kAttentionLoads];
#pragma unroll
      for (int u = 0; u < kAttentionLoads; ++u) v[u] = vb[static_cast<size_t>(j + u) * C + d];
#pragma unroll
      for (int u = 0; u < kAttentionLoads; ++u) acc = fmaf(scores[j + u], v[u], acc);
    }
    for (; j <= pos; ++j) acc = fmaf(scores[j], vb[static_cast<size_t>(j) * C + d], acc);
    o[d] = acc * inv;
  }
}

__global__ void GatherRowsKernel(float* dst, const float* src, const int32_t* rows, int H, int C) {
  const size_t total = static_cast<size_t>(H) * C;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t h = i / C, c = i % C;
    dst[i] = src[static_cast<size_t>(rows[h]) * C + c];
  }
}

}  // namespace

cudaError_t EmbedRows(float* x, const int32_t* tokens, const int32_t* positions, const float* wte,
                      const float* wpe, int R, int C, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(R) * C;
  if (total == 0) return cudaGetLastError();
  EmbedRowsKernel<<<BlocksFor(total, kThreads), kThreads, 0, stream>>>(x, tokens, positions, wte,
                                                                       wpe, R, C);
  return cudaGetLastError();
}

cudaError_t RowMatmul(float* out, const float* inp, const float* w, const float* bias, int R, int C,
                      int OC, cudaStream_t stream, RowEpilogue epilogue) {
  if (R == 0 || OC == 0) return cudaGetLastError();
  // Row groups vary fastest, so the blocks that share a weight column run
  // together and read it from L2 rather than from memory again.
  const dim3 grid((R + kMatmulRows - 1) / kMatmulRows, (OC + kMatmulWarps - 1) / kMatmulWarps);
  const int threads = kMatmulWarps * kWarpSize;
  switch (epilogue) {
    case RowEpilogue::kStore:
      RowMatmulKernel<RowEpilogue::kStore>
          <<<grid, threads, 0, stream>>>(out, inp, w, bias, R, C, OC);
      break;
    case RowEpilogue::kGelu:
      RowMatmulKernel<RowEpilogue::kGelu>
          <<<grid, threads, 0, stream>>>(out, inp, w, bias, R, C, OC);
      break;
    case RowEpilogue::kAddToOut:
      RowMatmulKernel<RowEpilogue::kAddToOut>
          <<<grid, threads, 0, stream>>>(out, inp, w, bias, R, C, OC);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t WriteKvCache(float* k_cache, float* v_cache, const float* qkv, const int32_t* slots,
                         const int32_t* positions, int R, int C, int T, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(R) * C;
  if (total == 0) return cudaGetLastError();
  WriteKvCacheKernel<<<BlocksFor(total, kThreads), kThreads, 0, stream>>>(
      k_cache, v_cache, qkv, slots, positions, R, C, T);
  return cudaGetLastError();
}

cudaError_t CachedAttention(float* out, const float* qkv, const float* k_cache,
                            const float* v_cache, const int32_t* slots, const int32_t* positions,
                            int R, int C, int NH, int T, cudaStream_t stream) {
  if (R == 0) return cudaGetLastError();
  if (T > kMaxCachedAttentionPositions) return cudaErrorInvalidValue;
  const size_t shared_bytes = (33 + static_cast<size_t>(T)) * sizeof(float);
  const dim3 grid(R, NH);
  CachedAttentionKernel<<<grid, kAttentionThreads, shared_bytes, stream>>>(
      out, qkv, k_cache, v_cache, slots, positions, C, NH, T);
  return cudaGetLastError();
}

cudaError_t GatherRows(float* dst, const float* src, const int32_t* rows, int H, int C,
                       cudaStream_t stream) {
  const size_t total = static_cast<size_t>(H) * C;
  if (total == 0) return cudaGetLastError();
  GatherRowsKernel<<<BlocksFor(total, kThreads), kThreads, 0, stream>>>(dst, src, rows, H, C);
  return cudaGetLastError();
}

}  // namespace dropk::cuda
