// The bf16 tensor-core flash attention kernels: __global__ wrappers around
// the bodies of flash_bf16_body.h, and their launchers (launch.h).
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>

#include "cuda/device_util.cuh"
#include "cuda/flash_bf16_body.h"
#include "cuda/launch.h"

namespace dropk::cuda {
namespace {

namespace fb = flash_bf16;

// Shared memory of a block: 32-bit words, 16-byte aligned.
__device__ __forceinline__ uint32_t* BlockShared() {
  extern __shared__ __align__(16) uint32_t shared_words[];
  return shared_words;
}

__device__ __forceinline__ ThreadCoord Here() {
  return ThreadCoord{static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x),
                     static_cast<int>(blockIdx.y)};
}

template <int HS>
__global__ void __launch_bounds__(fb::kBlockThreads) FlashBf16ForwardKernel(fb::Params p) {
  fb::Forward<HS>(p, Here(), BlockShared());
}

template <int HS>
__global__ void __launch_bounds__(fb::kBlockThreads) FlashBf16BackwardKvKernel(fb::Params p) {
  fb::BackwardKv<HS>(p, Here(), BlockShared());
}

template <int HS>
__global__ void __launch_bounds__(fb::kBlockThreads) FlashBf16BackwardQKernel(fb::Params p) {
  fb::BackwardQ<HS>(p, Here(), BlockShared());
}

fb::Params ParamsOf(const float* qkv, int T, int C, int NH, const SiteDropout& d) {
  fb::Params p;
  p.qkv = qkv;
  p.T = T;
  p.C = C;
  p.NH = NH;
  p.scale = 1.0f / std::sqrt(static_cast<float>(C / NH));
  p.dropout = d;
  return p;
}

dim3 GridOf(int B, int T, int NH) { return dim3(B * NH, (T + fb::kTile - 1) / fb::kTile); }

template <int HS>
cudaError_t Forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                    const SiteDropout& d, cudaStream_t stream) {
  fb::Params p = ParamsOf(qkv, T, C, NH, d);
  p.out = out;
  p.lse = lse;
  FlashBf16ForwardKernel<HS>
      <<<GridOf(B, T, NH), fb::kBlockThreads, fb::ForwardSharedBytes<HS>(), stream>>>(p);
  return cudaGetLastError();
}

template <int HS>
cudaError_t Backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                     const float* lse, float* delta, int B, int T, int C, int NH,
                     const SiteDropout& d, cudaStream_t stream) {
  cudaError_t rc = FlashAttentionDelta(delta, dout, out, B, T, C, NH, stream);
  if (rc != cudaSuccess) return rc;
  fb::Params p = ParamsOf(qkv, T, C, NH, d);
  p.lse = const_cast<float*>(lse);  // read only in backward
  p.dout = dout;
  p.delta = delta;
  p.dqkv = dqkv;
  FlashBf16BackwardKvKernel<HS>
      <<<GridOf(B, T, NH), fb::kBlockThreads, fb::BackwardKvSharedBytes<HS>(), stream>>>(p);
  FlashBf16BackwardQKernel<HS>
      <<<GridOf(B, T, NH), fb::kBlockThreads, fb::BackwardQSharedBytes<HS>(), stream>>>(p);
  return cudaGetLastError();
}

static_assert(fb::BackwardKvSharedBytes<64>() == 37376, "the size launch.h promises");
static_assert(fb::BackwardKvSharedBytes<64>() <= 48 * 1024, "no opt-in shared memory needed");
// FlashBf16AttentionSharedBytes gives the dk/dv kernel's bytes as the most
// any of the three needs.
template <int HS>
constexpr bool KvKernelNeedsTheMost() {
  return fb::BackwardKvSharedBytes<HS>() >= fb::ForwardSharedBytes<HS>() &&
         fb::BackwardKvSharedBytes<HS>() >= fb::BackwardQSharedBytes<HS>();
}
static_assert(KvKernelNeedsTheMost<16>() && KvKernelNeedsTheMost<32>() &&
              KvKernelNeedsTheMost<64>());

}  // namespace

size_t FlashBf16AttentionSharedBytes(int hs) {
  switch (hs) {
    case 16: return fb::BackwardKvSharedBytes<16>();
    case 32: return fb::BackwardKvSharedBytes<32>();
    case 64: return fb::BackwardKvSharedBytes<64>();
  }
  return 0;
}

cudaError_t FlashBf16AttentionForward(float* out, float* saved, const float* qkv, int B, int T,
                                      int C, int NH, const SiteDropout& d, cudaStream_t stream) {
  if (static_cast<size_t>(B) * T == 0) return cudaGetLastError();
  return WithFlashHeadSize(C / NH, [&](auto hs) {
    return Forward<decltype(hs)::value>(out, saved, qkv, B, T, C, NH, d, stream);
  });
}

cudaError_t FlashBf16AttentionBackward(float* dqkv, const float* dout, const float* qkv,
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
