// CudaKernels: device memory, the stream and its events, matrix products
// through cuBLASLt (projections) and cuBLAS strided-batched GEMMs
// (attention), and the launches of the kernels in model/cuda/*.cu.
#include "cuda/cuda_kernels.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/device_error.h"
#include "cuda/launch.h"
#include "kernel_math.h"

namespace dropk {
namespace {

using cuda::MakeSiteDropout;
using cuda::SiteDropout;

constexpr size_t kLtWorkspaceBytes = kCudaLtWorkspaceBytes;

// The compute type of a product of fp32 operands. kBf16's projections do
// not come here: they hand cuBLAS bf16 operands (see CudaKernels::Gemm),
// because CUBLAS_COMPUTE_32F_FAST_16BF on fp32 operands ran at TF32's speed
// with TF32's results on an H200 (bench/GPU_NOTES.md). Attention's products
// stay on fp32 operands in TF32 under kBf16: rounding the T x T
// probabilities and their gradient to bf16 first would move more bytes than
// the faster product saves.
cublasComputeType_t Fp32ComputeTypeOf(MatmulPrecision precision) {
  switch (precision) {
    case MatmulPrecision::kFp32: return CUBLAS_COMPUTE_32F;
    case MatmulPrecision::kTf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case MatmulPrecision::kBf16: return CUBLAS_COMPUTE_32F_FAST_TF32;
  }
  return CUBLAS_COMPUTE_32F;
}

// The compute type of a product whose operands are of type `operands`.
cublasComputeType_t ComputeTypeOf(MatmulPrecision precision, cudaDataType_t operands) {
  return operands == CUDA_R_16BF ? CUBLAS_COMPUTE_32F : Fp32ComputeTypeOf(precision);
}

// The largest power of two (up to 256) that divides p's address: cuBLASLt
// picks kernels by the alignment it is promised.
uint32_t AlignmentOf(const void* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// The readiness event of a CudaKernels' stream. A failing call throws
// DeviceError naming the event's device.
class CudaEvent final : public DeviceEvent {
 public:
  CudaEvent(cudaStream_t stream, int device) : stream_(stream), device_(device) {
    CUDA_CHECK_THROW(Op("CreateEvent"), cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
  }
  ~CudaEvent() override {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  void Record() override {
    CUDA_CHECK_THROW(Op("DeviceEvent::Record"), cudaEventRecord(event_, stream_));
  }
  void HostWait() override {
    CUDA_CHECK_THROW(Op("DeviceEvent::HostWait"), cudaEventSynchronize(event_));
  }
  void* native_handle() override { return event_; }

 private:
  std::string Op(const char* name) const { return absl::StrCat(name, " on cuda:", device_); }

  cudaStream_t stream_;
  int device_;
  cudaEvent_t event_ = nullptr;
};

// One cached cuBLASLt product: column-major D (m,n) = alpha op(A) op(B) +
// beta C (+ bias), with its descriptors and the heuristic's algorithm. A and
// B are of type `operands` (CUDA_R_32F or CUDA_R_16BF); C, D and the bias
// are fp32.
struct LtKey {
  cublasOperation_t ta, tb;
  int m, n, k, lda, ldb, ldc;
  bool bias;
  uint32_t align_a, align_b, align_c;
  cudaDataType_t operands;
  auto Tie() const {
    return std::tie(ta, tb, m, n, k, lda, ldb, ldc, bias, align_a, align_b, align_c, operands);
  }
  bool operator<(const LtKey& o) const { return Tie() < o.Tie(); }
};

struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;  // false: cuBLASLt offered none; use cublasGemmEx
};

class CudaKernels final : public Kernels {
 public:
  CudaKernels(int device, MatmulPrecision precision, bool flash_attention,
              bool flash_bf16_tensor_cores)
      : device_(device),
        precision_(precision),
        flash_attention_(flash_attention),
        flash_bf16_(FlashUsesBf16TensorCores(flash_bf16_tensor_cores, precision)) {}
  ~CudaKernels() override;
  CudaKernels(const CudaKernels&) = delete;
  CudaKernels& operator=(const CudaKernels&) = delete;

  // Creates the stream, the library handles and the workspace.
  absl::Status Init();

  Device device() const override { return Device::kCuda; }
  std::string Describe() const override { return description_; }

  void* Allocate(size_t bytes) override;
  void Free(void* ptr) override;
  void CopyToDevice(void* dst, const void* host_src, size_t bytes) override;
  void CopyToHost(void* host_dst, const void* src, size_t bytes) override;
  void Zero(void* dst, size_t bytes) override;
  void Synchronize() override {
    CUDA_CHECK_THROW(Op("Synchronize"), cudaStreamSynchronize(stream_));
  }
  std::unique_ptr<DeviceEvent> CreateEvent() override {
    return std::make_unique<CudaEvent>(stream_, device_);
  }

  void EmbeddingForward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                        int B, int T, int C, const DropoutPlan* dropout) override;
  void EmbeddingBackward(float* dwte, float* dwpe, float* dout, const int32_t* tokens, int B, int T,
                         int C, const DropoutPlan* dropout) override;
  void LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                        const float* b, int N, int C) override;
  void LayerNormBackward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                         const float* w, const float* mean, const float* rstd, int N,
                         int C) override;
  void MatmulForward(float* out, const float* inp, const float* w, const float* bias, int N, int C,
                     int OC) override;
  void MatmulBackward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                      const float* w, int N, int C, int OC, bool accumulate_dinp) override;
  void AttentionForward(float* out, float* probs, const float* qkv, int B, int T, int C, int NH,
                        int layer, const DropoutPlan* dropout) override;
  size_t AttentionSavedFloats(int B, int T, int C, int NH) const override {
    return UsesFlashAttention(C / NH) ? cuda::FlashAttentionSavedFloats(B, T, NH)
                                      : Kernels::AttentionSavedFloats(B, T, C, NH);
  }
  void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* out,
                         const float* probs, int B, int T, int C, int NH, int layer,
                         const DropoutPlan* dropout) override;
  void GeluForward(float* out, const float* inp, size_t n) override;
  void GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) override;
  void ResidualDropoutForward(float* out, const float* residual, const float* x, int B, int T,
                              int C, DropoutKind kind, int layer,
                              const DropoutPlan* dropout) override;
  void DropoutBackward(float* dx, const float* dout, int B, int T, int C, DropoutKind kind,
                       int layer, const DropoutPlan* dropout) override;
  void CrossEntropyForward(float* losses, float* lse, const float* logits, const int32_t* targets,
                           int N, int V) override;
  void CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets, int N, int V,
                            float scale) override;
  double SumSquares(const float* x, size_t n) override;
  void AdamW(float* params, const float* grads, float* m, float* v, size_t n,
             const AdamWArgs& args) override;
  void Scale(float* x, float alpha, size_t n) override;

 private:
  // Scratch buffers that ops reuse; each grows (cudaMalloc) only when a
  // larger shape than before arrives, i.e. in the first step.
  // kBf16Weight, kBf16Input and kBf16Output hold a projection's operands
  // rounded to bf16 (kBf16 only): its weight, its input and its output's
  // gradient.
  enum ScratchSlot {
    kQ,
    kK,
    kV,
    kHeads,
    kWeights,
    kDatt,
    kDq,
    kDk,
    kDv,
    kColumns,
    kBf16Weight,
    kBf16Input,
    kBf16Output,
    kDelta,
    kTokenSort,  // EmbeddingBackward's sort of positions by token
    kNumSlots
  };
  // Whether attention of head size hs runs through the flash kernels (see
  // KernelOptions::flash_attention).
  bool UsesFlashAttention(int hs) const {
    return FlashAttentionApplies(flash_attention_, precision_, hs, max_shared_per_block_,
                                 flash_bf16_);
  }
  // `op` is the calling op's name (__func__), for errors.
  float* Scratch(const char* op, ScratchSlot slot, size_t floats);
  // Column-major src (rows, cols), leading dimension ld, rounded to bf16
  // into `slot` as a dense matrix (leading dimension rows), for `op`.
  const uint16_t* ToBf16(const char* op, ScratchSlot slot, const float* src, size_t rows,
                         size_t cols, size_t ld);
  // q, k and v of qkv (B,T,3C) copied head by head, (B*NH,T,C/NH) each, into
  // the kQ, kK and kV slots, for `op`.
  struct Heads {
    float* q;
    float* k;
    float* v;
  };
  Heads QkvHeads(const char* op, const float* qkv, int B, int T, int C, int NH);
  // How a DeviceError names the op: "AttentionForward on cuda:0".
  std::string Op(const char* name) const { return absl::StrCat(name, " on cuda:", device_); }

  // Column-major D = alpha op(A) op(B) + beta D (+ bias broadcast over the n
  // columns), through cuBLASLt with a cached plan. A and B are fp32, or bf16
  // bits when `operands` is CUDA_R_16BF; D and the bias are fp32.
  void Gemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
            float alpha, const void* A, int lda, const void* B, int ldb, float beta, float* D,
            int ldd, const float* bias, cudaDataType_t operands = CUDA_R_32F);
  absl::StatusOr<LtPlan*> PlanFor(const LtKey& key);
  // Strided-batched column-major products through cuBLAS (attention).
  void BatchedGemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                   float alpha, const float* A, int lda, long long stride_a, const float* B,
                   int ldb, long long stride_b, float* C, int ldc, long long stride_c, int batch);

  const int device_;
  const MatmulPrecision precision_;
  const bool flash_attention_;
  const bool flash_bf16_;            // the flash kernels are the bf16 tensor-core ones
  size_t max_shared_per_block_ = 0;  // opt-in shared memory per block, bytes
  std::string description_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* lt_workspace_ = nullptr;
  double* sum_device_ = nullptr;  // 1 result + kSumSquaresBlocks partials
  double* sum_host_ = nullptr;    // pinned
  std::map<LtKey, LtPlan> plans_;
  struct ScratchBuffer {
    float* data = nullptr;
    size_t floats = 0;
  };
  ScratchBuffer scratch_[kNumSlots];
};

