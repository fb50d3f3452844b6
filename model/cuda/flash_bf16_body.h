// The bodies of the bf16 tensor-core flash attention kernels (FA2's scheme):
// each warp keeps its 16 rows' scores, probabilities and output in mma.sync
// fragments in registers; only the K and V tiles (and, in backward, Q and
// dO) pass through shared memory, as bf16. Inputs are fp32 (B,T,3C) rows
// rounded to bf16 as they are loaded; every product accumulates in fp32, in
// a fixed order, without atomics. Dropout is drawn inside, from the same
// Philox addresses as the CPU and the TF32 flash kernels (element
// (h*T + t)*T + j of sample b at the site); no mask is stored.
//
// The bodies are plain functions of (ThreadCoord, shared memory), written
// against warp_mma.h: flash_attention_bf16.cu wraps them in __global__
// kernels, and the warp emulator runs them on the host for the tests.
// Private to model/cuda/.
//
// Block shape, all three kernels: 4 warps (128 threads) over one (b, h) and
// one 64-row tile of queries (forward, dq) or keys (dk and dv); each warp
// owns 16 of those rows. Lane (g, c) = (lane / 4, lane % 4) holds rows g and
// g + 8 of its warp's 16, and in each 8-wide n-tile columns 2c and 2c + 1
// (warp_mma.h). A lane's score j of n-tile nt, j = 2r + i, is row g + 8r,
// column nt*8 + 2c + i; its keep bit is bit 4*nt + j of a 32-bit mask.
#ifndef DROPK_MODEL_CUDA_FLASH_BF16_BODY_H_
#define DROPK_MODEL_CUDA_FLASH_BF16_BODY_H_

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "cuda/site_dropout.h"
#include "cuda/warp_mma.h"
#include "model/host_device.h"
#include "model/philox.h"

