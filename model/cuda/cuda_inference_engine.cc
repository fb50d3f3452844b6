#include "cuda/cuda_inference_engine.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/device_error.h"
#include "cuda/cuda_kernels.h"
#include "cuda/engine_memory.h"
#include "cuda/inference_launch.h"
#include "cuda/launch.h"
#include "kv_cache_engine.h"

namespace dropk {
namespace {

// Throws DeviceError with the step's part and CUDA's error: a failure
// mid-step cannot be recovered inside the engine (a sticky error leaves the
// context unusable), and the scheduler turns it into failed requests and an
// unhealthy server rather than a dead process.
void ThrowIfFailed(cudaError_t rc, const char* what) {
  if (rc == cudaSuccess) return;
  cudaGetLastError();
  throw DeviceError(absl::StrCat("cuda inference engine: ", what),
                    absl::StrCat(cudaGetErrorName(rc), " (", cudaGetErrorString(rc), ")"));
}

// One cudaMalloc'd array, freed with the engine.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  cudaError_t Allocate(size_t count) {
    return cudaMalloc(reinterpret_cast<void**>(&ptr_), std::max<size_t>(count, 1) * sizeof(T));
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
};

class CudaInferenceEngine final : public KvCacheEngine {
 public:
  CudaInferenceEngine(const GptConfig& config, int device, int max_slots, bool use_graphs)
      : KvCacheEngine(config, max_slots),
        layout_(config),
        device_(device),
        use_graphs_(use_graphs),
        decode_graphs_(static_cast<size_t>(max_slots) + 1, nullptr) {}

  ~CudaInferenceEngine() override {
    if (stream_ != nullptr) {
      cudaSetDevice(device_);
      cudaStreamSynchronize(stream_);
      for (cudaGraphExec_t graph : decode_graphs_) {
        if (graph != nullptr) cudaGraphExecDestroy(graph);
      }
      cudaStreamDestroy(stream_);
    }
    if (host_meta_ != nullptr) cudaFreeHost(host_meta_);
    if (host_logits_ != nullptr) cudaFreeHost(host_logits_);
  }

