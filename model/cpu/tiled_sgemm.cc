#include "cpu/tiled_sgemm.h"

#include <cblas.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string>
#include <utility>

extern "C" char* openblas_get_corename(void);

namespace dropk {
namespace {

// A tile of kTileRows x kTileCols outputs sums K in chunks of at most
// kTileDepth: 32 x 64 x 384 = 786K multiply-adds, under the size up to which
// OpenBLAS 0.3.21 hands a call to its small-matrix kernels (10^6).
constexpr int kTileRows = 32;
constexpr int kTileCols = 64;
constexpr int kTileDepth = 384;
// Products up to this many multiply-adds are tiled. On a 2-core Zen 4 the
// recipe's backward products (12-50M) took 15% less time as tiles within a
// training step; the small config's (300M-1.2G) took 10-25% more.
constexpr double kMaxTiledProduct = 64.0 * 1024 * 1024;

bool CoreHasSmallMatrixKernels() {
  std::string core = openblas_get_corename();
  std::transform(core.begin(), core.end(), core.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
}

// FixedTileSgemm's tiles. Each call packs its own operands, so a tile
// costs more than its share of one threaded call: a product's left operand
// is packed once per column tile and its right once per row tile. Tiles
// therefore start at kLargestTile x kLargestTile outputs and are halved,
// down to kSmallestTileRows x kSmallestTileCols, only while the product has
// fewer than kEnoughTiles of them to share out. The rule reads the shape
// alone. On the 2-core Zen 4 (2026-11-30, scratch program, two threads,
// OpenBLAS's own core pick) GPT-2's LM head products (2,048 tokens,
// 50,304 x 768) ran as fast this way as one threaded call (485 / 499 / 470
// ms against 485 / 513 / 475 for forward / dinp / dw), where fixed 128 x
// 256 tiles took 19-27% longer.
constexpr int kLargestTile = 1024;
constexpr int kSmallestTileRows = 128;
constexpr int kSmallestTileCols = 256;
constexpr int64_t kEnoughTiles = 8;

int TileCount(int n, int tile) { return (n + tile - 1) / tile; }

// The tile FixedTileSgemm splits an M x N output into.
std::pair<int, int> FixedTileShape(int M, int N) {
  int rows = kLargestTile, cols = kLargestTile;
  while ((rows > kSmallestTileRows || cols > kSmallestTileCols) &&
         static_cast<int64_t>(TileCount(M, rows)) * TileCount(N, cols) < kEnoughTiles) {
    rows = std::max(kSmallestTileRows, rows / 2);
    cols = std::max(kSmallestTileCols, cols / 2);
  }
  return {rows, cols};
}

// c (rows,cols) = beta * c when there is no product (K == 0).
void ScaleTile(int rows, int cols, float beta, float* c, int ldc) {
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) {
      float& out = c[static_cast<size_t>(i) * ldc + j];
      out = beta == 0.0f ? 0.0f : out * beta;
    }
  }
}

}  // namespace

bool UseTiledSgemm(int M, int N, int K) {
  static const bool has_kernels = CoreHasSmallMatrixKernels();
  return has_kernels && static_cast<double>(M) * N * K <= kMaxTiledProduct;
}

void TiledSgemm(bool transpose_a, int M, int N, int K, const float* A, int lda, const float* B,
                int ldb, float beta, float* C, int ldc) {
  const int row_tiles = (M + kTileRows - 1) / kTileRows;
  const int col_tiles = (N + kTileCols - 1) / kTileCols;
#pragma omp parallel for collapse(2) schedule(static)
  for (int ct = 0; ct < col_tiles; ++ct) {
    for (int rt = 0; rt < row_tiles; ++rt) {
      const int m0 = rt * kTileRows, n0 = ct * kTileCols;
      const int rows = std::min(kTileRows, M - m0), cols = std::min(kTileCols, N - n0);
      float* c = C + static_cast<size_t>(m0) * ldc + n0;
      if (K == 0) {  // no product: only beta applies
        ScaleTile(rows, cols, beta, c, ldc);
        continue;
      }
      for (int k0 = 0; k0 < K; k0 += kTileDepth) {
        const int depth = std::min(kTileDepth, K - k0);
        const float* a = transpose_a ? A + static_cast<size_t>(k0) * lda + m0
                                     : A + static_cast<size_t>(m0) * lda + k0;
        cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, CblasNoTrans, rows,
                    cols, depth, 1.0f, a, lda, B + static_cast<size_t>(k0) * ldb + n0, ldb,
                    k0 == 0 ? beta : 1.0f, c, ldc);
      }
    }
  }
}

void FixedTileSgemm(bool transpose_a, bool transpose_b, int M, int N, int K, const float* A,
                    int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  const auto [tile_rows, tile_cols] = FixedTileShape(M, N);
  const int row_tiles = TileCount(M, tile_rows), col_tiles = TileCount(N, tile_cols);
#pragma omp parallel for collapse(2) schedule(static)
  for (int rt = 0; rt < row_tiles; ++rt) {
    for (int ct = 0; ct < col_tiles; ++ct) {
      const int m0 = rt * tile_rows, n0 = ct * tile_cols;
      const int rows = std::min(tile_rows, M - m0), cols = std::min(tile_cols, N - n0);
      float* c = C + static_cast<size_t>(m0) * ldc + n0;
      if (K == 0) {
        ScaleTile(rows, cols, beta, c, ldc);
        continue;
      }
      // op(A)'s rows [m0, m0 + rows) and op(B)'s columns [n0, n0 + cols).
      const float* a = transpose_a ? A + m0 : A + static_cast<size_t>(m0) * lda;
      const float* b = transpose_b ? B + static_cast<size_t>(n0) * ldb : B + n0;
      cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
                  transpose_b ? CblasTrans : CblasNoTrans, rows, cols, K, 1.0f, a, lda, b, ldb,
                  beta, c, ldc);
    }
  }
}

}  // namespace dropk
