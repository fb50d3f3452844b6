// Elementwise CUDA kernels: dropout (+ residual), GELU, cross-entropy, the
// AdamW step, scaling, the sum of squares and the rounding of product
// operands to bf16. Each thread of the dropout
// kernel takes four consecutive elements, which one Philox block decides.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/device_util.cuh"
#include "cuda/launch.h"
#include "kernel_math.h"

namespace dropk::cuda {
namespace {

__global__ void DropoutApplyKernel(float* out, const float* residual, const float* x,
                                   uint64_t total, uint64_t per_sample, SiteDropout d) {
  const uint64_t quads = (total + 3) / 4;
  for (uint64_t q = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; q < quads;
       q += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint64_t f0 = q * 4;
    float s[4];
    DropoutScales4(d, per_sample, f0, s);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint64_t f = f0 + w;
      if (f < total) {
        const float v = x[f] * s[w];
        out[f] = residual != nullptr ? residual[f] + v : v;
      }
    }
  }
}

__global__ void GeluForwardKernel(float* out, const float* inp, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = Gelu(inp[i]);
  }
}

__global__ void GeluBackwardKernel(float* dinp, const float* inp, const float* dout, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dinp[i] = GeluGrad(inp[i]) * dout[i];
  }
}

// One block per row of V logits.
__global__ void CrossEntropyForwardKernel(float* losses, float* lse, const float* logits,
                                          const int32_t* targets, int V) {
  __shared__ float shared[33];
  const int n = blockIdx.x;
  const float* row = logits + static_cast<size_t>(n) * V;
  float maxv = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) maxv = fmaxf(maxv, row[v]);
  maxv = BlockReduce<float, true>(maxv, shared);
  float sum = 0.0f;
  for (int v = threadIdx.x; v < V; v += blockDim.x) sum += expf(row[v] - maxv);
  sum = BlockReduce<float, false>(sum, shared);
  if (threadIdx.x == 0) {
    const float log_sum_exp = maxv + logf(sum);
    lse[n] = log_sum_exp;
    losses[n] = log_sum_exp - row[targets[n]];
  }
}

__global__ void CrossEntropyBackwardKernel(float* logits, const float* lse, const int32_t* targets,
                                           int N, int V, float scale) {
  const size_t total = static_cast<size_t>(N) * V;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t n = i / V;
    const int v = static_cast<int>(i - n * V);
    float g = expf(logits[i] - lse[n]) * scale;
    if (v == targets[n]) g -= scale;
    logits[i] = g;
  }
}

// Stage 1: kSumSquaresBlocks blocks, each a fixed grid-stride share of x,
// summed in double; stage 2 adds the partials in block order.
__global__ void SumSquaresPartialKernel(double* partials, const float* x, size_t n) {
  __shared__ double shared[33];
  double acc = 0.0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const double v = x[i];
    acc += v * v;
  }
  acc = BlockReduce<double, false>(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void SumSquaresFinalKernel(double* result, const double* partials, int count) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double total = 0.0;
  for (int i = 0; i < count; ++i) total += partials[i];
  *result = total;
}

__global__ void AdamWKernel(float* params, const float* grads, float* m, float* v, size_t n,
                            AdamWConstants k) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    AdamWUpdate(&params[i], &m[i], &v[i], grads[i], k);
  }
}

__global__ void ScaleKernel(float* x, float alpha, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    x[i] *= alpha;
  }
}

__device__ __forceinline__ uint16_t Bf16Bits(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

// dst[i] = bf16(src[i]), four elements per thread (one 16-byte load, one
// 8-byte store): src and dst 16- and 8-byte aligned, n a multiple of 4.
__global__ void ToBf16Flat4Kernel(uint2* dst, const float4* src, size_t quads) {
  for (size_t q = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; q < quads;
       q += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float4 v = src[q];
    dst[q] = make_uint2(Bf16Bits(v.x) | (static_cast<uint32_t>(Bf16Bits(v.y)) << 16),
                        Bf16Bits(v.z) | (static_cast<uint32_t>(Bf16Bits(v.w)) << 16));
  }
}

// Dense column-major dst (rows, cols) = bf16 of column-major src (rows,
// cols) with leading dimension ld, one element per thread.
__global__ void ToBf16Kernel(uint16_t* dst, const float* src, size_t rows, size_t total,
                             size_t ld) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t col = i / rows;
    dst[i] = Bf16Bits(src[col * ld + (i - col * rows)]);
  }
}