absl::Status CudaKernels::Init() {
  CUDA_CHECK(cudaSetDevice(device_));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  max_shared_per_block_ = prop.sharedMemPerBlockOptin;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&cublas_));
  CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  CUBLAS_CHECK(cublasLtCreate(&lt_));
  CUDA_CHECK(cudaMalloc(&lt_workspace_, kLtWorkspaceBytes));
  CUDA_CHECK(cudaMalloc(&sum_device_, sizeof(double) * (1 + cuda::kSumSquaresBlocks)));
  CUDA_CHECK(cudaMallocHost(&sum_host_, sizeof(double)));
  int runtime = 0;
  CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  description_ =
      absl::StrCat("cuda:", device_, " ", prop.name, " (sm_", prop.major, prop.minor, ", ",
                   prop.multiProcessorCount, " SMs, ",
                   absl::StrFormat("%.1f", prop.totalGlobalMem / 1073741824.0), " GiB), ",
                   MatmulPrecisionName(precision_), " matmuls, CUDA runtime ", runtime / 1000, ".",
                   (runtime % 1000) / 10, ", cuBLASLt ", cublasLtGetVersion());
  // The head sizes that go through the flash kernels on this GPU.
  std::string flash_sizes;
  for (int hs : {16, 32, 64}) {
    if (UsesFlashAttention(hs)) absl::StrAppend(&flash_sizes, flash_sizes.empty() ? "" : ", ", hs);
  }
  if (!flash_sizes.empty()) {
    absl::StrAppend(&description_, flash_bf16_ ? ", bf16 tensor-core" : "",
                    " flash attention at head sizes ", flash_sizes);
  } else if (flash_attention_) {
    absl::StrAppend(&description_, ", flash attention asked for, not used (",
                    precision_ == MatmulPrecision::kFp32 ? "fp32" : "too little shared memory",
                    ")");
  }
  return absl::OkStatus();
}

