// Row-wise CUDA kernels: embedding forward/backward, LayerNorm forward/
// backward, and deterministic column sums (bias, LayerNorm weight and
// position-embedding gradients). Column sums run in two stages, per-block
// partial sums over fixed row ranges, then the partials added in order, so
// they never need floating-point atomics.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <cub/device/device_radix_sort.cuh>

#include "cuda/device_util.cuh"
#include "cuda/launch.h"
#include "kernel_math.h"

namespace dropk::cuda {
namespace {

constexpr int kColumnTile = 32;   // columns per column-sum block (one warp wide)
constexpr int kColumnRows = 8;    // row lanes per column-sum block
constexpr int kRowsPerPart = 64;  // rows per partial sum, at least
constexpr int kMaxParts = 128;    // partial sums per column, at most (kCudaColumnSumMaxParts)
constexpr int kWteChannels = 8;   // channels per lane in the token-gradient pass

// How many row ranges the column sums of N rows use: a function of N only.
int ColumnParts(int N) {
  return std::max(1, std::min(kMaxParts, (N + kRowsPerPart - 1) / kRowsPerPart));
}

__global__ void EmbeddingForwardKernel(float* out, const int32_t* tokens, const float* wte,
                                       const float* wpe, int B, int T, int C, SiteDropout d) {
  const uint64_t per_sample = static_cast<uint64_t>(T) * C;
  const uint64_t total = static_cast<uint64_t>(B) * per_sample;
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
        const uint64_t bt = f / C;
        const int c = static_cast<int>(f - bt * C);
        const int t = static_cast<int>(bt % T);
        const float v =
            wte[static_cast<size_t>(tokens[bt]) * C + c] + wpe[static_cast<size_t>(t) * C + c];
        out[f] = v * s[w];
      }
    }
  }
}

// dwpe (T,C) += sum over b of dout (B,T,C): one thread per (t, c), b in order.
__global__ void PositionGradKernel(float* dwpe, const float* dout, int B, int T, int C) {
  const size_t total = static_cast<size_t>(T) * C;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float acc = dwpe[i];
    for (int b = 0; b < B; ++b) acc += dout[static_cast<size_t>(b) * total + i];
    dwpe[i] = acc;
  }
}

// Fills positions with 0, 1, ..., n-1: the values the token sort carries.
__global__ void IotaKernel(int32_t* positions, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    positions[i] = i;
  }
}

// dwte rows, from the positions sorted by token (a stable sort, so each
// token's positions are in increasing order): one warp per sorted index i.
// Only the warp at the start of a token's run works: it adds the dout rows of
// the run, in position order, onto dwte's row. One writer per row and a fixed
// order: no atomics, and the CPU's exact sums. Each dout row is read once.
__global__ void TokenGradKernel(float* dwte, const float* dout, const int32_t* sorted_tokens,
                                const int32_t* sorted_positions, int N, int C) {
  const int warps_per_block = blockDim.x / kWarpSize;
  const int i = blockIdx.x * warps_per_block + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (i >= N) return;  // uniform per warp
  const int32_t token = sorted_tokens[i];
  if (i > 0 && sorted_tokens[i - 1] == token) return;  // not the run's first
  int end = i + 1;
  while (end < N && sorted_tokens[end] == token) ++end;
  float* row = dwte + static_cast<size_t>(token) * C;
  for (int c0 = 0; c0 < C; c0 += kWarpSize * kWteChannels) {
    float acc[kWteChannels];
#pragma unroll
    for (int k = 0; k < kWteChannels; ++k) {
      const int c = c0 + k * kWarpSize + lane;
      acc[k] = c < C ? row[c] : 0.0f;
    }
    for (int j = i; j < end; ++j) {
      const float* src = dout + static_cast<size_t>(sorted_positions[j]) * C;
#pragma unroll
      for (int k = 0; k < kWteChannels; ++k) {
        const int c = c0 + k * kWarpSize + lane;
        if (c < C) acc[k] += src[c];
      }
    }
#pragma unroll
    for (int k = 0; k < kWteChannels; ++k) {
      const int c = c0 + k * kWarpSize + lane;
      if (c < C) row[c] = acc[k];
    }
  }
}

// The token sort's scratch: CUB's workspace, then the sorted tokens, the
// positions and the sorted positions, each 256-byte aligned.
struct TokenSortScratch {
  void* workspace;
  size_t workspace_bytes;
  int32_t* sorted_tokens;
  int32_t* positions;
  int32_t* sorted_positions;
  size_t total_bytes;
};

