// Flash-style causal attention on the tensor cores (TF32 through WMMA): the
// T x T scores and probabilities live only in shared memory, one 64 x 64 tile
// at a time, so a layer keeps the log-sum-exp of each row for backward (with
// forward's output, which the model keeps anyway) instead of B*NH*T*T
// probabilities. Dropout is decided
// inside the kernels from the same Philox address as the CPU and the
// materialised kernels (element (h*T + t)*T + j of sample b at site
// kAttentionProbs); no mask is stored.
//
// Every kernel runs 4 warps per block over one (b, h) and one 64-row tile;
// each warp owns 16 rows of it. Sums have a fixed order (the tile loop, the
// WMMA products, a two-lane butterfly), and nothing uses atomics: dq is
// produced by its own kernel (one block per query tile) rather than added
// into from every key tile, so results are the same bits from run to run.
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "cuda/device_util.cuh"
#include "cuda/launch.h"

namespace dropk::cuda {
namespace {

using namespace nvcuda;  // NOLINT(build/namespaces): wmma's own spelling

constexpr int kTile = 64;      // queries per query tile, keys per key tile
constexpr int kWarps = 4;      // each owns kWarpRows rows of a tile
constexpr int kWarpRows = 16;  // one WMMA fragment tall
constexpr int kBlockThreads = kWarps * kWarpSize;
constexpr int kScoreLd = kTile + 8;  // padded row of a score tile (floats)

// Padded row of a (64, HS) head tile; a multiple of 8 floats keeps every
// fragment 32-byte aligned, as load_matrix_sync requires.
template <int HS>
__host__ __device__ constexpr int HeadLd() {
  return HS + 8;
}

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

template <typename Frag>
__device__ __forceinline__ void RoundToTf32(Frag& f) {
#pragma unroll
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

// acc[n] (16 x 16 each) += A (16 x K) * B (K x N), all in shared memory: A
// row-major at a (leading dimension lda); B row-major at b (ldb) when
// kBRowMajor, else B = M^T for a row-major M (N x K) at b (ldb). One warp.
template <int K, int N, bool kBRowMajor>
__device__ __forceinline__ void WarpProduct(FragAcc (&acc)[N / 16], const float* a, int lda,
                                            const float* b, int ldb) {
#pragma unroll
  for (int k = 0; k < K; k += 8) {
    FragA fa;
    wmma::load_matrix_sync(fa, a + k, lda);
    RoundToTf32(fa);
#pragma unroll
    for (int n = 0; n < N / 16; ++n) {
      if constexpr (kBRowMajor) {
        FragBRow fb;
        wmma::load_matrix_sync(fb, b + k * ldb + n * 16, ldb);
        RoundToTf32(fb);
        wmma::mma_sync(acc[n], fa, fb, acc[n]);
      } else {
        FragBCol fb;
        wmma::load_matrix_sync(fb, b + n * 16 * ldb + k, ldb);
        RoundToTf32(fb);
        wmma::mma_sync(acc[n], fa, fb, acc[n]);
      }
    }
  }
}

template <int N>
__device__ __forceinline__ void ZeroAll(FragAcc (&acc)[N]) {
#pragma unroll
  for (int n = 0; n < N; ++n) wmma::fill_fragment(acc[n], 0.0f);
}

// Stores acc (16 x 16N) row-major at dst (leading dimension ld).
template <int N>
__device__ __forceinline__ void StoreAll(float* dst, FragAcc (&acc)[N], int ld) {
#pragma unroll
  for (int n = 0; n < N; ++n) wmma::store_matrix_sync(dst + n * 16, acc[n], ld, wmma::mem_row_major);
}

// tile (64, HS) = rows t0.. of src (row t at src + t * row_stride), zero past
// T, read as Elem (float, or float4 where src and row_stride allow). The
// whole block (kBlockThreads threads). Every load of a thread is issued
// before its first store to shared memory, so a tile costs about one round
// trip to memory rather than one per element.
template <int HS, typename Elem>
__device__ __forceinline__ void LoadTileAs(float* tile, const float* src, size_t row_stride, int t0,
                                           int T) {
  constexpr int kWidth = sizeof(Elem) / sizeof(float);
  constexpr int kPerRow = HS / kWidth;
  constexpr int kPerThread = kTile * kPerRow / kBlockThreads;
  static_assert(kTile * kPerRow % kBlockThreads == 0, "whole elements per thread");
  Elem v[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * kBlockThreads;
    const int t = t0 + i / kPerRow;
    v[k] = t < T ? *reinterpret_cast<const Elem*>(src + static_cast<size_t>(t) * row_stride +
                                                   kWidth * (i % kPerRow))
                 : Elem{};
  }
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * kBlockThreads;
    *reinterpret_cast<Elem*>(tile + (i / kPerRow) * HeadLd<HS>() + kWidth * (i % kPerRow)) = v[k];
  }
}

// LoadTileAs with float4s when vec (Float4Rows of the source; uniform over
// the block), else floats.
template <int HS>
__device__ __forceinline__ void LoadTile(float* tile, const float* src, size_t row_stride, int t0,
                                         int T, bool vec) {
  if (vec) {
    LoadTileAs<HS, float4>(tile, src, row_stride, t0, T);
  } else {
    LoadTileAs<HS, float>(tile, src, row_stride, t0, T);
  }
}

// Where a lane that owns half a score row (row lane / 2 of its warp's 16,
// half lane % 2) starts its walk over the row's 32 columns: with rows
// kScoreLd = 72 floats apart (8 banks) and halves 32 floats apart (0 banks),
// column (i + rotation) % 32 of the 32 lanes falls in 32 different banks at
// every step i. Any rotation gives the same set of elements; this one makes
// the walk free of bank conflicts.
__device__ __forceinline__ int RotationOf(int lane) { return ((lane / 2) >> 2) + 4 * (lane % 2); }

// Whether rows of `row_stride` floats from `base` can be read as float4s.
__device__ __forceinline__ bool Float4Rows(const float* base, size_t row_stride) {
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && row_stride % 4 == 0;
}

// Row statistics (log-sum-exp, delta) of rows t0.. of one (b, h), 0 past T.
__device__ __forceinline__ void LoadRowValues(float* dst, const float* src, int t0, int T) {
  for (int i = threadIdx.x; i < kTile; i += blockDim.x) dst[i] = t0 + i < T ? src[t0 + i] : 0.0f;
}

// Bit i set when element first + i (i < count <= 32) of stream `stream` is
// kept: DropoutKeep's decision, one Philox call per block of four.
__device__ __forceinline__ uint32_t KeepBits(const SiteDropout& d, uint32_t stream,
                                             uint64_t first, int count) {
  uint32_t bits = 0;
  const uint64_t end = first + static_cast<uint64_t>(count);
  for (uint64_t block = first >> 2; (block << 2) < end; ++block) {
    const Philox4x32Block r =
        Philox(d.plan.seed, static_cast<uint32_t>(block), stream, d.site, d.plan.step);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint64_t e = (block << 2) + w;
      if (e >= first && e < end && r.v[w] < d.threshold) bits |= 1u << (e - first);
    }
  }
  return bits;
}

template <int HS>
constexpr size_t ForwardSharedBytes() {
  return sizeof(float) * (4 * kTile * HeadLd<HS>() + kTile * kScoreLd);
}
template <int HS>
constexpr size_t BackwardSharedBytes() {
  return sizeof(float) * (4 * kTile * HeadLd<HS>() + 2 * kTile * kScoreLd + 2 * kTile);
}

// Grid (B*NH, query tiles). out (B,T,C) for rows of this tile, lse
// (B*NH*T) their log-sum-exp of the scaled scores.
template <int HS>
__global__ void __launch_bounds__(kBlockThreads)
    FlashForwardKernel(float* out, float* lse, const float* qkv, int T, int C, int NH, float scale,
                       SiteDropout d) {
  constexpr int LD = HeadLd<HS>();
  extern __shared__ __align__(128) float smem[];
  float* qs = smem;
  float* ks = qs + kTile * LD;
  float* vs = ks + kTile * LD;
  float* os = vs + kTile * LD;  // the running, unnormalised output
  float* ss = os + kTile * LD;  // scores, then dropped probabilities
  const int q_tiles = (T + kTile - 1) / kTile;
  const int qt = q_tiles - 1 - static_cast<int>(blockIdx.y);  // longest rows first
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int q0 = qt * kTile;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const float* head = qkv + static_cast<size_t>(b) * T * row_stride + static_cast<size_t>(h) * HS;
  const bool vec = Float4Rows(qkv, row_stride);
  LoadTile<HS>(qs, head, row_stride, q0, T, vec);
  for (int i = threadIdx.x; i < kTile * LD; i += blockDim.x) os[i] = 0.0f;

  // This lane's share of the elementwise work: half a row (32 columns),
  // walked from column RotationOf(lane) on so that the warp's 32 lanes read
  // 32 different shared-memory banks.
  const int row = warp * kWarpRows + lane / 2, half = lane % 2;
  const int rot = RotationOf(lane);
  const int tq = q0 + row;
  const bool drop = d.p > 0.0f;
  const DropoutAddress address = AttentionRowAddress(d, b, h, tq < T ? tq : 0, NH, T);
  float m = -INFINITY, l = 0.0f;
  float* warp_scores = ss + warp * kWarpRows * kScoreLd;
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();  // every warp is done with the previous k and v
    LoadTile<HS>(ks, head + C, row_stride, k0, T, vec);
    LoadTile<HS>(vs, head + 2 * C, row_stride, k0, T, vec);
    __syncthreads();
    {
      FragAcc acc[kTile / 16];
      ZeroAll(acc);
      WarpProduct<HS, kTile, false>(acc, qs + warp * kWarpRows * LD, LD, ks, LD);
      StoreAll(warp_scores, acc, kScoreLd);
    }
    __syncwarp();
    float* x = ss + row * kScoreLd + half * 32;
    const int c0 = k0 + half * 32;  // the key of x[0]
    // Keys past tq (and rows past T) are masked.
    const int valid = tq < T ? min(32, max(0, tq - c0 + 1)) : 0;
    float tile_max = -INFINITY;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int c = (i + rot) & 31;
      if (c < valid) tile_max = fmaxf(tile_max, x[c] * scale);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    // m == -inf: nothing seen yet (l and the output are 0).
    const float alpha = m == -INFINITY ? 0.0f : expf(m - m_new);
    const uint32_t keep = drop && valid > 0 ? KeepBits(d, address.stream, address.element + c0, valid)
                                            : 0xffffffffu;
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int c = (i + rot) & 31;
      const float p = c < valid ? expf(x[c] * scale - m_new) : 0.0f;
      sum += p;
      x[c] = drop ? ((keep >> c) & 1u ? p * d.keep_scale : 0.0f) : p;
    }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    float* o_row = os + row * LD + half * (HS / 2);
#pragma unroll
    for (int i = 0; i < HS / 2; ++i) o_row[(i + rot) & (HS / 2 - 1)] *= alpha;
    __syncwarp();
    {
      FragAcc acc[HS / 16];
#pragma unroll
      for (int n = 0; n < HS / 16; ++n) {
        wmma::load_matrix_sync(acc[n], os + warp * kWarpRows * LD + n * 16, LD,
                               wmma::mem_row_major);
      }
      WarpProduct<kTile, HS, true>(acc, warp_scores, kScoreLd, vs, LD);
      StoreAll(os + warp * kWarpRows * LD, acc, LD);
    }
    __syncwarp();
  }
  if (tq < T) {
    const float inv = 1.0f / l;
    const float* o_row = os + row * LD + half * (HS / 2);
    const size_t at = (static_cast<size_t>(b) * T + tq) * C + static_cast<size_t>(h) * HS +
                      half * (HS / 2);
    for (int i = 0; i < HS / 2; ++i) {
      const int c = (i + rot) & (HS / 2 - 1);
      out[at + c] = o_row[c] * inv;
    }
    if (half == 0) lse[static_cast<size_t>(bh) * T + tq] = m + logf(l);
  }
}