CudaKernels::~CudaKernels() {
  // Best effort: a destructor cannot report, and a lost device must not
  // turn shutdown into an abort.
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  for (auto& [key, plan] : plans_) {
    if (plan.a != nullptr) cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b != nullptr) cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c != nullptr) cublasLtMatrixLayoutDestroy(plan.c);
    if (plan.desc != nullptr) cublasLtMatmulDescDestroy(plan.desc);
  }
  for (ScratchBuffer& s : scratch_) cudaFree(s.data);
  cudaFree(lt_workspace_);
  cudaFree(sum_device_);
  if (sum_host_ != nullptr) cudaFreeHost(sum_host_);
  if (lt_ != nullptr) cublasLtDestroy(lt_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void* CudaKernels::Allocate(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t rc = cudaMalloc(&ptr, bytes == 0 ? 256 : bytes);
  if (rc != cudaSuccess) {
    size_t free_bytes = 0, total_bytes = 0;
    cudaGetLastError();  // clear the sticky-free error before asking
    cudaMemGetInfo(&free_bytes, &total_bytes);
    std::fprintf(stderr, "cuda:%d: cudaMalloc of %zu bytes failed: %s (%zu of %zu bytes free)\n",
                 device_, bytes, cudaGetErrorString(rc), free_bytes, total_bytes);
    throw std::bad_alloc();  // as the CPU's Allocate
  }
  // Zeroed and complete before the pointer is used on any stream.
  CUDA_CHECK_THROW(Op(__func__), cudaMemsetAsync(ptr, 0, bytes, stream_));
  CUDA_CHECK_THROW(Op(__func__), cudaStreamSynchronize(stream_));
  return ptr;
}

void CudaKernels::Free(void* ptr) {
  if (ptr == nullptr) return;
  // Best effort, never a throw or an abort: Free runs in destructors
  // (DeviceBuffer, Gpt), also while a DeviceError unwinds, when every call on
  // a broken context fails again; at process exit the runtime may already be
  // gone. The error that matters was reported by the op that met it.
  if (cudaFree(ptr) != cudaSuccess) cudaGetLastError();
}

void CudaKernels::CopyToDevice(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  // Callers reuse or free host_src as soon as this returns (InitWeights' local
  // vector, the checkpoint reader's chunk buffer), as the CPU's memcpy allows.
  // cudaMemcpyAsync does not promise that: from pageable memory it "might be
  // synchronous" (CUDA's API synchronization notes), from pinned memory it
  // is not. So wait for the copy; it is off the per-kernel hot path (a
  // step's inputs, weights at start).
  CUDA_CHECK_THROW(Op(__func__),
                   cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK_THROW(Op(__func__), cudaStreamSynchronize(stream_));
}

void CudaKernels::CopyToHost(void* host_dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK_THROW(Op(__func__),
                   cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK_THROW(Op(__func__), cudaStreamSynchronize(stream_));
}

void CudaKernels::Zero(void* dst, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK_THROW(Op(__func__), cudaMemsetAsync(dst, 0, bytes, stream_));
}

float* CudaKernels::Scratch(const char* op, ScratchSlot slot, size_t floats) {
  ScratchBuffer& s = scratch_[slot];
  if (floats > s.floats) {
    if (s.data != nullptr) {
      // Work queued on the stream may still read the old buffer.
      CUDA_CHECK_THROW(Op(op), cudaStreamSynchronize(stream_));
      CUDA_CHECK_THROW(Op(op), cudaFree(s.data));
      s.data = nullptr;
      s.floats = 0;
    }
    void* ptr = nullptr;
    const cudaError_t rc = cudaMalloc(&ptr, floats * sizeof(float));
    if (rc != cudaSuccess) {
      std::fprintf(stderr, "cuda:%d: cudaMalloc of %zu bytes of scratch failed: %s\n", device_,
                   floats * sizeof(float), cudaGetErrorString(rc));
      throw std::bad_alloc();
    }
    s.data = static_cast<float*>(ptr);
    s.floats = floats;
  }
  return s.data;
}

const uint16_t* CudaKernels::ToBf16(const char* op, ScratchSlot slot, const float* src, size_t rows,
                                    size_t cols, size_t ld) {
  // Two bf16 values to a float of the slot.
  uint16_t* dst = reinterpret_cast<uint16_t*>(Scratch(op, slot, (rows * cols + 1) / 2));
  CUDA_CHECK_THROW(Op(op), cuda::ToBf16(dst, src, rows, cols, ld, stream_));
  return dst;
}

absl::StatusOr<LtPlan*> CudaKernels::PlanFor(const LtKey& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return &it->second;
  LtPlan plan;
  CUBLAS_CHECK(
      cublasLtMatmulDescCreate(&plan.desc, ComputeTypeOf(precision_, key.operands), CUDA_R_32F));
  // Owned by plans_ from here on, so the destructor frees it even on failure.
  LtPlan& stored = plans_.emplace(key, plan).first->second;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(stored.desc, CUBLASLT_MATMUL_DESC_TRANSA, &key.ta,
                                              sizeof(key.ta)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(stored.desc, CUBLASLT_MATMUL_DESC_TRANSB, &key.tb,
                                              sizeof(key.tb)));
  if (key.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(stored.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                &epilogue, sizeof(epilogue)));
  }
  const bool na = key.ta == CUBLAS_OP_N, nb = key.tb == CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&stored.a, key.operands, na ? key.m : key.k,
                                          na ? key.k : key.m, key.lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&stored.b, key.operands, nb ? key.k : key.n,
                                          nb ? key.n : key.k, key.ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&stored.c, CUDA_R_32F, key.m, key.n, key.ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = kLtWorkspaceBytes;
  cublasStatus_t rc = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c},
  };
  for (const auto& [attribute, value] : alignments) {
    if (rc == CUBLAS_STATUS_SUCCESS) {
      rc = cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof(value));
    }
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (rc == CUBLAS_STATUS_SUCCESS) {
    rc = cublasLtMatmulAlgoGetHeuristic(lt_, stored.desc, stored.a, stored.b, stored.c, stored.c,
                                        pref, 1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  // NOT_SUPPORTED means no algorithm for this combination: fall back.
  if (rc != CUBLAS_STATUS_SUCCESS && rc != CUBLAS_STATUS_NOT_SUPPORTED) {
    CUBLAS_CHECK(rc);
  }
  stored.has_algo = rc == CUBLAS_STATUS_SUCCESS && found > 0;
  if (stored.has_algo) stored.algo = result.algo;
  return &stored;
}

void CudaKernels::Gemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                       int k, float alpha, const void* A, int lda, const void* B, int ldb,
                       float beta, float* D, int ldd, const float* bias, cudaDataType_t operands) {
  if (m == 0 || n == 0) return;
  // cuBLASLt's bias epilogue reads the bias in vectors: a bias that is not
  // 16-byte aligned (a tensor at an odd offset of the flat buffer) takes the
  // fallback.
  const bool bias_ok = bias == nullptr || AlignmentOf(bias) >= 16;
  LtPlan* p = nullptr;
  if (bias_ok) {
    const LtKey key{ta,
                    tb,
                    m,
                    n,
                    k,
                    lda,
                    ldb,
                    ldd,
                    bias != nullptr,
                    AlignmentOf(A),
                    AlignmentOf(B),
                    AlignmentOf(D),
                    operands};
    absl::StatusOr<LtPlan*> plan = PlanFor(key);
    if (!plan.ok()) {
      throw DeviceError(Op(op), absl::StrCat("cuBLASLt plan for a ", m, "x", n, "x", k,
                                             " product: ", plan.status().message()));
    }
    p = *plan;
  }
  if (p != nullptr && p->has_algo) {
    if (bias != nullptr) {
      CUBLAS_CHECK_THROW(
          Op(op), cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                 sizeof(bias)));
    }
    CUBLAS_CHECK_THROW(
        Op(op), cublasLtMatmul(lt_, p->desc, &alpha, A, p->a, B, p->b, &beta, D, p->c, D, p->c,
                               &p->algo, lt_workspace_, kLtWorkspaceBytes, stream_));
    return;
  }
  // cuBLASLt offered no kernel (an unusual alignment or shape), or the bias
  // is unaligned: the bias first, then cublasGemmEx adds the product onto it.
  if (bias != nullptr) {
    // Column-major D (m, n) with the bias along m is row-major (n, m).
    DROPK_CHECK(ldd == m) << "bias fallback needs a dense output";
    CUDA_CHECK_THROW(Op(op), cuda::BroadcastRows(D, bias, n, m, stream_));
    beta = 1.0f;
  }
  CUBLAS_CHECK_THROW(
      Op(op),
      cublasGemmEx(cublas_, ta, tb, m, n, k, &alpha, A, operands, lda, B, operands, ldb, &beta, D,
                   CUDA_R_32F, ldd, ComputeTypeOf(precision_, operands), CUBLAS_GEMM_DEFAULT));
}

