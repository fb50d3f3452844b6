#include "cpu/xsmm_gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpu/tiled_sgemm.h"

#if DROPK_HAS_XSMM
#include <libxsmm.h>
#endif

namespace dropk {
namespace {

constexpr int kTileRows = 64;  // rows of C per tile (tokens, in the projections)
constexpr int kTileCols = 64;  // columns of C per tile
// K per kernel call. A tile's operands for one call (64 x 512 of each) stay
// in L2 while the tile's neighbours reuse one of them; longer K is summed in
// chunks of this size, in order.
constexpr int kDepth = 512;
// K per kernel call in the weight gradient, whose K (tokens) is long: 256
// was 2% faster than 512 there (noise-level, on the 2-core Zen 4).
constexpr int kLongDepth = 256;

// Shapes where the tiles ran slower than OpenBLAS's threaded sgemm go to
// OpenBLAS (now in FixedTileSgemm's tiles, which ran GPT-2's LM head as
// fast as one threaded call). Measured on GPT-2's shapes (768 wide, 2,048-8,192 tokens) on the
// 2-core Zen 4: a side past kMaxTiledSide is a large vocabulary's LM head,
// whose dinp sums K = 50,257 with each tile streaming both operands
// (30% slower) and whose forward and weight gradient were 8% slower; a
// weight gradient wider than kMaxTiledGradientWidth (N) no longer keeps a
// chunk of its right operand in L2 across a thread's tiles (3,072 wide:
// 17% slower). The small config's and the recipe's products are all tiled.
constexpr int kMaxTiledSide = 8192;
constexpr int kMaxTiledGradientWidth = 1536;

// The products OpenBLAS takes instead (see above), in its tiles fixed by
// the shape (FixedTileSgemm), so that they too do not depend on the team
// size: one threaded sgemm call does on OpenBLAS's Haswell kernels.
void OpenBlasProduct(bool transpose_a, bool transpose_b, int M, int N, int K, const float* A,
                     int lda, const float* B, int ldb, bool accumulate, float* C, int ldc) {
  FixedTileSgemm(transpose_a, transpose_b, M, N, K, A, lda, B, ldb, accumulate ? 1.0f : 0.0f, C,
                 ldc);
}

struct Choice {
  bool use = false;
  std::string description;
};

Choice Decide() {
  Choice choice;
  const char* env = std::getenv("DROPK_CPU_GEMM");
  const std::string asked = env == nullptr ? "" : env;
  std::string note;
  if (!asked.empty() && asked != "openblas" && asked != "libxsmm") {
    note = absl::StrCat(" (DROPK_CPU_GEMM=", asked, " ignored: it takes openblas or libxsmm)");
  }
#if DROPK_HAS_XSMM
  libxsmm_init();
  const std::string target = libxsmm_get_target_arch();
  const int arch = libxsmm_get_target_archid();
  if (asked == "openblas") {
    choice.description =
        "fp32 projections and attention through OpenBLAS (DROPK_CPU_GEMM=openblas)";
  } else if (arch >= LIBXSMM_X86_AVX512_CORE) {
    choice.use = true;
    choice.description =
        absl::StrCat("fp32 projections and attention through libxsmm (", target, ")", note);
  } else if (asked == "libxsmm" && arch >= LIBXSMM_X86_AVX2) {
    // Asked for on a CPU where it was slower (AVX2): the user's call.
    choice.use = true;
    choice.description = absl::StrCat("fp32 projections and attention through libxsmm (", target,
                                      ", DROPK_CPU_GEMM=libxsmm)");
  } else {
    // Below AVX2 libxsmm generates no code: every tile would be OpenBLAS's.
    choice.description = absl::StrCat(
        "fp32 projections and attention through OpenBLAS (libxsmm targets ", target,
        " here, not AVX-512)",
        asked == "libxsmm" ? " (DROPK_CPU_GEMM=libxsmm ignored: libxsmm needs AVX2 at least)"
                           : note);
  }
#else
  choice.description =
      absl::StrCat("fp32 projections and attention through OpenBLAS (built without libxsmm)",
                   asked == "openblas"  ? " (DROPK_CPU_GEMM=openblas)"
                   : asked == "libxsmm" ? " (DROPK_CPU_GEMM=libxsmm ignored)"
                                        : note);
#endif
  return choice;
}

const Choice& TheChoice() {
  static const Choice* choice = new Choice(Decide());
  return *choice;
}

int TileCount(int n, int tile) { return (n + tile - 1) / tile; }

// c (rows,cols) = a (rows,depth) · b (depth,cols), plus c's old value when
// accumulate; row major, a stored transposed (depth,rows) when a_transposed.
// One libxsmm kernel on this thread when use_xsmm, or single-threaded
// OpenBLAS when not or when libxsmm cannot generate that kernel.
void TileProduct(bool a_transposed, int rows, int cols, int depth, const float* a, int lda,
                 const float* b, int ldb, bool accumulate, float* c, int ldc,
                 bool use_xsmm = true) {
  const float beta = accumulate ? 1.0f : 0.0f;
#if DROPK_HAS_XSMM
  if (use_xsmm) {
    // libxsmm is column major: the row-major c = a · b is its c^T = b^T · a^T,
    // so its left operand is our b and its right our a (a transposed a is its
    // transposed right operand).
    const float alpha = 1.0f;
    const int flags = a_transposed ? LIBXSMM_GEMM_FLAG_TRANS_B : LIBXSMM_GEMM_FLAG_NONE;
    const libxsmm_blasint m = cols, n = rows, k = depth;
    const libxsmm_blasint xlda = ldb, xldb = lda, xldc = ldc;
    // The dispatch is a lookup in libxsmm's code registry after the first
    // call with a shape; generating the kernel happens once per process.
    // No prefetch: the kernels are called with three arguments (a prefetching
    // kernel, which LIBXSMM_GEMM_PREFETCH would otherwise select, takes six).
    const int prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
    const libxsmm_smmfunction kernel =
        libxsmm_smmdispatch(m, n, k, &xlda, &xldb, &xldc, &alpha, &beta, &flags, &prefetch);
    if (kernel != nullptr) {
      kernel(b, a, c);
      return;
    }
  }
#else
  (void)use_xsmm;
#endif
  cblas_sgemm(CblasRowMajor, a_transposed ? CblasTrans : CblasNoTrans, CblasNoTrans, rows, cols,
              depth, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

// C (M,N) = 0 when nothing is summed (K == 0) and not accumulating.
void ZeroUnlessAccumulating(int M, int N, bool accumulate, float* C, int ldc) {
  if (accumulate) return;
  for (int i = 0; i < M; ++i) std::fill_n(C + static_cast<size_t>(i) * ldc, N, 0.0f);
}

// c (rows,cols) += bias (cols) on every row.
void AddBiasToRows(int rows, int cols, const float* bias, float* c, int ldc) {
  for (int i = 0; i < rows; ++i) {
    float* row = c + static_cast<size_t>(i) * ldc;
    for (int j = 0; j < cols; ++j) row[j] += bias[j];
  }
}

// Copies W's rows [n0, n0 + cols) (each K long, ldw apart) into panel as a
// (K, kTileCols) row-major block: the tile's right operand, W^T's columns.
void PackTransposedPanel(const float* W, int ldw, int n0, int cols, int K, float* panel) {
  for (int j = 0; j < cols; ++j) {
    const float* row = W + static_cast<size_t>(n0 + j) * ldw;
    for (int k = 0; k < K; ++k) panel[static_cast<size_t>(k) * kTileCols + j] = row[k];
  }
}

// The products whose tiles sum a short K: every thread takes a contiguous
// run of tiles, column-tile major, so consecutive tiles share their right
// operand (for the transposed one, a panel packed once per column tile).
// bias (N, or null) is added to each finished tile.
void ShortKProduct(bool b_is_transposed_w, int M, int N, int K, const float* A, int lda,
                   const float* B, int ldb, const float* bias, bool accumulate, float* C, int ldc) {
  if (K == 0) {
    ZeroUnlessAccumulating(M, N, accumulate, C, ldc);
    if (bias != nullptr) AddBiasToRows(M, N, bias, C, ldc);
    return;
  }
  const int row_tiles = TileCount(M, kTileRows), col_tiles = TileCount(N, kTileCols);
#pragma omp parallel
  {
    // The panel outlives the call (thread_local), so it is allocated only
    // when a larger K than ever before is seen, i.e. in the first step.
    thread_local std::vector<float> panel;
    if (b_is_transposed_w && panel.size() < static_cast<size_t>(K) * kTileCols) {
      panel.resize(static_cast<size_t>(K) * kTileCols);
    }
    int packed_col_tile = -1;
#pragma omp for schedule(static)
    for (int t = 0; t < row_tiles * col_tiles; ++t) {
      const int ct = t / row_tiles, rt = t % row_tiles;
      const int m0 = rt * kTileRows, n0 = ct * kTileCols;
      const int rows = std::min(kTileRows, M - m0), cols = std::min(kTileCols, N - n0);
      const float* right = B + n0;
      int ld_right = ldb;
      if (b_is_transposed_w) {
        if (packed_col_tile != ct) PackTransposedPanel(B, ldb, n0, cols, K, panel.data());
        packed_col_tile = ct;
        right = panel.data();
        ld_right = kTileCols;
      }
      float* c = C + static_cast<size_t>(m0) * ldc + n0;
      for (int k0 = 0; k0 < K; k0 += kDepth) {
        TileProduct(false, rows, cols, std::min(kDepth, K - k0),
                    A + static_cast<size_t>(m0) * lda + k0, lda,
                    right + static_cast<size_t>(k0) * ld_right, ld_right, accumulate || k0 > 0, c,
                    ldc);
      }
      if (bias != nullptr) AddBiasToRows(rows, cols, bias + n0, c, ldc);
    }
  }
}

}  // namespace

bool UseXsmmGemm() { return TheChoice().use; }

std::string XsmmGemmDescription() { return TheChoice().description; }

void GemmOnThisThread(bool a_transposed, int rows, int cols, int depth, const float* a, int lda,
                      const float* b, int ldb, bool accumulate, float* c, int ldc) {
  if (rows == 0 || cols == 0) return;
  if (depth == 0) return ZeroUnlessAccumulating(rows, cols, accumulate, c, ldc);
  TileProduct(a_transposed, rows, cols, depth, a, lda, b, ldb, accumulate, c, ldc, UseXsmmGemm());
}

void XsmmGemmTransposedB(int M, int N, int K, const float* A, int lda, const float* W, int ldw,
                         const float* bias, float* C, int ldc) {
  if (K > 0 && (N > kMaxTiledSide || K > kMaxTiledSide)) {
    if (bias != nullptr) {  // start each row from the bias; the product adds to it
#pragma omp parallel for schedule(static)
      for (int i = 0; i < M; ++i) std::copy_n(bias, N, C + static_cast<size_t>(i) * ldc);
    }
    return OpenBlasProduct(false, true, M, N, K, A, lda, W, ldw, bias != nullptr, C, ldc);
  }
  ShortKProduct(true, M, N, K, A, lda, W, ldw, bias, /*accumulate=*/false, C, ldc);
}

void XsmmGemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
              bool accumulate, float* C, int ldc) {
  if (K > 0 && (N > kMaxTiledSide || K > kMaxTiledSide)) {
    return OpenBlasProduct(false, false, M, N, K, A, lda, B, ldb, accumulate, C, ldc);
  }
  ShortKProduct(false, M, N, K, A, lda, B, ldb, /*bias=*/nullptr, accumulate, C, ldc);
}

void XsmmGemmTransposedA(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                         bool accumulate, float* C, int ldc) {
  if (K == 0) return ZeroUnlessAccumulating(M, N, accumulate, C, ldc);
  if (M > kMaxTiledSide || N > kMaxTiledGradientWidth) {
    return OpenBlasProduct(true, false, M, N, K, A, lda, B, ldb, accumulate, C, ldc);
  }
  const int row_tiles = TileCount(M, kTileRows), col_tiles = TileCount(N, kTileCols);
  const int tiles = row_tiles * col_tiles;
#pragma omp parallel
  {
    // Each thread keeps a contiguous run of tiles (row-tile major) and
    // walks K's chunks outermost: one chunk of A's and B's rows serves all
    // of the thread's tiles while it is in cache. Summing a tile's whole K
    // before moving on streams both long operands once per tile instead
    // (8% slower than OpenBLAS on the small config's weight gradients).
    const int team = omp_get_num_threads(), me = omp_get_thread_num();
    const int t0 = static_cast<int>(static_cast<int64_t>(tiles) * me / team);
    const int t1 = static_cast<int>(static_cast<int64_t>(tiles) * (me + 1) / team);
    for (int k0 = 0; k0 < K; k0 += kLongDepth) {
      const int depth = std::min(kLongDepth, K - k0);
      for (int t = t0; t < t1; ++t) {
        const int rt = t / col_tiles, ct = t % col_tiles;
        const int m0 = rt * kTileRows, n0 = ct * kTileCols;
        TileProduct(true, std::min(kTileRows, M - m0), std::min(kTileCols, N - n0), depth,
                    A + static_cast<size_t>(k0) * lda + m0, lda,
                    B + static_cast<size_t>(k0) * ldb + n0, ldb, accumulate || k0 > 0,
                    C + static_cast<size_t>(m0) * ldc + n0, ldc);
      }
    }
  }
}

}  // namespace dropk