  // Allocates everything and uploads the weights; the one place that can
  // fail without throwing.
  absl::Status Init(std::span<const float> host_params) {
    const size_t L = config_.n_layer, S = max_slots(), T = config_.block_size, C = config_.n_embd,
                 V = config_.vocab_size, R = max_rows();
    const size_t cache = L * S * T * C;
    CUDA_CHECK(cudaSetDevice(device_));
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const cuda::EngineMemory wanted =
        cuda::EngineMemoryFor(config_, host_params.size(), max_slots(), use_graphs_);
    if (wanted.total() > free_bytes) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "cuda device %d: %d slots x %d positions need %.2f GiB (%s), and the GPU has %.2f GiB "
          "free; lower --max-batch",
          device_, max_slots(), config_.block_size, wanted.total() / 1073741824.0,
          wanted.Describe(), free_bytes / 1073741824.0));
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(params_.Allocate(host_params.size()));
    CUDA_CHECK(k_cache_.Allocate(cache));
    CUDA_CHECK(v_cache_.Allocate(cache));
    CUDA_CHECK(x_.Allocate(R * C));
    CUDA_CHECK(ln_.Allocate(R * C));
    CUDA_CHECK(atty_.Allocate(R * C));
    CUDA_CHECK(gathered_.Allocate(R * C));
    CUDA_CHECK(qkv_.Allocate(R * 3 * C));
    CUDA_CHECK(fch_.Allocate(R * 4 * C));
    CUDA_CHECK(mean_.Allocate(R));
    CUDA_CHECK(rstd_.Allocate(R));
    CUDA_CHECK(logits_.Allocate(std::max<size_t>(S, 1) * V));
    CUDA_CHECK(meta_.Allocate(4 * R));
    CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_meta_), 4 * R * sizeof(int32_t)));
    CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_logits_),
                              std::max<size_t>(S, 1) * V * sizeof(float)));
    CUDA_CHECK(cudaMemcpyAsync(params_.get(), host_params.data(),
                               host_params.size() * sizeof(float), cudaMemcpyHostToDevice,
                               stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

 private:
  // The plan lives in pinned memory, four arrays of max_rows() that one
  // copy uploads to meta_.
  RowPlan Plan() override {
    const int R = max_rows();
    return {host_meta_, host_meta_ + R, host_meta_ + 2 * R, host_meta_ + 3 * R};
  }

  // The plan's rows through the model: K and V into the caches, then the
  // logits of the head rows copied into host_logits_ (H,V). A decode-shaped
  // step (every row wants its logits, R == H) replays the step's launches as
  // one CUDA graph for that R, captured the first time R comes; any other
  // step, or every step once a capture failed, launches them one by one.
  // Both run the same kernels on the same arguments, so the same bits.
  const float* Step(int R, int H) override {
    ThrowIfFailed(cudaSetDevice(device_), "cudaSetDevice");
    if (!(use_graphs_ && R == H && R < static_cast<int>(decode_graphs_.size()) &&
          LaunchDecodeGraph(R))) {
      EnqueueStep(R, H);
    }
    ThrowIfFailed(cudaStreamSynchronize(stream_), "the step");
    return host_logits_;
  }

  // Launches the graph of an R-row decode step, capturing it first if this
  // is the first step of R rows. False (after one line on stderr) where
  // capture or instantiation failed, so the caller launches the step
  // itself; after kMaxFailedCaptures such failures graphs are off for the
  // engine's life. A failed graph launch throws like any failed launch.
  bool LaunchDecodeGraph(int R) {
    cudaGraphExec_t& graph = decode_graphs_[R];
    if (graph == nullptr) {
      std::string why = CaptureStep(R, &graph);
      if (!why.empty()) {
        const bool give_up = ++failed_captures_ >= kMaxFailedCaptures;
        std::fprintf(stderr,
                     "dropk: cuda inference engine: CUDA graph capture of a %d-row step failed "
                     "(%s); %s\n",
                     R, why.c_str(),
                     give_up ? "launching each kernel instead from now on"
                             : "this step launches each kernel, the next such step captures again");
        if (give_up) use_graphs_ = false;
        return false;
      }
    }
    ThrowIfFailed(cudaGraphLaunch(graph, stream_), "cudaGraphLaunch (the step's graph)");
    return true;
  }

  // Records EnqueueStep(R, R) on the stream into *graph (instantiated).
  // Returns why it could not, empty on success; the stream is out of
  // capture mode either way.
  std::string CaptureStep(int R, cudaGraphExec_t* graph) {
    cudaError_t rc = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
    if (rc != cudaSuccess) {
      cudaGetLastError();
      return absl::StrCat("cudaStreamBeginCapture: ", cudaGetErrorString(rc));
    }
    std::string why;
    try {
      EnqueueStep(R, R);
    } catch (const std::exception& e) {  // DeviceError, or anything else: end the capture first
      why = e.what();
    }
    cudaGraph_t captured = nullptr;
    rc = cudaStreamEndCapture(stream_, &captured);
    if (why.empty() && rc != cudaSuccess) {
      why = absl::StrCat("cudaStreamEndCapture: ", cudaGetErrorString(rc));
    }
    if (why.empty()) {
      rc = cudaGraphInstantiate(graph, captured, 0);
      if (rc != cudaSuccess) {
        *graph = nullptr;
        why = absl::StrCat("cudaGraphInstantiate: ", cudaGetErrorString(rc));
      }
    }
    if (captured != nullptr) cudaGraphDestroy(captured);
    if (!why.empty()) cudaGetLastError();
    return why;
  }

  // Enqueues the whole step on stream_: the plan's upload, every kernel, and
  // the logits' copy to host_logits_. Does not wait for it.
  void EnqueueStep(int R, int H) {
    const int L = config_.n_layer, C = config_.n_embd, NH = config_.n_head, V = config_.vocab_size,
              T = config_.block_size;
    const size_t layer_cache = static_cast<size_t>(max_slots()) * T * C;
    ThrowIfFailed(cudaMemcpyAsync(meta_.get(), host_meta_, 4 * max_rows() * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream_),
                  "uploading the step's rows");
    const int32_t* tokens = meta_.get();
    const int32_t* slots = meta_.get() + max_rows();
    const int32_t* positions = meta_.get() + 2 * max_rows();
    const int32_t* head_rows = meta_.get() + 3 * max_rows();
    float* p = params_.get();
    float* x = x_.get();
    ThrowIfFailed(
        cuda::EmbedRows(x, tokens, positions, p + layout_.wte(), p + layout_.wpe(), R, C, stream_),
        "EmbedRows");
    for (int l = 0; l < L; ++l) {
      const BlockTensors w = layout_.Block(p, l);
      float* k_cache = k_cache_.get() + l * layer_cache;
      float* v_cache = v_cache_.get() + l * layer_cache;
      LayerNorm(ln_.get(), x, w.ln1_w, w.ln1_b, R);
      ThrowIfFailed(cuda::RowMatmul(qkv_.get(), ln_.get(), w.qkv_w, w.qkv_b, R, C, 3 * C, stream_),
                    "RowMatmul (qkv)");
      ThrowIfFailed(
          cuda::WriteKvCache(k_cache, v_cache, qkv_.get(), slots, positions, R, C, T, stream_),
          "WriteKvCache");
      ThrowIfFailed(cuda::CachedAttention(atty_.get(), qkv_.get(), k_cache, v_cache, slots,
                                          positions, R, C, NH, T, stream_),
                    "CachedAttention");
      // The residual adds and the GELU ride in the products' epilogues (the
      // same bits as separate kernels, inference_launch.h): 8 launches per
      // layer, not 11, which is what a small decode step's time is made of.
      ThrowIfFailed(cuda::RowMatmul(x, atty_.get(), w.attproj_w, w.attproj_b, R, C, C, stream_,
                                    cuda::RowEpilogue::kAddToOut),
                    "RowMatmul (attention projection + residual)");
      LayerNorm(ln_.get(), x, w.ln2_w, w.ln2_b, R);
      ThrowIfFailed(cuda::RowMatmul(fch_.get(), ln_.get(), w.fc_w, w.fc_b, R, C, 4 * C, stream_,
                                    cuda::RowEpilogue::kGelu),
                    "RowMatmul (fc + GELU)");
      ThrowIfFailed(cuda::RowMatmul(x, fch_.get(), w.fcproj_w, w.fcproj_b, R, 4 * C, C, stream_,
                                    cuda::RowEpilogue::kAddToOut),
                    "RowMatmul (fc projection + residual)");
    }
    // The final LayerNorm and the LM head (tied to wte) for the wanted rows.
    ThrowIfFailed(cuda::GatherRows(gathered_.get(), x, head_rows, H, C, stream_), "GatherRows");
    LayerNorm(ln_.get(), gathered_.get(), p + layout_.lnf_w(), p + layout_.lnf_b(), H);
    ThrowIfFailed(
        cuda::RowMatmul(logits_.get(), ln_.get(), p + layout_.wte(), nullptr, H, C, V, stream_),
        "RowMatmul (logits)");
    ThrowIfFailed(
        cudaMemcpyAsync(host_logits_, logits_.get(), static_cast<size_t>(H) * V * sizeof(float),
                        cudaMemcpyDeviceToHost, stream_),
        "copying the logits to the host");
  }

  void LayerNorm(float* out, const float* inp, const float* w, const float* b, int rows) {
    ThrowIfFailed(cuda::LayerNormForward(out, mean_.get(), rstd_.get(), inp, w, b, rows,
                                         config_.n_embd, stream_),
                  "LayerNormForward");
  }

  ParamLayout layout_;
  int device_;
  bool use_graphs_;  // InferenceOptions::cuda_graphs, until kMaxFailedCaptures captures fail
  // A capture can fail for a passing reason: another thread's synchronising
  // call on the same GPU (cudaFree in the destructor of a replaced model's
  // engine, which an HTTP thread may drop after a reload) is reported to
  // invalidate a capture in progress even in cudaStreamCaptureModeThreadLocal.
  // So graphs stay on until this many captures have failed, not one.
  static constexpr int kMaxFailedCaptures = 3;
  int failed_captures_ = 0;
  // decode_graphs_[R]: the instantiated graph of an R-row decode step, or
  // null until the first such step (R <= max_slots).
  std::vector<cudaGraphExec_t> decode_graphs_;
  cudaStream_t stream_ = nullptr;
  DeviceArray<float> params_, k_cache_, v_cache_;  // caches (L,S,T,C)
  DeviceArray<float> x_, ln_, atty_, gathered_, qkv_, fch_, mean_, rstd_, logits_;
  DeviceArray<int32_t> meta_;     // (4, max_rows()): tokens, slots, positions, head rows
  int32_t* host_meta_ = nullptr;  // pinned twin of meta_
  float* host_logits_ = nullptr;  // pinned (max(S,1),V)
};

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceEngine>> MakeCudaInferenceEngine(
    const GptConfig& config, std::span<const float> host_params, const InferenceOptions& options) {
  if (std::string reason = NoCudaDeviceReason(); !reason.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device cuda: ", reason, "; serve with --device cpu"));
  }
  const int count = CudaDeviceCountOrZero();
  if (options.cuda_device < 0 || options.cuda_device >= count) {
    return absl::InvalidArgumentError(absl::StrCat("cuda device ", options.cuda_device,
                                                   " requested, but this machine has ", count,
                                                   " (ordinals 0..", count - 1, ")"));
  }
  if (config.block_size > cuda::kMaxCachedAttentionPositions) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size ", config.block_size, ": the CUDA inference engine holds at most ",
                     cuda::kMaxCachedAttentionPositions, " positions per sequence"));
  }
  auto engine = std::make_unique<CudaInferenceEngine>(config, options.cuda_device,
                                                      options.max_slots, options.cuda_graphs);
  if (absl::Status s = engine->Init(host_params); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cuda inference engine: ", s.message()));
  }
  return std::unique_ptr<InferenceEngine>(std::move(engine));
}

}  // namespace dropk
