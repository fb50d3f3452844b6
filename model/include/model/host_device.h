// DROPK_HOST_DEVICE marks a function that both the CPU kernels (compiled by
// the host C++ compiler) and the CUDA kernels (compiled by nvcc) call, so the
// two backends share one definition of the per-element arithmetic: Philox,
// the dropout keep decision, GELU, LayerNorm, the AdamW update. Such a
// function uses only plain float/integer arithmetic and the C math functions
// that exist on both sides (tanhf, sqrtf, expf).
#ifndef DROPK_MODEL_HOST_DEVICE_H_
#define DROPK_MODEL_HOST_DEVICE_H_

#if defined(__CUDACC__)
#define DROPK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DROPK_HOST_DEVICE inline
#endif

#endif  // DROPK_MODEL_HOST_DEVICE_H_