void CudaKernels::BatchedGemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int m,
                              int n, int k, float alpha, const float* A, int lda,
                              long long stride_a, const float* B, int ldb, long long stride_b,
                              float* C, int ldc, long long stride_c, int batch) {
  const float beta = 0.0f;
  CUBLAS_CHECK_THROW(Op(op), cublasGemmStridedBatchedEx(
                                 cublas_, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, stride_a, B,
                                 CUDA_R_32F, ldb, stride_b, &beta, C, CUDA_R_32F, ldc, stride_c,
                                 batch, Fp32ComputeTypeOf(precision_), CUBLAS_GEMM_DEFAULT));
}

void CudaKernels::EmbeddingForward(float* out, const int32_t* tokens, const float* wte,
                                   const float* wpe, int B, int T, int C,
                                   const DropoutPlan* dropout) {
  const SiteDropout d = MakeSiteDropout(dropout, DropoutKind::kEmbedding, 0);
  CUDA_CHECK_THROW(Op(__func__),
                   cuda::EmbeddingForward(out, tokens, wte, wpe, B, T, C, d, stream_));
}

void CudaKernels::EmbeddingBackward(float* dwte, float* dwpe, float* dout, const int32_t* tokens,
                                    int B, int T, int C, const DropoutPlan* dropout) {
  const SiteDropout d = MakeSiteDropout(dropout, DropoutKind::kEmbedding, 0);
  if (d.p > 0.0f) {
    CUDA_CHECK_THROW(Op(__func__), cuda::DropoutApply(dout, nullptr, dout, B,
                                                      static_cast<uint64_t>(T) * C, d, stream_));
  }
  const size_t sort_bytes = cuda::EmbeddingBackwardScratchBytes(B * T);
  float* sort_scratch =
      Scratch(__func__, kTokenSort, (sort_bytes + sizeof(float) - 1) / sizeof(float));
  CUDA_CHECK_THROW(Op(__func__), cuda::EmbeddingBackward(dwte, dwpe, dout, tokens, B, T, C,
                                                         sort_scratch, stream_));
}