namespace dropk::cuda::flash_bf16 {

constexpr int kTile = 64;  // rows of a query tile, keys of a key tile
constexpr int kWarps = 4;
constexpr int kWarpRows = 16;
constexpr int kBlockThreads = kWarps * 32;
constexpr int kNTiles = kTile / 8;  // 8-wide score n-tiles per 64 columns

// What every kernel reads and writes. qkv (B,T,3C): q at column 0, k at C,
// v at 2C; out and dout (B,T,C); lse and delta (B*NH*T), per row; dqkv
// (B,T,3C). scale = 1/sqrt(hs) multiplies the scores.
struct Params {
  const float* qkv = nullptr;
  float* out = nullptr;
  float* lse = nullptr;
  const float* dout = nullptr;
  const float* delta = nullptr;
  float* dqkv = nullptr;
  int T = 0, C = 0, NH = 0;
  float scale = 1.0f;
  SiteDropout dropout;
};

// 32-bit words in one shared-memory row of a bf16 tile with `cols` columns
// (16, 32 or 64): with 4 words of padding the row stride is an odd multiple
// of 4 words, so the 8 rows a fragment load touches start in 8 different
// groups of 4 banks and a warp's 32 loads hit 32 banks.
DROPK_HOST_DEVICE constexpr int WordsPerRow(int cols) { return cols / 2 + 4; }

// Shared-memory bytes of each kernel for head size HS.
template <int HS>
DROPK_HOST_DEVICE constexpr size_t ForwardSharedBytes() {
  return 4 * (kTile * WordsPerRow(HS) + HS * WordsPerRow(kTile));
}
template <int HS>
DROPK_HOST_DEVICE constexpr size_t BackwardKvSharedBytes() {
  return 4 * (2 * kTile * WordsPerRow(HS) + 2 * HS * WordsPerRow(kTile) + 2 * kTile);
}
template <int HS>
DROPK_HOST_DEVICE constexpr size_t BackwardQSharedBytes() {
  return 4 * (2 * kTile * WordsPerRow(HS) + HS * WordsPerRow(kTile));
}

// tile (64 rows x HS, WordsPerRow(HS) words a row) = rows t0.. of src (row
// t at src + t * stride) as bf16, zero past T. The whole block.
template <int HS>
DROPK_WARP_FN void LoadRows(uint32_t* tile, const float* src, size_t stride, int t0, int T,
                            int thread) {
  constexpr int kWords = HS / 2;
  for (int i = thread; i < kTile * kWords; i += kBlockThreads) {
    const int r = i / kWords, w = i % kWords, t = t0 + r;
    const float* x = src + static_cast<size_t>(t) * stride + 2 * w;
    tile[r * WordsPerRow(HS) + w] = t < T ? PackBf16Pair(x[0], x[1]) : 0u;
  }
}

// tile (HS rows x 64, WordsPerRow(64) words a row) = the transpose of rows
// t0.. of src as bf16 (tile[d][j] = src row t0 + j, column d), zero past T:
// the B operand of a product over the 64 rows. The whole block.
template <int HS>
DROPK_WARP_FN void LoadColumns(uint32_t* tile, const float* src, size_t stride, int t0, int T,
                               int thread) {
  constexpr int kPairs = kTile / 2;
  for (int i = thread; i < HS * kPairs; i += kBlockThreads) {
    const int d = i % HS, pair = i / HS, t = t0 + 2 * pair;
    const float lo = t < T ? src[static_cast<size_t>(t) * stride + d] : 0.0f;
    const float hi = t + 1 < T ? src[static_cast<size_t>(t + 1) * stride + d] : 0.0f;
    tile[d * WordsPerRow(kTile) + pair] = PackBf16Pair(lo, hi);
  }
}

// frags = the A fragments (16 rows x HS, HS/16 k-steps) of rows r0.. of src
// (row t at src + t * stride, zero at and past T), read from global memory.
template <int HS>
DROPK_WARP_FN void LoadAFragments(uint32_t (&frags)[HS / 16][4], const float* src, size_t stride,
                                  int r0, int T, int g, int c) {
  DROPK_UNROLL
  for (int ks = 0; ks < HS / 16; ++ks) {
    DROPK_UNROLL
    for (int w = 0; w < 4; ++w) {
      const int t = r0 + g + 8 * (w & 1);
      const int col = ks * 16 + 2 * c + 8 * (w >> 1);
      const float* x = src + static_cast<size_t>(t) * stride + col;
      frags[ks][w] = t < T ? PackBf16Pair(x[0], x[1]) : 0u;
    }
  }
}

// The B fragment for n-tile nt, k-step ks of a product whose B[k][n] is
// tile[n][k]: a row-major tile of WordsPerRow(cols) words a row.
template <int kCols>
DROPK_WARP_FN void LoadB(uint32_t (&b)[2], const uint32_t* tile, int nt, int ks, int g, int c) {
  const uint32_t* row = tile + (nt * 8 + g) * WordsPerRow(kCols) + ks * 8 + c;
  b[0] = row[0];
  b[1] = row[4];
}

// acc[nt] (16 x 64 in 8 n-tiles) = A * B, A the 16 x HS fragments, B[k][n]
// = tile[n][k] for the tile's 64 rows (HS columns).
template <int HS>
DROPK_WARP_FN void ProductOverHead(float (&acc)[kNTiles][4], const uint32_t (&a)[HS / 16][4],
                                   const uint32_t* tile, int g, int c) {
  DROPK_UNROLL
  for (int nt = 0; nt < kNTiles; ++nt) {
    DROPK_UNROLL
    for (int j = 0; j < 4; ++j) acc[nt][j] = 0.0f;
  }
  DROPK_UNROLL
  for (int ks = 0; ks < HS / 16; ++ks) {
    DROPK_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt) {
      uint32_t b[2];
      LoadB<HS>(b, tile, nt, ks, g, c);
      MmaBf16(acc[nt], a[ks], b);
    }
  }
}

// acc (16 x HS in HS/8 n-tiles) += X * B, X the 16 x 64 values x (a C
// fragment set, packed to bf16 here as A fragments), B[k][n] = tile_t[n][k]
// for a transposed (HS x 64) tile.
template <int HS>
DROPK_WARP_FN void AccumulateOverTile(float (&acc)[HS / 8][4], const float (&x)[kNTiles][4],
                                      const uint32_t* tile_t, int g, int c) {
  DROPK_UNROLL
  for (int kk = 0; kk < kTile / 16; ++kk) {
    const uint32_t a[4] = {PackBf16Pair(x[2 * kk][0], x[2 * kk][1]),
                           PackBf16Pair(x[2 * kk][2], x[2 * kk][3]),
                           PackBf16Pair(x[2 * kk + 1][0], x[2 * kk + 1][1]),
                           PackBf16Pair(x[2 * kk + 1][2], x[2 * kk + 1][3])};
    DROPK_UNROLL
    for (int dt = 0; dt < HS / 8; ++dt) {
      uint32_t b[2];
      LoadB<kTile>(b, tile_t, dt, kk, g, c);
      MmaBf16(acc[dt], a, b);
    }
  }
}