// delta (B*NH*T) = the dot product of each row's output gradient with its
// output, per head: one warp per (b, h, t), lanes over the head in order.
__global__ void FlashDeltaKernel(float* delta, const float* dout, const float* o, int B, int T,
                                 int C, int NH) {
  const int hs = C / NH;
  const size_t rows = static_cast<size_t>(B) * NH * T;
  const size_t warps = static_cast<size_t>(gridDim.x) * blockDim.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  for (size_t row = (blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x) / kWarpSize;
       row < rows; row += warps) {  // uniform per warp
    const int t = static_cast<int>(row % T);
    const size_t bh = row / T;
    const int h = static_cast<int>(bh % NH);
    const size_t b = bh / NH;
    const size_t at = (b * T + t) * C + static_cast<size_t>(h) * hs;
    float sum = 0.0f;
    for (int c = lane; c < hs; c += kWarpSize) sum += dout[at + c] * o[at + c];
    sum = WarpSum(sum);
    if (lane == 0) delta[row] = sum;
  }
}

// Both backward kernels' shared memory, carved from smem: the q, dO, k and v
// tiles (64, HS); two score tiles, 16 rows per warp (a: scores, then
// gradients; b: probabilities); the 64 query rows' lse and delta.
template <int HS>
struct BackwardTiles {
  float *q, *dout, *k, *v, *a, *b, *lse, *delta;
  __device__ explicit BackwardTiles(float* smem) {
    constexpr int LD = HeadLd<HS>();
    q = smem;
    dout = q + kTile * LD;
    k = dout + kTile * LD;
    v = k + kTile * LD;
    a = v + kTile * LD;
    b = a + kTile * kScoreLd;
    lse = b + kTile * kScoreLd;
    delta = lse + kTile;
  }
};