void CudaKernels::LayerNormForward(float* out, float* mean, float* rstd, const float* inp,
                                   const float* w, const float* b, int N, int C) {
  CUDA_CHECK_THROW(Op(__func__), cuda::LayerNormForward(out, mean, rstd, inp, w, b, N, C, stream_));
}

void CudaKernels::LayerNormBackward(float* dinp, float* dw, float* db, const float* dout,
                                    const float* inp, const float* w, const float* mean,
                                    const float* rstd, int N, int C) {
  float* scratch = Scratch(__func__, kColumns, 2 * cuda::ColumnSumScratchFloats(N, C));
  CUDA_CHECK_THROW(Op(__func__), cuda::LayerNormBackward(dinp, dw, db, dout, inp, w, mean, rstd, N,
                                                         C, scratch, stream_));
}

void CudaKernels::MatmulForward(float* out, const float* inp, const float* w, const float* bias,
                                int N, int C, int OC) {
  // Row-major out (N,OC) = inp (N,C) w (OC,C)^T is column-major
  // out^T (OC,N) = op(A) B with A = w seen as column-major (C,OC), transposed,
  // and B = inp seen as column-major (C,N); the bias runs along OC.
  if (precision_ == MatmulPrecision::kBf16) {
    const uint16_t* w16 = ToBf16(__func__, kBf16Weight, w, C, OC, C);
    const uint16_t* inp16 = ToBf16(__func__, kBf16Input, inp, C, N, C);
    Gemm(__func__, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, 1.0f, w16, C, inp16, C, 0.0f, out, OC, bias,
         CUDA_R_16BF);
    return;
  }
  Gemm(__func__, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, 1.0f, w, C, inp, C, 0.0f, out, OC, bias);
}

