// Device helpers shared by the .cu files of model/cuda/: warp and block
// reductions in a fixed order, launch-size arithmetic, and the dropout scales
// of four consecutive elements from one Philox block. Private to model/cuda/.
#ifndef DROPK_MODEL_CUDA_DEVICE_UTIL_CUH_
#define DROPK_MODEL_CUDA_DEVICE_UTIL_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cuda/launch.h"
#include "model/dropout.h"
#include "model/philox.h"

namespace dropk::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;           // threads per block of the elementwise kernels
constexpr size_t kMaxBlocks = 1 << 20;  // grid cap; kernels loop over the rest (grid stride)

// Blocks to cover n items at per_block items per block, at least 1, capped.
inline unsigned BlocksFor(size_t n, size_t per_block) {
  size_t blocks = (n + per_block - 1) / per_block;
  if (blocks == 0) blocks = 1;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return static_cast<unsigned>(blocks);
}

// fn(std::integral_constant<int, HS>{}) for hs = HS of 16, 32 or 64, the
// flash kernels' head sizes (a template argument each); cudaErrorInvalidValue
// for any other.
template <typename Fn>
cudaError_t WithFlashHeadSize(int hs, Fn&& fn) {
  switch (hs) {
    case 16: return fn(std::integral_constant<int, 16>{});
    case 32: return fn(std::integral_constant<int, 32>{});
    case 64: return fn(std::integral_constant<int, 64>{});
  }
  return cudaErrorInvalidValue;
}

// Butterfly reductions: every lane ends with the result; the order of the
// additions is fixed by the lane pattern, so the result is reproducible.
__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ __forceinline__ double WarpSum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// Sum (or max) over a block whose size is a multiple of 32 (at most 1024);
// every thread gets the result. `shared` holds at least 33 values. All
// threads of the block must call it.
template <typename T, bool kMax>
__device__ __forceinline__ T BlockReduce(T v, T* shared) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  if constexpr (kMax) {
    v = WarpMax(v);
  } else {
    v = WarpSum(v);
  }
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? shared[lane] : (kMax ? static_cast<T>(-INFINITY) : static_cast<T>(0));
    if constexpr (kMax) {
      w = WarpMax(w);
    } else {
      w = WarpSum(w);
    }
    if (lane == 0) shared[32] = w;
  }
  __syncthreads();
  const T result = shared[32];
  __syncthreads();  // shared may be reused by the caller's next reduction
  return result;
}

// The dropout scales of flat elements [f0, f0 + 4) of a (B, per_sample)
// tensor (f0 a multiple of 4): 1/(1-p) where kept, 0 where dropped, 1 when
// the site has no dropout. The same decisions as the CPU's DropoutScales:
// element e of (stream, site, step) is word e % 4 of Philox block e / 4.
__device__ __forceinline__ void DropoutScales4(const SiteDropout& d, uint64_t per_sample,
                                               uint64_t f0, float s[4]) {
  if (!(d.p > 0.0f)) {
    s[0] = s[1] = s[2] = s[3] = 1.0f;
    return;
  }
  if (!d.plan.per_sample || per_sample % 4 == 0) {
    // The four share one sample, and their addresses one Philox block.
    const uint64_t b = d.plan.per_sample ? f0 / per_sample : 0;
    const DropoutAddress a =
        DropoutAddressOf(d.plan, static_cast<int>(b), per_sample, f0 - b * per_sample);
    const Philox4x32Block r =
        Philox(d.plan.seed, static_cast<uint32_t>(a.element >> 2), a.stream, d.site, d.plan.step);
#pragma unroll
    for (int w = 0; w < 4; ++w) s[w] = r.v[w] < d.threshold ? d.keep_scale : 0.0f;
    return;
  }
  // A sample boundary may fall inside the four: one decision at a time.
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    const uint64_t f = f0 + w;
    const uint64_t b = f / per_sample;
    const DropoutAddress a =
        DropoutAddressOf(d.plan, static_cast<int>(b), per_sample, f - b * per_sample);
    s[w] = DropoutKeep(d.plan.seed, a.stream, d.site, d.plan.step, a.element, d.threshold)
               ? d.keep_scale
               : 0.0f;
  }
}

}  // namespace dropk::cuda

#endif  // DROPK_MODEL_CUDA_DEVICE_UTIL_CUH_