// Where this block's (b, h) reads: head h's columns of sample b in qkv
// (B,T,3C; q at 0, k at C, v at 2C) and in dout (B,T,C).
struct BlockHead {
  int b, h, bh;
  size_t row_stride;  // of qkv
  const float* qkv;
  const float* dout;
  bool vec_qkv, vec_dout;  // rows readable as float4s (LoadTile)
  __device__ BlockHead(const float* qkv_all, const float* dout_all, int T, int C, int NH, int hs)
      : b(static_cast<int>(blockIdx.x) / NH),
        h(static_cast<int>(blockIdx.x) % NH),
        bh(static_cast<int>(blockIdx.x)),
        row_stride(3 * static_cast<size_t>(C)),
        qkv(qkv_all + static_cast<size_t>(b) * T * row_stride + static_cast<size_t>(h) * hs),
        dout(dout_all + static_cast<size_t>(b) * T * C + static_cast<size_t>(h) * hs),
        vec_qkv(Float4Rows(qkv_all, row_stride)),
        vec_dout(Float4Rows(dout_all, static_cast<size_t>(C))) {}
};

// Grid (B*NH, key tiles): dk and dv of this key tile, summed over the query
// tiles at or after it in order. Each lane takes two query columns (lane,
// lane + 32) of its warp's 16 keys: a query's keys are consecutive Philox
// addresses.
template <int HS>
__global__ void __launch_bounds__(kBlockThreads)
    FlashBackwardKvKernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                          const float* delta, int T, int C, int NH, float scale, SiteDropout d) {
  constexpr int LD = HeadLd<HS>();
  extern __shared__ __align__(128) float smem[];
  const BackwardTiles<HS> tiles(smem);
  const BlockHead block(qkv, dout, T, C, NH, HS);
  const int b = block.b, h = block.h, bh = block.bh;
  const int q_tiles = (T + kTile - 1) / kTile;
  const int kt = blockIdx.y;  // the first key tiles have the most query tiles
  const int k0 = kt * kTile;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  LoadTile<HS>(tiles.k, block.qkv + C, block.row_stride, k0, T, block.vec_qkv);
  LoadTile<HS>(tiles.v, block.qkv + 2 * C, block.row_stride, k0, T, block.vec_qkv);
  float* warp_a = tiles.a + warp * kWarpRows * kScoreLd;
  float* warp_b = tiles.b + warp * kWarpRows * kScoreLd;
  const int key0 = k0 + warp * kWarpRows;  // this warp's first key
  const bool drop = d.p > 0.0f;
  FragAcc dk[HS / 16], dv[HS / 16];
  ZeroAll(dk);
  ZeroAll(dv);
  for (int qt = kt; qt < q_tiles; ++qt) {
    const int q0 = qt * kTile;
    __syncthreads();
    LoadTile<HS>(tiles.q, block.qkv, block.row_stride, q0, T, block.vec_qkv);
    LoadTile<HS>(tiles.dout, block.dout, C, q0, T, block.vec_dout);
    LoadRowValues(tiles.lse, lse + static_cast<size_t>(bh) * T, q0, T);
    LoadRowValues(tiles.delta, delta + static_cast<size_t>(bh) * T, q0, T);
    __syncthreads();
    {
      FragAcc acc[kTile / 16];  // S^T (16 keys x 64 queries)
      ZeroAll(acc);
      WarpProduct<HS, kTile, false>(acc, tiles.k + warp * kWarpRows * LD, LD, tiles.q, LD);
      StoreAll(warp_a, acc, kScoreLd);
    }
    __syncwarp();
    uint32_t keep[2] = {0xffffffffu, 0xffffffffu};
    for (int j = 0; j < 2; ++j) {
      const int col = lane + 32 * j, tq = q0 + col;
      // Keys key0 .. key0 + valid - 1 are at or before tq.
      const int valid = tq < T ? min(kWarpRows, max(0, tq - key0 + 1)) : 0;
      if (drop && valid > 0) {
        const DropoutAddress a = AttentionRowAddress(d, b, h, tq, NH, T);
        keep[j] = KeepBits(d, a.stream, a.element + key0, valid);
      }
      for (int r = 0; r < kWarpRows; ++r) {
        const float p =
            r < valid ? expf(warp_a[r * kScoreLd + col] * scale - tiles.lse[col]) : 0.0f;
        warp_b[r * kScoreLd + col] = p;
        warp_a[r * kScoreLd + col] = drop ? ((keep[j] >> r) & 1u ? p * d.keep_scale : 0.0f) : p;
      }
    }
    __syncwarp();
    WarpProduct<kTile, HS, true>(dv, warp_a, kScoreLd, tiles.dout, LD);  // dv += W^T dO
    __syncwarp();
    {
      FragAcc acc[kTile / 16];  // d(W)^T = V dO^T (16 keys x 64 queries)
      ZeroAll(acc);
      WarpProduct<HS, kTile, false>(acc, tiles.v + warp * kWarpRows * LD, LD, tiles.dout, LD);
      StoreAll(warp_a, acc, kScoreLd);
    }
    __syncwarp();
    for (int j = 0; j < 2; ++j) {
      const int col = lane + 32 * j;
      for (int r = 0; r < kWarpRows; ++r) {
        float dp = warp_a[r * kScoreLd + col];
        if (drop) dp = (keep[j] >> r) & 1u ? dp * d.keep_scale : 0.0f;
        warp_a[r * kScoreLd + col] = warp_b[r * kScoreLd + col] * (dp - tiles.delta[col]);
      }
    }
    __syncwarp();
    WarpProduct<kTile, HS, true>(dk, warp_a, kScoreLd, tiles.q, LD);  // dk += dS^T Q
    __syncwarp();
  }
  // Through shared memory to the (B,T,3C) rows: dk (times the score scale)
  // into the k part, dv into the v part.
  for (int part = 1; part <= 2; ++part) {
    if (part == 1) {
      StoreAll(warp_a, dk, kScoreLd);
    } else {
      StoreAll(warp_a, dv, kScoreLd);
    }
    __syncwarp();
    const float factor = part == 1 ? scale : 1.0f;
    for (int i = lane; i < kWarpRows * HS; i += kWarpSize) {
      const int r = i / HS, c = i % HS, tk = key0 + r;
      if (tk < T) {
        dqkv[(static_cast<size_t>(b) * T + tk) * block.row_stride + part * C +
             static_cast<size_t>(h) * HS + c] = warp_a[r * kScoreLd + c] * factor;
      }
    }
    __syncwarp();
  }
}