void CudaKernels::MatmulBackward(float* dinp, float* dw, float* dbias, const float* dout,
                                 const float* inp, const float* w, int N, int C, int OC,
                                 bool accumulate_dinp) {
  // The operands of both products, as given or (kBf16) rounded to bf16 once
  // each: dout is an operand of both.
  const void* w_op = w;
  const void* inp_op = inp;
  const void* dout_op = dout;
  cudaDataType_t operands = CUDA_R_32F;
  if (precision_ == MatmulPrecision::kBf16) {
    dout_op = ToBf16(__func__, kBf16Output, dout, OC, N, OC);
    inp_op = ToBf16(__func__, kBf16Input, inp, C, N, C);
    if (dinp != nullptr) w_op = ToBf16(__func__, kBf16Weight, w, C, OC, C);
    operands = CUDA_R_16BF;
  }
  if (dinp != nullptr) {
    // dinp (N,C) = dout (N,OC) w (OC,C): column-major dinp^T (C,N) = w^T (C,OC) dout^T (OC,N).
    Gemm(__func__, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, 1.0f, w_op, C, dout_op, OC,
         accumulate_dinp ? 1.0f : 0.0f, dinp, C, nullptr, operands);
  }
  // dw (OC,C) += dout^T inp: column-major dw^T (C,OC) += inp^T (C,N) dout (N,OC).
  Gemm(__func__, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, 1.0f, inp_op, C, dout_op, OC, 1.0f, dw, C,
       nullptr, operands);
  if (dbias != nullptr) {
    float* scratch = Scratch(__func__, kColumns, 2 * cuda::ColumnSumScratchFloats(N, OC));
    CUDA_CHECK_THROW(Op(__func__), cuda::ColumnSums(dbias, dout, N, OC, scratch, stream_));
  }
}

CudaKernels::Heads CudaKernels::QkvHeads(const char* op, const float* qkv, int B, int T, int C,
                                         int NH) {
  const int hs = C / NH;
  const size_t btc = static_cast<size_t>(B) * T * C;
  const Heads heads{Scratch(op, kQ, btc), Scratch(op, kK, btc), Scratch(op, kV, btc)};
  CUDA_CHECK_THROW(Op(op), cuda::RowsToHeads(heads.q, qkv, 3 * C, B, T, NH, hs, stream_));
  CUDA_CHECK_THROW(Op(op), cuda::RowsToHeads(heads.k, qkv + C, 3 * C, B, T, NH, hs, stream_));
  CUDA_CHECK_THROW(Op(op), cuda::RowsToHeads(heads.v, qkv + 2 * C, 3 * C, B, T, NH, hs, stream_));
  return heads;
}

void CudaKernels::AttentionForward(float* out, float* probs, const float* qkv, int B, int T, int C,
                                   int NH, int layer, const DropoutPlan* dropout) {
  const int hs = C / NH;
  const size_t btc = static_cast<size_t>(B) * T * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const SiteDropout d = MakeSiteDropout(dropout, DropoutKind::kAttentionProbs, layer);
  if (UsesFlashAttention(hs)) {
    CUDA_CHECK_THROW(Op(__func__),
                     flash_bf16_
                         ? cuda::FlashBf16AttentionForward(out, probs, qkv, B, T, C, NH, d, stream_)
                         : cuda::FlashAttentionForward(out, probs, qkv, B, T, C, NH, d, stream_));
    return;
  }
  const auto [q, k, v] = QkvHeads(__func__, qkv, B, T, C, NH);
  float* o = Scratch(__func__, kHeads, btc);
  const long long ths = static_cast<long long>(T) * hs, tt = static_cast<long long>(T) * T;
  // Row-major scores (T,T) = q k^T * scale, per (b, h): column-major
  // scores^T = k q^T.
  BatchedGemm(__func__, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, scale, k, hs, ths, q, hs, ths, probs, T,
              tt, B * NH);
  float* weights = probs;
  if (d.p > 0.0f) weights = Scratch(__func__, kWeights, static_cast<size_t>(B) * NH * tt);
  CUDA_CHECK_THROW(Op(__func__), cuda::SoftmaxForward(probs, weights, B, NH, T, d, stream_));
  // Row-major o (T,hs) = weights (T,T) v (T,hs): column-major o^T = v^T weights^T.
  BatchedGemm(__func__, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, 1.0f, v, hs, ths, weights, T, tt, o, hs,
              ths, B * NH);
  CUDA_CHECK_THROW(Op(__func__), cuda::HeadsToRows(out, C, o, B, T, NH, hs, stream_));
}