// Bit w (0..3) set when word w of Philox block `block` of (stream, site,
// step) keeps its element: DropoutKeep's decision for elements 4*block + w.
DROPK_WARP_FN uint32_t KeepNibble(const SiteDropout& d, uint64_t block, uint32_t stream) {
  const Philox4x32Block r =
      Philox(d.plan.seed, static_cast<uint32_t>(block), stream, d.site, d.plan.step);
  uint32_t nibble = 0;
  DROPK_UNROLL
  for (int w = 0; w < 4; ++w) nibble |= (r.v[w] < d.threshold ? 1u : 0u) << w;
  return nibble;
}

// The keep bits (warp_mma layout above) of a lane's scores in row g + 8r,
// when the row's 64 columns are consecutive Philox elements from `row` (the
// address of column k0). The four lanes of a group share the row, whose 64
// columns touch at most 17 Philox blocks: lane c draws blocks c, c + 4, ...
// of them (4 or 5 each, every block once), and each lane fetches the bit of
// each of its columns from the lane that drew it. All lanes call it. Its
// loops stay rolled: unrolled, the forward kernel needed 245 registers
// instead of 168.
DROPK_WARP_FN uint32_t RowKeepBits(const SiteDropout& d, const DropoutAddress& row, int r, int g,
                                   int c) {
  constexpr int kBlocks = (3 + kTile + 3) / 4;  // a row's blocks at the worst offset: 17
  const uint64_t first = row.element >> 2;
  const int offset = static_cast<int>(row.element & 3);
  uint32_t mine = 0;  // block c + 4k's nibble at bits 4k
  for (int k = 0; 4 * k < kBlocks; ++k) {
    const int j = c + 4 * k;
    if (j < kBlocks) mine |= KeepNibble(d, first + j, row.stream) << (4 * k);
  }
  uint32_t bits = 0;
  for (int nt = 0; nt < kNTiles; ++nt) {
    for (int i = 0; i < 2; ++i) {
      const int at = offset + nt * 8 + 2 * c + i;  // from element 4 * first
      const int j = at >> 2;
      const uint32_t theirs = ShflIdx(mine, 4 * g + (j & 3));
      bits |= ((theirs >> (4 * (j >> 2) + (at & 3))) & 1u) << (4 * nt + 2 * r + i);
    }
  }
  return bits;
}

// RowKeepBits of both of a lane's rows; rows[r] is row g + 8r's address of
// column k0.
DROPK_WARP_FN uint32_t RowPairKeepBits(const SiteDropout& d, const DropoutAddress (&rows)[2],
                                       int k0, int g, int c) {
  return RowKeepBits(d, {rows[0].stream, rows[0].element + k0}, 0, g, c) |
         RowKeepBits(d, {rows[1].stream, rows[1].element + k0}, 1, g, c);
}