size_t AlignUp(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Carves `base` (null: only sizes it) for N positions.
cudaError_t CarveTokenSortScratch(void* base, int N, TokenSortScratch* out) {
  size_t workspace = 0;
  const cudaError_t rc = cub::DeviceRadixSort::SortPairs(
      nullptr, workspace, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), N);
  if (rc != cudaSuccess) return rc;
  char* p = static_cast<char*>(base);
  const size_t array = AlignUp(sizeof(int32_t) * static_cast<size_t>(N));
  const size_t workspace_aligned = AlignUp(workspace);
  out->workspace = p;
  out->workspace_bytes = workspace;
  out->sorted_tokens = reinterpret_cast<int32_t*>(p + workspace_aligned);
  out->positions = reinterpret_cast<int32_t*>(p + workspace_aligned + array);
  out->sorted_positions = reinterpret_cast<int32_t*>(p + workspace_aligned + 2 * array);
  out->total_bytes = workspace_aligned + 3 * array;
  return cudaSuccess;
}

// One warp per row.
__global__ void LayerNormForwardKernel(float* out, float* mean, float* rstd, const float* inp,
                                       const float* w, const float* b, int N, int C) {
  const int warps_per_block = blockDim.x / kWarpSize;
  const int n = blockIdx.x * warps_per_block + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (n >= N) return;
  const float* x = inp + static_cast<size_t>(n) * C;
  float sum = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) sum += x[c];
  const float m = WarpSum(sum) / C;
  float var = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float dev = x[c] - m;
    var += dev * dev;
  }
  const float s = LayerNormRstd(WarpSum(var), C);
  float* o = out + static_cast<size_t>(n) * C;
  for (int c = lane; c < C; c += kWarpSize) o[c] = LayerNormApply(x[c], m, s, w[c], b[c]);
  if (lane == 0) {
    mean[n] = m;
    rstd[n] = s;
  }
}

// Input gradient, one warp per row; accumulates into dinp.
__global__ void LayerNormInputGradKernel(float* dinp, const float* dout, const float* inp,
                                         const float* w, const float* mean, const float* rstd,
                                         int N, int C) {
  const int warps_per_block = blockDim.x / kWarpSize;
  const int n = blockIdx.x * warps_per_block + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (n >= N) return;
  const float* x = inp + static_cast<size_t>(n) * C;
  const float* dy = dout + static_cast<size_t>(n) * C;
  const float m = mean[n], s = rstd[n];
  float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float norm = (x[c] - m) * s;
    const float dnorm = w[c] * dy[c];
    dnorm_mean += dnorm;
    dnorm_norm_mean += dnorm * norm;
  }
  dnorm_mean = WarpSum(dnorm_mean) / C;
  dnorm_norm_mean = WarpSum(dnorm_norm_mean) / C;
  float* dx = dinp + static_cast<size_t>(n) * C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float norm = (x[c] - m) * s;
    const float dnorm = w[c] * dy[c];
    dx[c] += LayerNormInputGrad(dnorm, norm, dnorm_mean, dnorm_norm_mean, s);
  }
}

// Stage 1 of the column sums: block (kColumnTile, kColumnRows) sums columns
// [blockIdx.x * 32, +32) over row range blockIdx.y. With LayerNorm inputs
// (mean != null) it sums (x - mean) * rstd * dy into part0 and dy into part1;
// else x (here `dy`) into part0. Partial p of column c is at [p * C + c].
__global__ void ColumnPartialKernel(float* part0, float* part1, const float* dy, const float* x,
                                    const float* mean, const float* rstd, int N, int C) {
  __shared__ float sum0[kColumnRows][kColumnTile];
  __shared__ float sum1[kColumnRows][kColumnTile];
  const int c = blockIdx.x * kColumnTile + threadIdx.x;
  const int parts = gridDim.y;
  const int rows_per_part = (N + parts - 1) / parts;
  const int r0 = blockIdx.y * rows_per_part;
  const int r1 = min(N, r0 + rows_per_part);
  float a0 = 0.0f, a1 = 0.0f;
  if (c < C) {
    for (int r = r0 + threadIdx.y; r < r1; r += kColumnRows) {
      const size_t i = static_cast<size_t>(r) * C + c;
      if (mean != nullptr) {
        a0 += (x[i] - mean[r]) * rstd[r] * dy[i];
        a1 += dy[i];
      } else {
        a0 += dy[i];
      }
    }
  }
  sum0[threadIdx.y][threadIdx.x] = a0;
  sum1[threadIdx.y][threadIdx.x] = a1;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t0 = 0.0f, t1 = 0.0f;
    for (int y = 0; y < kColumnRows; ++y) {
      t0 += sum0[y][threadIdx.x];
      t1 += sum1[y][threadIdx.x];
    }
    part0[static_cast<size_t>(blockIdx.y) * C + c] = t0;
    if (part1 != nullptr) part1[static_cast<size_t>(blockIdx.y) * C + c] = t1;
  }
}