void CudaKernels::AttentionBackward(float* dqkv, const float* dout, const float* qkv,
                                    const float* out, const float* probs, int B, int T, int C,
                                    int NH, int layer, const DropoutPlan* dropout) {
  const int hs = C / NH;
  const size_t btc = static_cast<size_t>(B) * T * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const SiteDropout d = MakeSiteDropout(dropout, DropoutKind::kAttentionProbs, layer);
  if (UsesFlashAttention(hs)) {
    float* delta = Scratch(__func__, kDelta, static_cast<size_t>(B) * NH * T);
    const auto backward =
        flash_bf16_ ? cuda::FlashBf16AttentionBackward : cuda::FlashAttentionBackward;
    CUDA_CHECK_THROW(Op(__func__),
                     backward(dqkv, dout, qkv, out, probs, delta, B, T, C, NH, d, stream_));
    return;
  }
  const long long ths = static_cast<long long>(T) * hs, tt = static_cast<long long>(T) * T;
  const auto [q, k, v] = QkvHeads(__func__, qkv, B, T, C, NH);
  float* dout_heads = Scratch(__func__, kHeads, btc);
  float* datt = Scratch(__func__, kDatt, static_cast<size_t>(B) * NH * tt);
  float* dq = Scratch(__func__, kDq, btc);
  float* dk = Scratch(__func__, kDk, btc);
  float* dv = Scratch(__func__, kDv, btc);
  CUDA_CHECK_THROW(Op(__func__), cuda::RowsToHeads(dout_heads, dout, C, B, T, NH, hs, stream_));
  // The probabilities that multiplied v in forward, with the same mask.
  const float* weights = probs;
  if (d.p > 0.0f) {
    float* w = Scratch(__func__, kWeights, static_cast<size_t>(B) * NH * tt);
    CUDA_CHECK_THROW(Op(__func__), cuda::AttentionDropWeights(w, probs, B, NH, T, d, stream_));
    weights = w;
  }
  // dv (T,hs) = weights^T dout_h: column-major dv^T = dout_h^T weights.
  BatchedGemm(__func__, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, 1.0f, dout_heads, hs, ths, weights, T,
              tt, dv, hs, ths, B * NH);
  // d(weights) (T,T) = dout_h v^T: column-major = v dout_h^T.
  BatchedGemm(__func__, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, 1.0f, v, hs, ths, dout_heads, hs, ths,
              datt, T, tt, B * NH);
  CUDA_CHECK_THROW(Op(__func__), cuda::SoftmaxBackward(datt, probs, B, NH, T, d, stream_));
  // dq (T,hs) = scale * dscores k: column-major dq^T = k^T dscores^T.
  BatchedGemm(__func__, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, scale, k, hs, ths, datt, T, tt, dq, hs,
              ths, B * NH);
  // dk (T,hs) = scale * dscores^T q: column-major dk^T = q^T dscores.
  BatchedGemm(__func__, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, scale, q, hs, ths, datt, T, tt, dk, hs,
              ths, B * NH);
  CUDA_CHECK_THROW(Op(__func__), cuda::HeadsToRows(dqkv, 3 * C, dq, B, T, NH, hs, stream_));
  CUDA_CHECK_THROW(Op(__func__), cuda::HeadsToRows(dqkv + C, 3 * C, dk, B, T, NH, hs, stream_));
  CUDA_CHECK_THROW(Op(__func__), cuda::HeadsToRows(dqkv + 2 * C, 3 * C, dv, B, T, NH, hs, stream_));
}

void CudaKernels::GeluForward(float* out, const float* inp, size_t n) {
  CUDA_CHECK_THROW(Op(__func__), cuda::GeluForward(out, inp, n, stream_));
}

void CudaKernels::GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) {
  CUDA_CHECK_THROW(Op(__func__), cuda::GeluBackward(dinp, inp, dout, n, stream_));
}

void CudaKernels::ResidualDropoutForward(float* out, const float* residual, const float* x, int B,
                                         int T, int C, DropoutKind kind, int layer,
                                         const DropoutPlan* dropout) {
  const SiteDropout d = MakeSiteDropout(dropout, kind, layer);
  CUDA_CHECK_THROW(Op(__func__), cuda::DropoutApply(out, residual, x, B,
                                                    static_cast<uint64_t>(T) * C, d, stream_));
}

void CudaKernels::DropoutBackward(float* dx, const float* dout, int B, int T, int C,
                                  DropoutKind kind, int layer, const DropoutPlan* dropout) {
  const SiteDropout d = MakeSiteDropout(dropout, kind, layer);
  if (d.p == 0.0f && dx == dout) return;
  CUDA_CHECK_THROW(Op(__func__), cuda::DropoutApply(dx, nullptr, dout, B,
                                                    static_cast<uint64_t>(T) * C, d, stream_));
}

void CudaKernels::CrossEntropyForward(float* losses, float* lse, const float* logits,
                                      const int32_t* targets, int N, int V) {
  CUDA_CHECK_THROW(Op(__func__),
                   cuda::CrossEntropyForward(losses, lse, logits, targets, N, V, stream_));
}

void CudaKernels::CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets,
                                       int N, int V, float scale) {
  CUDA_CHECK_THROW(Op(__func__),
                   cuda::CrossEntropyBackward(logits, lse, targets, N, V, scale, stream_));
}