__global__ void BroadcastRowsKernel(float* out, const float* bias, size_t total, int OC) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = bias[i % OC];
  }
}

}  // namespace

cudaError_t BroadcastRows(float* out, const float* bias, int N, int OC, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(N) * OC;
  if (total == 0) return cudaGetLastError();
  BroadcastRowsKernel<<<BlocksFor(total, kThreads), kThreads, 0, stream>>>(out, bias, total, OC);
  return cudaGetLastError();
}

cudaError_t DropoutApply(float* out, const float* residual, const float* x, int B,
                         uint64_t per_sample, const SiteDropout& d, cudaStream_t stream) {
  const uint64_t total = static_cast<uint64_t>(B) * per_sample;
  if (total == 0) return cudaGetLastError();
  DropoutApplyKernel<<<BlocksFor((total + 3) / 4, kThreads), kThreads, 0, stream>>>(
      out, residual, x, total, per_sample, d);
  return cudaGetLastError();
}

cudaError_t GeluForward(float* out, const float* inp, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaGetLastError();
  GeluForwardKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(out, inp, n);
  return cudaGetLastError();
}

cudaError_t GeluBackward(float* dinp, const float* inp, const float* dout, size_t n,
                         cudaStream_t stream) {
  if (n == 0) return cudaGetLastError();
  GeluBackwardKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(dinp, inp, dout, n);
  return cudaGetLastError();
}

cudaError_t CrossEntropyForward(float* losses, float* lse, const float* logits,
                                const int32_t* targets, int N, int V, cudaStream_t stream) {
  if (N == 0) return cudaGetLastError();
  // 1024 threads for a GPT-2 vocabulary (about 50 logits per thread).
  const int threads = V >= 8192 ? 1024 : 256;
  CrossEntropyForwardKernel<<<N, threads, 0, stream>>>(losses, lse, logits, targets, V);
  return cudaGetLastError();
}

cudaError_t CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets, int N,
                                 int V, float scale, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(N) * V;
  if (total == 0) return cudaGetLastError();
  CrossEntropyBackwardKernel<<<BlocksFor(total, kThreads), kThreads, 0, stream>>>(
      logits, lse, targets, N, V, scale);
  return cudaGetLastError();
}

cudaError_t SumSquares(double* result, const float* x, size_t n, double* scratch,
                       cudaStream_t stream) {
  // A fixed grid (not one sized by the device), so every GPU adds in the same order.
  SumSquaresPartialKernel<<<kSumSquaresBlocks, kThreads, 0, stream>>>(scratch, x, n);
  SumSquaresFinalKernel<<<1, 32, 0, stream>>>(result, scratch, kSumSquaresBlocks);
  return cudaGetLastError();
}

cudaError_t AdamW(float* params, const float* grads, float* m, float* v, size_t n,
                  const AdamWConstants& k, cudaStream_t stream) {
  if (n == 0) return cudaGetLastError();
  AdamWKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(params, grads, m, v, n, k);
  return cudaGetLastError();
}

cudaError_t ToBf16(uint16_t* dst, const float* src, size_t rows, size_t cols, size_t ld,
                   cudaStream_t stream) {
  const size_t total = rows * cols;
  if (total == 0) return cudaGetLastError();
  const bool flat = ld == rows || cols == 1;
  if (flat && total % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(dst) % 8 == 0) {
    ToBf16Flat4Kernel<<<BlocksFor(total / 4, kThreads), kThreads, 0, stream>>>(
        reinterpret_cast<uint2*>(dst), reinterpret_cast<const float4*>(src), total / 4);
  } else {
    ToBf16Kernel<<<BlocksFor(total, kThreads), kThreads, 0, stream>>>(dst, src, rows, total,
                                                                      flat ? rows : ld);
  }
  return cudaGetLastError();
}

cudaError_t Scale(float* x, float alpha, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaGetLastError();
  ScaleKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(x, alpha, n);
  return cudaGetLastError();
}

}  // namespace dropk::cuda