// Grid (B*NH, query tiles): dq of this query tile, summed over the key tiles
// at or before it in order. Lanes take half rows, as in forward.
template <int HS>
__global__ void __launch_bounds__(kBlockThreads)
    FlashBackwardQKernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                         const float* delta, int T, int C, int NH, float scale, SiteDropout d) {
  constexpr int LD = HeadLd<HS>();
  extern __shared__ __align__(128) float smem[];
  const BackwardTiles<HS> tiles(smem);
  const BlockHead block(qkv, dout, T, C, NH, HS);
  const int b = block.b, h = block.h, bh = block.bh;
  const int q_tiles = (T + kTile - 1) / kTile;
  const int qt = q_tiles - 1 - static_cast<int>(blockIdx.y);
  const int q0 = qt * kTile;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  LoadTile<HS>(tiles.q, block.qkv, block.row_stride, q0, T, block.vec_qkv);
  LoadTile<HS>(tiles.dout, block.dout, C, q0, T, block.vec_dout);
  LoadRowValues(tiles.lse, lse + static_cast<size_t>(bh) * T, q0, T);
  LoadRowValues(tiles.delta, delta + static_cast<size_t>(bh) * T, q0, T);
  const int row = warp * kWarpRows + lane / 2, half = lane % 2;
  const int rot = RotationOf(lane);
  const int tq = q0 + row;
  const bool drop = d.p > 0.0f;
  const DropoutAddress address = AttentionRowAddress(d, b, h, tq < T ? tq : 0, NH, T);
  float* warp_a = tiles.a + warp * kWarpRows * kScoreLd;
  float* warp_b = tiles.b + warp * kWarpRows * kScoreLd;
  FragAcc dq[HS / 16];
  ZeroAll(dq);
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();
    LoadTile<HS>(tiles.k, block.qkv + C, block.row_stride, k0, T, block.vec_qkv);
    LoadTile<HS>(tiles.v, block.qkv + 2 * C, block.row_stride, k0, T, block.vec_qkv);
    __syncthreads();
    {
      FragAcc acc[kTile / 16];  // S (16 queries x 64 keys)
      ZeroAll(acc);
      WarpProduct<HS, kTile, false>(acc, tiles.q + warp * kWarpRows * LD, LD, tiles.k, LD);
      StoreAll(warp_a, acc, kScoreLd);
    }
    __syncwarp();
    const int c0 = k0 + half * 32;
    const int valid = tq < T ? min(32, max(0, tq - c0 + 1)) : 0;
    const uint32_t keep = drop && valid > 0 ? KeepBits(d, address.stream, address.element + c0, valid)
                                            : 0xffffffffu;
    float* x = warp_a + (lane / 2) * kScoreLd + half * 32;
    float* p = warp_b + (lane / 2) * kScoreLd + half * 32;
    const float row_lse = tiles.lse[row], row_delta = tiles.delta[row];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int c = (i + rot) & 31;
      p[c] = c < valid ? expf(x[c] * scale - row_lse) : 0.0f;
    }
    __syncwarp();
    {
      FragAcc acc[kTile / 16];  // d(W) = dO V^T (16 queries x 64 keys)
      ZeroAll(acc);
      WarpProduct<HS, kTile, false>(acc, tiles.dout + warp * kWarpRows * LD, LD, tiles.v, LD);
      StoreAll(warp_a, acc, kScoreLd);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int c = (i + rot) & 31;
      float dp = x[c];
      if (drop) dp = (keep >> c) & 1u ? dp * d.keep_scale : 0.0f;
      x[c] = p[c] * (dp - row_delta);
    }
    __syncwarp();
    WarpProduct<kTile, HS, true>(dq, warp_a, kScoreLd, tiles.k, LD);  // dq += dS K
    __syncwarp();
  }
  StoreAll(warp_a, dq, kScoreLd);
  __syncwarp();
  for (int i = lane; i < kWarpRows * HS; i += kWarpSize) {
    const int r = i / HS, c = i % HS, t = q0 + warp * kWarpRows + r;
    if (t < T) {
      dqkv[(static_cast<size_t>(b) * T + t) * block.row_stride + static_cast<size_t>(h) * HS + c] =
          warp_a[r * kScoreLd + c] * scale;
    }
  }
}