// The keep bits of a lane's scores in the transposed orientation of the dk
// and dv kernel: rows are 16 consecutive keys from key0, columns the 64
// queries from q0, and a query's keys are consecutive Philox elements. A
// column's 16 keys touch at most 5 Philox blocks. The eight lanes that share
// a lane's columns (same c) take them four at a time (n-tiles 2m and
// 2m + 1): 20 blocks, which the eight draw in three rounds, each block
// once; each lane fetches the bits of its rows from the lane that drew them.
// 12 Philox calls per lane, against 16 for a block per lane per column. All
// lanes call it.
DROPK_WARP_FN uint32_t ColumnKeepBits(const SiteDropout& d, int b, int h, int NH, int T, int q0,
                                      int key0, int g, int c) {
  constexpr int kPerColumn = (3 + kWarpRows + 3) / 4;  // 5, at the worst offset
  constexpr int kColumns = 4;                          // a lane's columns of two n-tiles
  constexpr int kDraws = kColumns * kPerColumn;        // 20
  // The Philox address of key 0 of column q (0..3) of n-tiles 2m, 2m + 1.
  const auto column = [&](int m, int q) {
    const int tq = q0 + (2 * m + q / 2) * 8 + 2 * c + q % 2;
    return AttentionRowAddress(d, b, h, tq < T ? tq : 0, NH, T);
  };
  uint32_t bits = 0;
  for (int m = 0; m < kNTiles / 2; ++m) {
    uint32_t mine = 0;  // the nibble of draw g + 8t at bits 4t
    for (int t = 0; 8 * t < kDraws; ++t) {
      const int f = g + 8 * t;
      if (f < kDraws) {
        const DropoutAddress a = column(m, f / kPerColumn);
        const uint64_t first = (a.element + static_cast<uint64_t>(key0)) >> 2;
        mine |= KeepNibble(d, first + f % kPerColumn, a.stream) << (4 * t);
      }
    }
    for (int q = 0; q < kColumns; ++q) {
      const DropoutAddress a = column(m, q);
      const int offset = static_cast<int>((a.element + static_cast<uint64_t>(key0)) & 3);
      for (int r = 0; r < 2; ++r) {
        const int at = offset + g + 8 * r;  // from element 4 * first of the column
        const int f = kPerColumn * q + (at >> 2);
        const uint32_t theirs = ShflIdx(mine, 4 * (f % 8) + c);
        const int nt = 2 * m + q / 2, i = q % 2;
        bits |= ((theirs >> (4 * (f / 8) + (at & 3))) & 1u) << (4 * nt + 2 * r + i);
      }
    }
  }
  return bits;
}

// x = kept ? x * keep_scale : 0 for each of a lane's 32 values.
DROPK_WARP_FN void ApplyKeep(float (&x)[kNTiles][4], uint32_t keep, float keep_scale) {
  DROPK_UNROLL
  for (int nt = 0; nt < kNTiles; ++nt) {
    DROPK_UNROLL
    for (int j = 0; j < 4; ++j)
      x[nt][j] = (keep >> (4 * nt + j)) & 1u ? x[nt][j] * keep_scale : 0.0f;
  }
}

// Writes acc (16 rows from r0 x HS, in HS/8 n-tiles) times factor to rows
// of dst (row t at dst + t * stride), rows at and past T skipped.
template <int HS>
DROPK_WARP_FN void StoreRows(float* dst, size_t stride, const float (&acc)[HS / 8][4],
                             const float (&factor)[2], int r0, int T, int g, int c) {
  DROPK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int t = r0 + g + 8 * r;
    if (t >= T) continue;
    float* row = dst + static_cast<size_t>(t) * stride;
    DROPK_UNROLL
    for (int dt = 0; dt < HS / 8; ++dt) {
      row[dt * 8 + 2 * c] = acc[dt][2 * r] * factor[r];
      row[dt * 8 + 2 * c + 1] = acc[dt][2 * r + 1] * factor[r];
    }
  }
}

// Where a thread of a (B*NH, tiles) grid works: its block's (b, h) and tile
// (query tiles longest first when reversed), its warp's first row r0 of the
// tile, its lane's (g, c), and head h's columns of sample b in qkv and dout.
template <int HS>
struct BlockPlace {
  int T, C, NH, tiles, tile, bh, b, h, warp, g, c, r0;
  size_t stride;      // of qkv rows
  const float* head;  // q of (b, h): k at +C, v at +2C
  const float* dout;  // dout of (b, h), rows C apart
  DROPK_WARP_FN BlockPlace(const Params& p, ThreadCoord at, bool reversed)
      : T(p.T),
        C(p.C),
        NH(p.NH),
        tiles((p.T + kTile - 1) / kTile),
        tile(reversed ? tiles - 1 - at.block_y : at.block_y),
        bh(at.block_x),
        b(at.block_x / p.NH),
        h(at.block_x % p.NH),
        warp(at.thread / 32),
        g(at.thread % 32 / 4),
        c(at.thread % 4),
        r0(tile * kTile + warp * kWarpRows),
        stride(3 * static_cast<size_t>(p.C)),
        head(p.qkv + static_cast<size_t>(b) * p.T * stride + static_cast<size_t>(h) * HS),
        dout(p.dout == nullptr
                 ? nullptr
                 : p.dout + static_cast<size_t>(b) * p.T * p.C + static_cast<size_t>(h) * HS) {}
};

