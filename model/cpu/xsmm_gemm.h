// The fp32 projections' matrix products as fixed tiles of libxsmm's
// just-in-time AVX-512 kernels (Debian's libxsmm-dev), partitioned over the
// OpenMP team by us. On the 2-core Zen 4 this project is measured on, the
// small config's products (2048 tokens x 384-1536 channels) ran at 205-225
// GFLOP/s this way against 175-200 for one threaded OpenBLAS sgemm call,
// whose packing and team synchronisation cost that much at these sizes;
// libxsmm's own threaded GEMM picks its tiles by the thread count, which
// would make results depend on it. Hand-written only as a partition of the
// work: every multiply-add is libxsmm's (or, for a tile it cannot generate a
// kernel for, single-threaded OpenBLAS's).
//
// Each 64 x 64 output tile sums K in fixed chunks, in order, on one thread;
// the tiles depend on the shape alone, so results do not depend on the team
// size (the CPU kernels' promise; GptTeamSizeTest). Shapes the tiles lost
// on (a large vocabulary's LM head, weight gradients wider than 1,536) go to
// OpenBLAS's sgemm inside these functions, in tiles fixed by the shape
// (tiled_sgemm.h: FixedTileSgemm).
// Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_XSMM_GEMM_H_
#define DROPK_MODEL_CPU_XSMM_GEMM_H_

#include <string>

namespace dropk {

// Whether the fp32 projections (and attention's per-head products, through
// GemmOnThisThread) go through libxsmm: dropk was built
// with libxsmm, libxsmm generates AVX-512 code on this CPU (its AVX2 code
// lost to OpenBLAS; DROPK_CPU_GEMM=libxsmm asks for it there anyway), and
// the environment variable DROPK_CPU_GEMM is not "openblas" (the way to
// compare the two, or to step around a platform that forbids executable
// memory; a kernel libxsmm cannot generate falls back to OpenBLAS per tile
// anyway). Decided once per process.
bool UseXsmmGemm();

// Which library multiplies the fp32 projections and why, for Describe(): a
// DROPK_CPU_GEMM value that is neither choice is named there as ignored.
std::string XsmmGemmDescription();

// C (M,N) = A (M,K) · W (N,K)^T + bias (N, added to every row; may be
// null). Row major with leading dimensions lda, ldw, ldc: a projection's
// forward. The bias is added to each tile while it is in cache, not in a
// pass of its own. Opens its own OpenMP parallel region; call it from
// outside one. Requires UseXsmmGemm().
void XsmmGemmTransposedB(int M, int N, int K, const float* A, int lda, const float* W, int ldw,
                         const float* bias, float* C, int ldc);

// C (M,N) = A (M,K) · B (K,N), plus C's old value when accumulate. As above.
void XsmmGemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
              bool accumulate, float* C, int ldc);

// C (M,N) = A^T · B with A stored (K,M) and B (K,N), plus C's old value when
// accumulate: the weight gradient, whose K (tokens) is long. As above.
void XsmmGemmTransposedA(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                         bool accumulate, float* C, int ldc);

// c (rows,cols) = a (rows,depth) · b (depth,cols), plus c's old value when
// accumulate; row major with leading dimensions lda, ldb, ldc, and a stored
// transposed (depth,rows) when a_transposed. Runs on the calling thread
// alone: call it inside a parallel region, one product per thread (the
// small per-head products of attention). libxsmm's kernel for the shape when
// UseXsmmGemm() and libxsmm generates one, else single-threaded OpenBLAS
// (which an OpenMP build runs on the caller inside a parallel region). The
// sum over depth is in one fixed order for a given shape either way.
void GemmOnThisThread(bool a_transposed, int rows, int cols, int depth, const float* a, int lda,
                      const float* b, int ldb, bool accumulate, float* c, int ldc);

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_XSMM_GEMM_H_