template <int HS>
cudaError_t Forward(float* out, float* saved, const float* qkv, int B, int T, int C, int NH,
                    const SiteDropout& d, cudaStream_t stream) {
  constexpr size_t shared = ForwardSharedBytes<HS>();
  cudaError_t rc = cudaFuncSetAttribute(FlashForwardKernel<HS>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
  if (rc != cudaSuccess) return rc;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const dim3 grid(B * NH, (T + kTile - 1) / kTile);
  FlashForwardKernel<HS>
      <<<grid, kBlockThreads, shared, stream>>>(out, saved, qkv, T, C, NH, scale, d);
  return cudaGetLastError();
}

template <int HS>
cudaError_t Backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                     const float* saved, float* delta, int B, int T, int C, int NH,
                     const SiteDropout& d, cudaStream_t stream) {
  constexpr size_t shared = BackwardSharedBytes<HS>();
  cudaError_t rc = cudaFuncSetAttribute(FlashBackwardKvKernel<HS>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
  if (rc == cudaSuccess) {
    rc = cudaFuncSetAttribute(FlashBackwardQKernel<HS>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
  }
  if (rc != cudaSuccess) return rc;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const float* lse = saved;
  rc = FlashAttentionDelta(delta, dout, out, B, T, C, NH, stream);
  if (rc != cudaSuccess) return rc;
  const dim3 grid(B * NH, (T + kTile - 1) / kTile);
  FlashBackwardKvKernel<HS>
      <<<grid, kBlockThreads, shared, stream>>>(dqkv, dout, qkv, lse, delta, T, C, NH, scale, d);
  FlashBackwardQKernel<HS>
      <<<grid, kBlockThreads, shared, stream>>>(dqkv, dout, qkv, lse, delta, T, C, NH, scale, d);
  return cudaGetLastError();
}

}  // namespace

bool FlashAttentionSupports(int hs) { return hs == 16 || hs == 32 || hs == 64; }

size_t FlashAttentionSharedBytes(int hs) {
  switch (hs) {
    case 16: return BackwardSharedBytes<16>();
    case 32: return BackwardSharedBytes<32>();
    case 64: return BackwardSharedBytes<64>();
  }
  return 0;
}

cudaError_t FlashAttentionDelta(float* delta, const float* dout, const float* out, int B, int T,
                                int C, int NH, cudaStream_t stream) {
  const size_t rows = static_cast<size_t>(B) * NH * T;
  FlashDeltaKernel<<<BlocksFor(rows * kWarpSize, kThreads), kThreads, 0, stream>>>(
      delta, dout, out, B, T, C, NH);
  return cudaGetLastError();
}

size_t FlashAttentionSavedFloats(int B, int T, int NH) { return static_cast<size_t>(B) * NH * T; }

cudaError_t FlashAttentionForward(float* out, float* saved, const float* qkv, int B, int T, int C,
                                  int NH, const SiteDropout& d, cudaStream_t stream) {
  if (static_cast<size_t>(B) * T == 0) return cudaGetLastError();
  return WithFlashHeadSize(C / NH, [&](auto hs) {
    return Forward<decltype(hs)::value>(out, saved, qkv, B, T, C, NH, d, stream);
  });
}

cudaError_t FlashAttentionBackward(float* dqkv, const float* dout, const float* qkv,
                                   const float* out, const float* saved, float* delta, int B,
                                   int T, int C, int NH, const SiteDropout& d,
                                   cudaStream_t stream) {
  if (static_cast<size_t>(B) * T == 0) return cudaGetLastError();
  return WithFlashHeadSize(C / NH, [&](auto hs) {
    return Backward<decltype(hs)::value>(dqkv, dout, qkv, out, saved, delta, B, T, C, NH, d,
                                         stream);
  });
}

}  // namespace dropk::cuda