// Grid (B*NH, query tiles), longest rows first. out (B,T,C) of this tile's
// rows and lse, their log-sum-exp of the scaled scores.
template <int HS>
DROPK_WARP_FN void Forward(const Params& p, ThreadCoord at, uint32_t* smem) {
  uint32_t* k_tile = smem;                                // (64, HS)
  uint32_t* v_tile_t = k_tile + kTile * WordsPerRow(HS);  // (HS, 64)
  const BlockPlace<HS> place(p, at, true);
  const int T = place.T, C = place.C, NH = place.NH, qt = place.tile;
  const int bh = place.bh, b = place.b, h = place.h, g = place.g, c = place.c;
  const int r0 = place.r0;  // this warp's first query
  const size_t stride = place.stride;
  const float* head = place.head;
  const bool drop = p.dropout.p > 0.0f;
  int tq[2];
  DropoutAddress rows[2];
  DROPK_UNROLL
  for (int r = 0; r < 2; ++r) {
    tq[r] = r0 + g + 8 * r;
    rows[r] = AttentionRowAddress(p.dropout, b, h, tq[r] < T ? tq[r] : 0, NH, T);
  }
  uint32_t q[HS / 16][4];
  LoadAFragments<HS>(q, head, stride, r0, T, g, c);
  float o[HS / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    SyncBlock();  // every warp is done with the previous tiles
    LoadRows<HS>(k_tile, head + C, stride, k0, T, at.thread);
    LoadColumns<HS>(v_tile_t, head + 2 * C, stride, k0, T, at.thread);
    SyncBlock();
    float s[kNTiles][4];
    ProductOverHead<HS>(s, q, k_tile, g, c);
    DROPK_UNROLL
    for (int r = 0; r < 2; ++r) {
      float tile_max = -INFINITY;
      DROPK_UNROLL
      for (int nt = 0; nt < kNTiles; ++nt) {
        DROPK_UNROLL
        for (int i = 0; i < 2; ++i) {
          const int key = k0 + nt * 8 + 2 * c + i;
          float& x = s[nt][2 * r + i];
          x = key <= tq[r] && tq[r] < T ? x * p.scale : -INFINITY;
          tile_max = fmaxf(tile_max, x);
        }
      }
      tile_max = fmaxf(tile_max, ShflXor(tile_max, 1));
      tile_max = fmaxf(tile_max, ShflXor(tile_max, 2));
      const float m_new = fmaxf(m[r], tile_max);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing yet
      const float alpha = m[r] == -INFINITY ? 0.0f : FastExp(m[r] - m_new);
      float sum = 0.0f;
      DROPK_UNROLL
      for (int nt = 0; nt < kNTiles; ++nt) {
        DROPK_UNROLL
        for (int i = 0; i < 2; ++i) {
          float& x = s[nt][2 * r + i];
          x = FastExp(x - m_use);
          sum += x;
        }
      }
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
      DROPK_UNROLL
      for (int dt = 0; dt < HS / 8; ++dt) {
        o[dt][2 * r] *= alpha;
        o[dt][2 * r + 1] *= alpha;
      }
    }
    if (drop) ApplyKeep(s, RowPairKeepBits(p.dropout, rows, k0, g, c), p.dropout.keep_scale);
    AccumulateOverTile<HS>(o, s, v_tile_t, g, c);
  }
  float inv[2];
  DROPK_UNROLL
  for (int r = 0; r < 2; ++r) {
    float total = l[r];
    total += ShflXor(total, 1);
    total += ShflXor(total, 2);
    inv[r] = 1.0f / total;
    if (c == 0 && tq[r] < T) p.lse[static_cast<size_t>(bh) * T + tq[r]] = m[r] + logf(total);
  }
  StoreRows<HS>(p.out + static_cast<size_t>(b) * T * C + static_cast<size_t>(h) * HS, C, o, inv, r0,
                T, g, c);
}

