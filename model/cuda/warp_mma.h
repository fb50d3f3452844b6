// The warp-level primitives of the bf16 flash kernels (flash_bf16_body.h):
// one m16n8k16 bf16 tensor-core product, two shuffles, the block barrier and
// the bf16 pair packing. Under nvcc they are the GPU's instructions. In host
// C++ they are only declared: tests/support/warp_emulator.cc defines them by
// running every thread of a block as a host thread, so the kernels' fragment
// and lane arithmetic is tested on machines without a GPU. Private to
// model/cuda/.
//
// Fragment layouts are PTX's for mma.m16n8k16 with .bf16 inputs (PTX ISA,
// "Matrix Fragments for mma.m16n8k16 with floating point type"), where lane
// = 4 * g + c (g = lane / 4, the group; c = lane % 4, the thread in it):
//   A (16 x 16, row-major), 4 words of two bf16 (low half first):
//     a[0] = A[g][2c..2c+1]      a[1] = A[g+8][2c..2c+1]
//     a[2] = A[g][2c+8..2c+9]    a[3] = A[g+8][2c+8..2c+9]
//   B (16 x 8, k by n), 2 words:  b[0] = B[2c..2c+1][g]  b[1] = B[2c+8..2c+9][g]
//   C, D (16 x 8, fp32):          c[0..1] = C[g][2c..2c+1]  c[2..3] = C[g+8][2c..2c+1]
// So a C fragment pair (n-tiles 2j and 2j+1) is, packed, the A fragment of
// the next product's 16 k: the scores' registers feed the second product
// without a trip through shared memory.
#ifndef DROPK_MODEL_CUDA_WARP_MMA_H_
#define DROPK_MODEL_CUDA_WARP_MMA_H_

#include <cmath>
#include <cstdint>
#include <cstring>

// DROPK_WARP_FN marks the primitives and the kernel bodies built on them;
// DROPK_UNROLL asks nvcc to unroll the loop that follows (fragment arrays
// must stay in registers), and is nothing to a host compiler.
#if defined(__CUDACC__)
#include <cuda_bf16.h>
#define DROPK_WARP_FN __device__ __forceinline__
#define DROPK_UNROLL _Pragma("unroll")
#else
#define DROPK_WARP_FN inline
#define DROPK_UNROLL
#endif

namespace dropk::cuda {

// Where the calling thread runs: its index in the block and the block's grid
// coordinates.
struct ThreadCoord {
  int thread;
  int block_x;
  int block_y;
};

// Two floats rounded to the nearest-even bf16 (NaN stays NaN), packed lo in
// the low half: the order an A or B fragment word holds two elements.
DROPK_WARP_FN uint32_t PackBf16Pair(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t word;
  memcpy(&word, &v, sizeof(word));
  return word;
#else
  const auto round = [](float f) -> uint32_t {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;  // quiet NaN
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  };
  return round(lo) | (round(hi) << 16);
#endif
}

// e^x through the GPU's fast exponential (__expf: ex2.approx, a few ulp), or
// std::exp on the host; both give 0 at -inf.
DROPK_WARP_FN float FastExp(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  return std::exp(x);
#endif
}

#if defined(__CUDACC__)

// d (a C fragment) += A * B over one 16 x 8 x 16 step, fp32 accumulation.
// Every lane of the warp calls it together.
DROPK_WARP_FN void MmaBf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// v of the lane whose index is this lane's xor mask; all lanes call it.
DROPK_WARP_FN float ShflXor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
DROPK_WARP_FN uint32_t ShflXor(uint32_t v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask);
}
// v of lane src (0..31); all lanes call it, each with its own src.
DROPK_WARP_FN uint32_t ShflIdx(uint32_t v, int src) { return __shfl_sync(0xffffffffu, v, src); }
// Every thread of the block waits here for all the others; shared-memory
// writes before it are seen after it.
DROPK_WARP_FN void SyncBlock() { __syncthreads(); }

#else  // host: defined by the warp emulator (tests/support/warp_emulator.cc)

void MmaBf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
float ShflXor(float v, int mask);
uint32_t ShflXor(uint32_t v, int mask);
uint32_t ShflIdx(uint32_t v, int src);
void SyncBlock();

#endif

}  // namespace dropk::cuda

#endif  // DROPK_MODEL_CUDA_WARP_MMA_H_
