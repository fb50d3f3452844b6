// The non-matmul parts of causal attention on CUDA: moving heads between the
// (B,T,C) row layout and a (B,NH,T,hs) layout that strided-batched GEMMs
// take, and the row-wise causal softmax with its dropout, forward and
// backward. Dropout is decided inside the forward kernel from the same
// Philox address as the CPU (element (h*T + t)*T + j of sample b at site
// kAttentionProbs of the layer); no mask tensor is ever stored: as on the
// CPU, forward sets the sign bit of each dropped probability it saves
// (probabilities are >= 0, so |probs| stays the softmax), and backward reads
// the mask back from those signs instead of drawing it again.
//
// Row kernels use one warp per row (b, h, t). A lane takes runs of four
// consecutive elements (in forward, whole Philox blocks, so each block is
// computed once), and every pass of a kernel gives a lane the same elements,
// so a lane only reads what it wrote itself.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/device_util.cuh"
#include "cuda/launch.h"

namespace dropk::cuda {
namespace {

constexpr int kRowWarps = 8;  // rows (one warp each) per block

// heads (B,NH,T,hs)[b,h,t,d] = rows[(b*T + t) * row_stride + h*hs + d], one
// thread per element in heads order (both sides coalesced over d).
__global__ void RowsToHeadsKernel(float* heads, const float* rows, int row_stride, int B, int T,
                                  int NH, int hs) {
  const size_t total = static_cast<size_t>(B) * NH * T * hs;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % hs);
    const size_t bht = i / hs;
    const int t = static_cast<int>(bht % T);
    const size_t bh = bht / T;
    const int h = static_cast<int>(bh % NH);
    const size_t b = bh / NH;
    heads[i] = rows[(b * T + t) * row_stride + static_cast<size_t>(h) * hs + d];
  }
}

__global__ void HeadsToRowsKernel(float* rows, int row_stride, const float* heads, int B, int T,
                                  int NH, int hs) {
  const size_t total = static_cast<size_t>(B) * NH * T * hs;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % hs);
    const size_t bht = i / hs;
    const int t = static_cast<int>(bht % T);
    const size_t bh = bht / T;
    const int h = static_cast<int>(bh % NH);
    const size_t b = bh / NH;
    rows[(b * T + t) * row_stride + static_cast<size_t>(h) * hs + d] = heads[i];
  }
}

// Where one attention row's elements sit in the Philox stream: element j of
// the row has address (stream, first + j). Without dropout, first = 0 (the
// grouping of a row into blocks of four then only spreads work over lanes).
struct RowAddress {
  uint32_t stream;
  uint64_t first;
};

__device__ __forceinline__ RowAddress AttentionRowAddress(const SiteDropout& d, int row, int NH,
                                                          int T) {
  if (!(d.p > 0.0f)) return {0, 0};
  const int bh = row / T;
  const DropoutAddress a = AttentionRowAddress(d, bh / NH, bh % NH, row % T, NH, T);
  return {a.stream, a.element};
}

// Calls fn(j, keep) for each element j in [0, len) of a row that falls in
// this lane's Philox blocks; keep is the dropout decision (true without
// dropout).
template <typename Fn>
__device__ __forceinline__ void ForLaneElements(const SiteDropout& d, const RowAddress& a, int len,
                                                int lane, Fn fn) {
  const bool drop = d.p > 0.0f;
  const uint64_t block0 = a.first >> 2;
  const uint64_t blocks = ((a.first + len - 1) >> 2) - block0 + 1;
  for (uint64_t g = lane; g < blocks; g += kWarpSize) {
    const uint64_t block = block0 + g;
    Philox4x32Block r{{0, 0, 0, 0}};
    if (drop) {
      r = Philox(d.plan.seed, static_cast<uint32_t>(block), a.stream, d.site, d.plan.step);
    }
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t j = static_cast<int64_t>(block * 4 + w) - static_cast<int64_t>(a.first);
      if (j >= 0 && j < len) fn(static_cast<int>(j), !drop || r.v[w] < d.threshold);
    }
  }
}

__global__ void SoftmaxForwardKernel(float* att, float* weights, int rows, int NH, int T,
                                     SiteDropout d) {
  const int row = blockIdx.x * kRowWarps + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;  // uniform per warp
  const int t = row % T;
  const int len = t + 1;
  float* x = att + static_cast<size_t>(row) * T;
  float maxv = -INFINITY;
  for (int j = lane; j < len; j += kWarpSize) maxv = fmaxf(maxv, x[j]);
  maxv = WarpMax(maxv);
  float sum = 0.0f;
  for (int j = lane; j < len; j += kWarpSize) sum += expf(x[j] - maxv);
  sum = WarpSum(sum);
  const float inv = 1.0f / sum;
  const bool drop = d.p > 0.0f;
  float* wrow = drop ? weights + static_cast<size_t>(row) * T : nullptr;
  const RowAddress a = AttentionRowAddress(d, row, NH, T);
  ForLaneElements(d, a, len, lane, [&](int j, bool keep) {
    const float p = expf(x[j] - maxv) * inv;
    x[j] = keep ? p : -p;  // -0.0f too: the sign bit marks a dropped entry
    if (drop) wrow[j] = keep ? p * d.keep_scale : 0.0f;
  });
  for (int j = len + lane; j < T; j += kWarpSize) {
    x[j] = 0.0f;
    if (drop) wrow[j] = 0.0f;
  }
}

// Whether SoftmaxForwardKernel marked this saved probability as dropped.
__device__ __forceinline__ bool Dropped(float saved) { return __float_as_uint(saved) >> 31; }