// Grid (B*NH, key tiles): dk and dv of this key tile, summed over the query
// tiles at or after it in order. Scores are computed transposed (keys as
// rows), so P^T and dS^T are A fragments of dv += P^T dO and dk += dS^T Q.
template <int HS>
DROPK_WARP_FN void BackwardKv(const Params& p, ThreadCoord at, uint32_t* smem) {
  uint32_t* q_tile = smem;                                     // (64, HS)
  uint32_t* dout_tile = q_tile + kTile * WordsPerRow(HS);      // (64, HS)
  uint32_t* q_tile_t = dout_tile + kTile * WordsPerRow(HS);    // (HS, 64)
  uint32_t* dout_tile_t = q_tile_t + HS * WordsPerRow(kTile);  // (HS, 64)
  float* row_lse = reinterpret_cast<float*>(dout_tile_t + HS * WordsPerRow(kTile));
  float* row_delta = row_lse + kTile;
  const BlockPlace<HS> place(p, at, false);
  const int T = place.T, C = place.C, NH = place.NH, q_tiles = place.tiles, kt = place.tile;
  const int bh = place.bh, b = place.b, h = place.h, g = place.g, c = place.c;
  const int key0 = place.r0;  // this warp's first key
  const size_t stride = place.stride;
  const float* head = place.head;
  const float* dout = place.dout;
  const bool drop = p.dropout.p > 0.0f;
  uint32_t k[HS / 16][4], v[HS / 16][4];
  LoadAFragments<HS>(k, head + C, stride, key0, T, g, c);
  LoadAFragments<HS>(v, head + 2 * C, stride, key0, T, g, c);
  float dk[HS / 8][4] = {}, dv[HS / 8][4] = {};
  for (int qt = kt; qt < q_tiles; ++qt) {
    const int q0 = qt * kTile;
    SyncBlock();
    LoadRows<HS>(q_tile, head, stride, q0, T, at.thread);
    LoadRows<HS>(dout_tile, dout, C, q0, T, at.thread);
    LoadColumns<HS>(q_tile_t, head, stride, q0, T, at.thread);
    LoadColumns<HS>(dout_tile_t, dout, C, q0, T, at.thread);
    for (int i = at.thread; i < kTile; i += kBlockThreads) {
      const bool in = q0 + i < T;
      row_lse[i] = in ? p.lse[static_cast<size_t>(bh) * T + q0 + i] : 0.0f;
      row_delta[i] = in ? p.delta[static_cast<size_t>(bh) * T + q0 + i] : 0.0f;
    }
    SyncBlock();
    float pt[kNTiles][4];  // S^T, then P^T (16 keys x 64 queries)
    ProductOverHead<HS>(pt, k, q_tile, g, c);
    DROPK_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt) {
      DROPK_UNROLL
      for (int j = 0; j < 4; ++j) {
        const int col = nt * 8 + 2 * c + (j & 1), tq = q0 + col, key = key0 + g + 8 * (j >> 1);
        pt[nt][j] = key <= tq && tq < T ? FastExp(pt[nt][j] * p.scale - row_lse[col]) : 0.0f;
      }
    }
    const uint32_t keep =
        drop ? ColumnKeepBits(p.dropout, b, h, NH, T, q0, key0, g, c) : 0xffffffffu;
    float x[kNTiles][4];  // P^T dropped, then dP^T, then dS^T
    DROPK_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt) {
      DROPK_UNROLL
      for (int j = 0; j < 4; ++j) x[nt][j] = pt[nt][j];
    }
    if (drop) ApplyKeep(x, keep, p.dropout.keep_scale);
    AccumulateOverTile<HS>(dv, x, dout_tile_t, g, c);  // dv += P^T dO
    ProductOverHead<HS>(x, v, dout_tile, g, c);        // dP^T = V dO^T
    if (drop) ApplyKeep(x, keep, p.dropout.keep_scale);
    DROPK_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt) {
      DROPK_UNROLL
      for (int j = 0; j < 4; ++j) {
        x[nt][j] = pt[nt][j] * (x[nt][j] - row_delta[nt * 8 + 2 * c + (j & 1)]);
      }
    }
    AccumulateOverTile<HS>(dk, x, q_tile_t, g, c);  // dk += dS^T Q
  }
  float* dqkv = p.dqkv + static_cast<size_t>(b) * T * stride + static_cast<size_t>(h) * HS;
  const float dk_factor[2] = {p.scale, p.scale}, dv_factor[2] = {1.0f, 1.0f};
  StoreRows<HS>(dqkv + C, stride, dk, dk_factor, key0, T, g, c);
  StoreRows<HS>(dqkv + 2 * C, stride, dv, dv_factor, key0, T, g, c);
}