double CudaKernels::SumSquares(const float* x, size_t n) {
  CUDA_CHECK_THROW(Op(__func__), cuda::SumSquares(sum_device_, x, n, sum_device_ + 1, stream_));
  CUDA_CHECK_THROW(Op(__func__), cudaMemcpyAsync(sum_host_, sum_device_, sizeof(double),
                                                 cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK_THROW(Op(__func__), cudaStreamSynchronize(stream_));
  return *sum_host_;
}

void CudaKernels::AdamW(float* params, const float* grads, float* m, float* v, size_t n,
                        const AdamWArgs& args) {
  CUDA_CHECK_THROW(Op(__func__),
                   cuda::AdamW(params, grads, m, v, n, AdamWConstantsOf(args), stream_));
}

void CudaKernels::Scale(float* x, float alpha, size_t n) {
  CUDA_CHECK_THROW(Op(__func__), cuda::Scale(x, alpha, n, stream_));
}

}  // namespace

std::string NoCudaDeviceReason() {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  cudaGetLastError();  // do not leave the error for the next CUDA call
  if (rc == cudaSuccess && count > 0) return "";
  // The driver library is what a machine without an NVIDIA driver lacks;
  // CUDA then calls it an "insufficient" driver, which reads as "update it".
  void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (driver == nullptr) {
    return "no CUDA device: no NVIDIA driver on this machine (libcuda.so.1 not found)";
  }
  dlclose(driver);
  if (rc == cudaErrorInsufficientDriver) {
    int driver_version = 0, runtime_version = 0;
    cudaDriverGetVersion(&driver_version);
    cudaRuntimeGetVersion(&runtime_version);
    cudaGetLastError();
    return absl::StrCat("no CUDA device: the NVIDIA driver supports CUDA ", driver_version / 1000,
                        ".", driver_version % 1000 / 10, ", older than this build's CUDA ",
                        runtime_version / 1000, ".", runtime_version % 1000 / 10,
                        "; update the driver");
  }
  if (rc == cudaSuccess || rc == cudaErrorNoDevice) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    return visible != nullptr
               ? absl::StrCat("no CUDA device: none visible with CUDA_VISIBLE_DEVICES=\"", visible,
                              "\"")
               : std::string("no CUDA device: the NVIDIA driver sees no GPU");
  }
  return absl::StrCat("no CUDA device: cudaGetDeviceCount returned ", cudaGetErrorName(rc), " (",
                      cudaGetErrorString(rc), ")");
}

int CudaDeviceCountOrZero() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

std::array<uint8_t, 16> CudaDeviceUuidOrZero(int ordinal) {
  std::array<uint8_t, 16> uuid{};
  cudaDeviceProp prop;
  if (ordinal < 0 || ordinal >= CudaDeviceCountOrZero() ||
      cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess) {
    cudaGetLastError();
    return uuid;
  }
  static_assert(sizeof(prop.uuid.bytes) == 16);
  std::memcpy(uuid.data(), prop.uuid.bytes, uuid.size());
  return uuid;
}

bool FlashUsesBf16TensorCores(bool bf16_tensor_cores, MatmulPrecision precision) {
  return bf16_tensor_cores && precision == MatmulPrecision::kBf16;
}

bool FlashAttentionApplies(bool wanted, MatmulPrecision precision, int hs,
                           size_t max_shared_per_block, bool bf16_tensor_cores) {
  const size_t shared = FlashUsesBf16TensorCores(bf16_tensor_cores, precision)
                            ? cuda::FlashBf16AttentionSharedBytes(hs)
                            : cuda::FlashAttentionSharedBytes(hs);
  return wanted && precision != MatmulPrecision::kFp32 && cuda::FlashAttentionSupports(hs) &&
         shared <= max_shared_per_block;
}

bool CudaFlashAttentionAppliesOnDevice(const KernelOptions& options, int hs) {
  int shared = 0;
  if (options.cuda_device < 0 || options.cuda_device >= CudaDeviceCountOrZero() ||
      cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                             options.cuda_device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return FlashAttentionApplies(options.flash_attention, options.precision, hs,
                               static_cast<size_t>(shared), options.flash_bf16_tensor_cores);
}

double CudaFreeBytesOrNegative(int ordinal) {
  // No switching back afterwards: since CUDA 12 cudaSetDevice creates the
  // device's primary context at once, and the "previous" device of a thread
  // that never chose one is 0, so every rank whose GPU is not 0 left a
  // context (hundreds of MiB) on GPU 0 for the rest of the run, unseen by
  // the free memory GPU 0's own ranks had measured.
  if (ordinal < 0 || ordinal >= CudaDeviceCountOrZero() || cudaSetDevice(ordinal) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t rc = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return static_cast<double>(free_bytes);
}

absl::StatusOr<std::unique_ptr<Kernels>> MakeCudaKernels(const KernelOptions& options) {
  if (std::string reason = NoCudaDeviceReason(); !reason.empty()) {
    return absl::FailedPreconditionError(reason);
  }
  const int count = CudaDeviceCountOrZero();
  if (options.cuda_device < 0 || options.cuda_device >= count) {
    return absl::InvalidArgumentError(absl::StrCat("cuda device ", options.cuda_device,
                                                   " requested, but this machine has ", count,
                                                   " (ordinals 0..", count - 1, ")"));
  }
  if (std::string error = CublasLoadError(); !error.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("cuda: ", error));
  }
  auto kernels =
      std::make_unique<CudaKernels>(options.cuda_device, options.precision, options.flash_attention,
                                    options.flash_bf16_tensor_cores);
  if (absl::Status s = kernels->Init(); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("cuda device ", options.cuda_device, ": ", s.message()));
  }
  return std::unique_ptr<Kernels>(std::move(kernels));
}

}  // namespace dropk
