// OpenBLAS's sgemm as tiles fixed by the shape, one single-threaded call per
// tile, shared out over the OpenMP team: TiledSgemm's small tiles for small
// products on OpenBLAS's AVX-512 cores, FixedTileSgemm's larger ones for
// every other product OpenBLAS multiplies.
//
// TiledSgemm: small matrix products as fixed tiles of single-threaded sgemm
// calls, one tile per OpenMP task. OpenBLAS's AVX-512 builds (its SkylakeX, Cooperlake
// and Sapphire Rapids cores) multiply a call this small with their
// small-matrix kernels, which skip packing and threading; on the small
// products of a small model (nanoGPT's CPU recipe: 768 tokens, 128 wide)
// that beats one threaded sgemm call over the whole product, whose packing
// and team synchronisation dominate there. Used for the backward's two
// products (dinp and dw); the forward's gained nothing measurable (its
// right operand, w^T, would need a transposed copy for the fast kernels).
// Hand-written only as a partition of the work; every product is still
// OpenBLAS's.
//
// The tiles are fixed by the shape alone, and each tile sums its K in the
// same fixed chunks, in order, on one thread: results do not depend on the
// team size (the CPU kernels' promise; GptTeamSizeTest).
// Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_TILED_SGEMM_H_
#define DROPK_MODEL_CPU_TILED_SGEMM_H_

#include <cstddef>

namespace dropk {

// Whether a product of M x N x K multiply-adds should go through TiledSgemm:
// small enough that one threaded sgemm is overhead-bound, and this process's
// OpenBLAS has the small-matrix kernels (on other cores, Haswell's say, the
// tiles are slower).
bool UseTiledSgemm(int M, int N, int K);

// C (M,N) = beta * C + op(A) · B, row-major: op(A) is A (M,K), or with
// transpose_a A is stored (K,M) and read transposed; B is (K,N). Opens its
// own OpenMP parallel region; call it from outside one.
void TiledSgemm(bool transpose_a, int M, int N, int K, const float* A, int lda, const float* B,
                int ldb, float beta, float* C, int ldc);

// C (M,N) = beta * C + op(A) · op(B), row-major, op(X) being X or X stored
// transposed: OpenBLAS's sgemm with the output split into tiles fixed by
// the shape alone (1,024 x 1,024 outputs, halved down to 128 x 256 while
// the product has fewer than 8 tiles), one single-threaded call per tile
// over the whole K, the tiles shared out over the OpenMP
// team. A single threaded sgemm call gives results that depend on its
// thread count: OpenBLAS 0.3.21's Haswell kernels (its choice on AVX2
// CPUs, or wherever OPENBLAS_CORETYPE=Haswell) sum some outputs in another
// order when the rows are split among more threads (tests/model/cpu_matmul_test.cc's team
// size tests). This is the products' path where neither libxsmm nor
// TiledSgemm takes them. Opens its own OpenMP parallel region; call it from
// outside one.
void FixedTileSgemm(bool transpose_a, bool transpose_b, int M, int N, int K, const float* A,
                    int lda, const float* B, int ldb, float beta, float* C, int ldc);

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_TILED_SGEMM_H_