// Grid (B*NH, query tiles), longest rows first: dq of this query tile,
// summed over the key tiles at or before it in order.
template <int HS>
DROPK_WARP_FN void BackwardQ(const Params& p, ThreadCoord at, uint32_t* smem) {
  uint32_t* k_tile = smem;                                // (64, HS)
  uint32_t* v_tile = k_tile + kTile * WordsPerRow(HS);    // (64, HS)
  uint32_t* k_tile_t = v_tile + kTile * WordsPerRow(HS);  // (HS, 64)
  const BlockPlace<HS> place(p, at, true);
  const int T = place.T, C = place.C, NH = place.NH, qt = place.tile;
  const int bh = place.bh, b = place.b, h = place.h, g = place.g, c = place.c;
  const int r0 = place.r0;  // this warp's first query
  const size_t stride = place.stride;
  const float* head = place.head;
  const float* dout = place.dout;
  const bool drop = p.dropout.p > 0.0f;
  int tq[2];
  float lse[2], delta[2];
  DropoutAddress rows[2];
  DROPK_UNROLL
  for (int r = 0; r < 2; ++r) {
    tq[r] = r0 + g + 8 * r;
    const bool in = tq[r] < T;
    lse[r] = in ? p.lse[static_cast<size_t>(bh) * T + tq[r]] : 0.0f;
    delta[r] = in ? p.delta[static_cast<size_t>(bh) * T + tq[r]] : 0.0f;
    rows[r] = AttentionRowAddress(p.dropout, b, h, in ? tq[r] : 0, NH, T);
  }
  uint32_t q[HS / 16][4], dout_a[HS / 16][4];
  LoadAFragments<HS>(q, head, stride, r0, T, g, c);
  LoadAFragments<HS>(dout_a, dout, C, r0, T, g, c);
  float dq[HS / 8][4] = {};
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    SyncBlock();
    LoadRows<HS>(k_tile, head + C, stride, k0, T, at.thread);
    LoadRows<HS>(v_tile, head + 2 * C, stride, k0, T, at.thread);
    LoadColumns<HS>(k_tile_t, head + C, stride, k0, T, at.thread);
    SyncBlock();
    float pr[kNTiles][4];  // S, then P (16 queries x 64 keys)
    ProductOverHead<HS>(pr, q, k_tile, g, c);
    DROPK_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt) {
      DROPK_UNROLL
      for (int j = 0; j < 4; ++j) {
        const int r = j >> 1, key = k0 + nt * 8 + 2 * c + (j & 1);
        pr[nt][j] = key <= tq[r] && tq[r] < T ? FastExp(pr[nt][j] * p.scale - lse[r]) : 0.0f;
      }
    }
    float x[kNTiles][4];                           // dP, then dS
    ProductOverHead<HS>(x, dout_a, v_tile, g, c);  // dP = dO V^T
    if (drop) ApplyKeep(x, RowPairKeepBits(p.dropout, rows, k0, g, c), p.dropout.keep_scale);
    DROPK_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt) {
      DROPK_UNROLL
      for (int j = 0; j < 4; ++j) x[nt][j] = pr[nt][j] * (x[nt][j] - delta[j >> 1]);
    }
    AccumulateOverTile<HS>(dq, x, k_tile_t, g, c);  // dq += dS K
  }
  const float factor[2] = {p.scale, p.scale};
  StoreRows<HS>(p.dqkv + static_cast<size_t>(b) * T * stride + static_cast<size_t>(h) * HS, stride,
                dq, factor, r0, T, g, c);
}

}  // namespace dropk::cuda::flash_bf16

#endif  // DROPK_MODEL_CUDA_FLASH_BF16_BODY_H_