// Stage 2: out[c] += the partials of column c, in order.
__global__ void ColumnFinalKernel(float* out0, float* out1, const float* part0, const float* part1,
                                  int parts, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float t0 = 0.0f, t1 = 0.0f;
  for (int p = 0; p < parts; ++p) {
    t0 += part0[static_cast<size_t>(p) * C + c];
    if (part1 != nullptr) t1 += part1[static_cast<size_t>(p) * C + c];
  }
  out0[c] += t0;
  if (out1 != nullptr) out1[c] += t1;
}

cudaError_t LaunchColumnSums(float* out0, float* out1, const float* dy, const float* x,
                             const float* mean, const float* rstd, int N, int C, float* scratch,
                             cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaGetLastError();
  const int parts = ColumnParts(N);
  float* part0 = scratch;
  float* part1 = out1 != nullptr ? scratch + static_cast<size_t>(parts) * C : nullptr;
  const dim3 grid((C + kColumnTile - 1) / kColumnTile, parts);
  const dim3 block(kColumnTile, kColumnRows);
  ColumnPartialKernel<<<grid, block, 0, stream>>>(part0, part1, dy, x, mean, rstd, N, C);
  ColumnFinalKernel<<<(C + kThreads - 1) / kThreads, kThreads, 0, stream>>>(out0, out1, part0,
                                                                            part1, parts, C);
  return cudaGetLastError();
}

constexpr int kRowWarps = 8;  // rows (one warp each) per block of the row kernels

unsigned RowBlocks(int N) { return static_cast<unsigned>((N + kRowWarps - 1) / kRowWarps); }

}  // namespace

size_t ColumnSumScratchFloats(int N, int C) {
  return static_cast<size_t>(ColumnParts(N)) * static_cast<size_t>(C);
}

cudaError_t EmbeddingForward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                             int B, int T, int C, const SiteDropout& d, cudaStream_t stream) {
  const uint64_t total = static_cast<uint64_t>(B) * T * C;
  if (total == 0) return cudaGetLastError();
  EmbeddingForwardKernel<<<BlocksFor((total + 3) / 4, kThreads), kThreads, 0, stream>>>(
      out, tokens, wte, wpe, B, T, C, d);
  return cudaGetLastError();
}

size_t EmbeddingBackwardScratchBytes(int N) {
  TokenSortScratch sizes{};
  if (N <= 0 || CarveTokenSortScratch(nullptr, N, &sizes) != cudaSuccess) return 0;
  return sizes.total_bytes;
}

cudaError_t EmbeddingBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                              int B, int T, int C, void* scratch, cudaStream_t stream) {
  const int N = B * T;
  if (N == 0 || C == 0) return cudaGetLastError();
  PositionGradKernel<<<BlocksFor(static_cast<size_t>(T) * C, kThreads), kThreads, 0, stream>>>(
      dwpe, dout, B, T, C);
  TokenSortScratch sort{};
  cudaError_t rc = CarveTokenSortScratch(scratch, N, &sort);
  if (rc != cudaSuccess) return rc;
  IotaKernel<<<BlocksFor(N, kThreads), kThreads, 0, stream>>>(sort.positions, N);
  // Radix sort is stable: positions of one token stay in increasing order.
  rc = cub::DeviceRadixSort::SortPairs(sort.workspace, sort.workspace_bytes, tokens,
                                       sort.sorted_tokens, sort.positions, sort.sorted_positions, N,
                                       0, static_cast<int>(sizeof(int32_t) * 8), stream);
  if (rc != cudaSuccess) return rc;
  TokenGradKernel<<<RowBlocks(N), kRowWarps * kWarpSize, 0, stream>>>(
      dwte, dout, sort.sorted_tokens, sort.sorted_positions, N, C);
  return cudaGetLastError();
}

cudaError_t LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                             const float* b, int N, int C, cudaStream_t stream) {
  if (N == 0) return cudaGetLastError();
  LayerNormForwardKernel<<<RowBlocks(N), kRowWarps * kWarpSize, 0, stream>>>(out, mean, rstd, inp,
                                                                             w, b, N, C);
  return cudaGetLastError();
}

cudaError_t LayerNormBackward(float* dinp, float* dw, float* db, const float* dout,
                              const float* inp, const float* w, const float* mean,
                              const float* rstd, int N, int C, float* scratch,
                              cudaStream_t stream) {
  if (N == 0) return cudaGetLastError();
  LayerNormInputGradKernel<<<RowBlocks(N), kRowWarps * kWarpSize, 0, stream>>>(dinp, dout, inp, w,
                                                                               mean, rstd, N, C);
  const cudaError_t rc = cudaGetLastError();
  if (rc != cudaSuccess) return rc;
  return LaunchColumnSums(dw, db, dout, inp, mean, rstd, N, C, scratch, stream);
}

cudaError_t ColumnSums(float* dsum, const float* x, int N, int C, float* scratch,
                       cudaStream_t stream) {
  return LaunchColumnSums(dsum, nullptr, x, nullptr, nullptr, nullptr, N, C, scratch, stream);
}

}  // namespace dropk::cuda