// The row kernels below give each lane runs of kRun consecutive elements
// (lane * kRun + 128 * i ...), each run's loads issued before its stores, so
// a lane keeps kRun loads in flight as the Philox-block walk of forward does.
constexpr int kRun = 4;

// weights = the dropped probabilities that multiplied v in forward, from
// the probabilities and signs forward saved (no Philox draw).
__global__ void DropWeightsKernel(float* __restrict__ weights, const float* __restrict__ probs,
                                  int rows, int T, float keep_scale) {
  const int row = blockIdx.x * kRowWarps + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const int len = row % T + 1;
  const float* p = probs + static_cast<size_t>(row) * T;
  float* wrow = weights + static_cast<size_t>(row) * T;
  for (int j0 = lane * kRun; j0 < T; j0 += kWarpSize * kRun) {
    float pv[kRun];
#pragma unroll
    for (int r = 0; r < kRun; ++r) pv[r] = j0 + r < len ? p[j0 + r] : -0.0f;  // -0: a zero weight
#pragma unroll
    for (int r = 0; r < kRun; ++r) {
      if (j0 + r < T) wrow[j0 + r] = Dropped(pv[r]) ? 0.0f : pv[r] * keep_scale;
    }
  }
}

// pv, gv = elements j0 .. j0 + kRun - 1 of p and g; 0 from len on.
__device__ __forceinline__ void LoadRun(float (&pv)[kRun], float (&gv)[kRun],
                                        const float* __restrict__ p, const float* g, int j0,
                                        int len) {
#pragma unroll
  for (int r = 0; r < kRun; ++r) {
    pv[r] = j0 + r < len ? p[j0 + r] : 0.0f;
    gv[r] = j0 + r < len ? g[j0 + r] : 0.0f;
  }
}

// datt (the gradient of the weights) becomes the gradient of the scores:
// through the mask (d(probs) = d(weights) * keep_scale where kept, 0 where
// dropped), then the softmax's backward with probabilities |probs|.
__global__ void SoftmaxBackwardKernel(float* __restrict__ datt, const float* __restrict__ probs,
                                      int rows, int T, float keep_scale) {
  const int row = blockIdx.x * kRowWarps + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const int len = row % T + 1;
  float* g = datt + static_cast<size_t>(row) * T;
  const float* p = probs + static_cast<size_t>(row) * T;
  float dot = 0.0f;
  for (int j0 = lane * kRun; j0 < len; j0 += kWarpSize * kRun) {
    float pv[kRun], gv[kRun];
    LoadRun(pv, gv, p, g, j0, len);
#pragma unroll
    for (int r = 0; r < kRun; ++r) {
      gv[r] = Dropped(pv[r]) ? 0.0f : gv[r] * keep_scale;
      dot += fabsf(pv[r]) * gv[r];
      if (j0 + r < len) g[j0 + r] = gv[r];
    }
  }
  dot = WarpSum(dot);
  for (int j0 = lane * kRun; j0 < T; j0 += kWarpSize * kRun) {
    float pv[kRun], gv[kRun];
    LoadRun(pv, gv, p, g, j0, len);
#pragma unroll
    for (int r = 0; r < kRun; ++r) {
      if (j0 + r < T) g[j0 + r] = j0 + r < len ? fabsf(pv[r]) * (gv[r] - dot) : 0.0f;
    }
  }
}

unsigned RowBlocks(size_t rows) {
  return static_cast<unsigned>((rows + kRowWarps - 1) / kRowWarps);
}

}  // namespace

cudaError_t RowsToHeads(float* heads, const float* rows, int row_stride, int B, int T, int NH,
                        int hs, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(B) * NH * T * hs;
  if (total == 0) return cudaGetLastError();
  RowsToHeadsKernel<<<BlocksFor(total, kThreads), kThreads, 0, stream>>>(heads, rows, row_stride, B,
                                                                         T, NH, hs);
  return cudaGetLastError();
}

cudaError_t HeadsToRows(float* rows, int row_stride, const float* heads, int B, int T, int NH,
                        int hs, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(B) * NH * T * hs;
  if (total == 0) return cudaGetLastError();
  HeadsToRowsKernel<<<BlocksFor(total, kThreads), kThreads, 0, stream>>>(rows, row_stride, heads, B,
                                                                         T, NH, hs);
  return cudaGetLastError();
}

cudaError_t SoftmaxForward(float* att, float* weights, int B, int NH, int T, const SiteDropout& d,
                           cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(B) * NH * T;
  if (rows == 0) return cudaGetLastError();
  SoftmaxForwardKernel<<<RowBlocks(rows), kRowWarps * kWarpSize, 0, stream>>>(
      att, weights, static_cast<int>(rows), NH, T, d);
  return cudaGetLastError();
}

cudaError_t AttentionDropWeights(float* weights, const float* probs, int B, int NH, int T,
                                 const SiteDropout& d, cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(B) * NH * T;
  if (rows == 0) return cudaGetLastError();
  DropWeightsKernel<<<RowBlocks(rows), kRowWarps * kWarpSize, 0, stream>>>(
      weights, probs, static_cast<int>(rows), T, d.keep_scale);
  return cudaGetLastError();
}

cudaError_t SoftmaxBackward(float* datt, const float* probs, int B, int NH, int T,
                            const SiteDropout& d, cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(B) * NH * T;
  if (rows == 0) return cudaGetLastError();
  SoftmaxBackwardKernel<<<RowBlocks(rows), kRowWarps * kWarpSize, 0, stream>>>(
      datt, probs, static_cast<int>(rows), T, d.p > 0.0f ? d.keep_scale : 1.0f);
  return cudaGetLastError();
}

}  // namespace dropk::cuda
