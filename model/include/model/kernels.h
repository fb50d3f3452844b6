// The compute interface of dropk's model: every forward, backward and
// optimizer op the GPT needs, on one device. The CPU implementation
// (model/cpu/) is the readable reference and test oracle; a CUDA one sits
// beside it (model/cuda/) behind this same interface, and MakeKernels() is the
// one place that chooses, so the model, trainer and sampler never branch on
// the device.
//
// Conventions: every pointer is device memory from Allocate() unless named
// host_*; shapes use the legend B batch, T time, C channels, NH heads,
// V vocab, N = B*T rows; tensors are row-major and contiguous. Ops that say
// "accumulates" add into their output (gradients accumulate over
// micro-batches); all others overwrite. Calls are ordered on the device (a
// CUDA implementation enqueues on one stream); Synchronize() waits for them.
// A Kernels object is not thread-safe.
//
// Failures: Allocate throws std::bad_alloc when memory runs out. A failure
// of the device itself inside any op (a CUDA or cuBLAS error: an illegal
// address, an Xid, a lost GPU) throws DeviceError (base/device_error.h)
// naming the op and the error, never an abort; after one, the object and
// every buffer it holds are unusable except to be destroyed, so the caller
// ends its work (dropk-train ends the job without saving). Free and
// destructors never throw. The CPU backend throws no DeviceError.
#ifndef DROPK_MODEL_KERNELS_H_
#define DROPK_MODEL_KERNELS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/device_error.h"
#include "base/device_event.h"
#include "model/dropout.h"

namespace dropk {

enum class Device { kCpu, kCuda };

// Hyperparameters of one AdamW update. grad_scale multiplies the gradient
// first (global-norm clipping); bias corrections are 1 - beta^t.
struct AdamWArgs {
  float lr = 0, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0;
  float grad_scale = 1.0f;
  float bias_correction1 = 1.0f, bias_correction2 = 1.0f;
};

// A stretch [begin, end) of a flat parameter buffer (offsets in floats) and
// the weight decay its parameters take in AdamW.
struct AdamWRange {
  size_t begin = 0, end = 0;
  float weight_decay = 0;
};

class Kernels {
 public:
  virtual ~Kernels() = default;
  virtual Device device() const = 0;
  virtual std::string Describe() const = 0;  // e.g. "cpu, 2 threads, OpenBLAS"

  // Memory. Allocate returns zeroed memory that is already backed (touched),
  // so no page faults land inside a training step; Free accepts nullptr.
  // CopyToDevice returns once host_src has been read (the caller may reuse
  // or free it at once); CopyToHost once host_dst holds the bytes.
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  virtual void CopyToDevice(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void CopyToHost(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void Zero(void* dst, size_t bytes) = 0;
  virtual void Synchronize() = 0;
  // A new event on this device's queue (see DeviceEvent), not yet recorded.
  virtual std::unique_ptr<DeviceEvent> CreateEvent() = 0;
  // Called by the driver between units of work (a training step). A CPU
  // backend resizes its thread team to the cores the process is actually
  // given (fewer while another process competes for them; see
  // model/thread_governor.h); other backends do nothing. Results never
  // depend on it, only speed.
  virtual void FitThreadsToLoad() {}
  // Tells the kernels that [dst, dst + bytes) of device memory was written by
  // something other than this object's ops, e.g. a collective broadcasting
  // the parameters. A backend that keeps derived copies of weights (the
  // CPU's bf16 copies with precision bf16, reused until the weights change)
  // drops those of that range; others ignore it. Writes made through
  // CopyToDevice, Zero, Scale, AdamW or AdamWRanges need no such call. Weights written
  // any other way without it may be multiplied with their old values.
  virtual void NoteExternalWrite(const void* /*dst*/, size_t /*bytes*/) {}

  // out (B,T,C) = wte[tokens] + wpe[0:T], then dropout (site kEmbedding).
  virtual void EmbeddingForward(float* out, const int32_t* tokens, const float* wte,
                                const float* wpe, int B, int T, int C,
                                const DropoutPlan* dropout) = 0;
  // dout (B,T,C) is the gradient of out; regenerates the dropout mask.
  // Accumulates into dwte (V,C) and dwpe (T,C). dout is clobbered.
  virtual void EmbeddingBackward(float* dwte, float* dwpe, float* dout, const int32_t* tokens,
                                 int B, int T, int C, const DropoutPlan* dropout) = 0;

  // out (N,C) = LayerNorm(inp) * w + b, eps 1e-5; saves mean and rstd (N).
  virtual void LayerNormForward(float* out, float* mean, float* rstd, const float* inp,
                                const float* w, const float* b, int N, int C) = 0;
  // Accumulates into dinp (N,C), dw (C), db (C).
  virtual void LayerNormBackward(float* dinp, float* dw, float* db, const float* dout,
                                 const float* inp, const float* w, const float* mean,
                                 const float* rstd, int N, int C) = 0;

  // out (N,OC) = inp (N,C) · w (OC,C)^T + bias (OC); bias may be null.
  virtual void MatmulForward(float* out, const float* inp, const float* w, const float* bias, int N,
                             int C, int OC) = 0;
  // dinp (N,C) = dout · w (overwrites, or accumulates when accumulate_dinp);
  // accumulates dw (OC,C) += dout^T · inp and dbias (OC) += column sums.
  virtual void MatmulBackward(float* dinp, float* dw, float* dbias, const float* dout,
                              const float* inp, const float* w, int N, int C, int OC,
                              bool accumulate_dinp) = 0;

  // Causal multi-head self-attention. qkv (B,T,3C) holds q, k, v; head h uses
  // columns [h*C/NH, (h+1)*C/NH) of each. Applies dropout (site
  // kAttentionProbs of `layer`) to the softmax probabilities; out (B,T,C).
  // Leaves in probs (AttentionSavedFloats floats) what AttentionBackward
  // needs. By default that is the probabilities before dropout, (B,NH,T,T);
  // a device may mark in it which entries dropout dropped by setting their
  // sign bit (the CPU does; |probs| is the softmax). Entries above the
  // diagonal may be left as they were (the CPU writes only up to the end of
  // each row's query block). A device that keeps no T x T probabilities
  // (CUDA's flash attention) keeps less, in its own form.
  virtual void AttentionForward(float* out, float* probs, const float* qkv, int B, int T, int C,
                                int NH, int layer, const DropoutPlan* dropout) = 0;
  // The floats AttentionForward leaves in probs for AttentionBackward at this
  // shape: B*NH*T*T unless a device keeps less.
  virtual size_t AttentionSavedFloats(int B, int T, int C, int NH) const {
    (void)C;
    return static_cast<size_t>(B) * NH * T * T;
  }
  // dqkv (B,T,3C) overwritten from dout (B,T,C), and from what
  // AttentionForward left: its out (B,T,C), unchanged since, and probs, with
  // the same dropout mask.
  virtual void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* out,
                                 const float* probs, int B, int T, int C, int NH, int layer,
                                 const DropoutPlan* dropout) = 0;

  // GELU, tanh approximation, elementwise over n values.
  virtual void GeluForward(float* out, const float* inp, size_t n) = 0;
  // dinp = gelu'(inp) * dout; dinp may alias dout.
  virtual void GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) = 0;

  // out (B,T,C) = residual + dropout(x) at site (kind, layer).
  virtual void ResidualDropoutForward(float* out, const float* residual, const float* x, int B,
                                      int T, int C, DropoutKind kind, int layer,
                                      const DropoutPlan* dropout) = 0;
  // Fused: out (B,T,C) = residual + dropout(x) as ResidualDropoutForward,
  // then ln_out = LayerNorm(out) * w + b with mean and rstd (B*T) saved, as
  // LayerNormForward, bit for bit. A device without a fused kernel keeps this
  // default, which runs the two ops.
  virtual void ResidualDropoutLayerNormForward(float* out, float* ln_out, float* mean, float* rstd,
                                               const float* residual, const float* x,
                                               const float* w, const float* b, int B, int T, int C,
                                               DropoutKind kind, int layer,
                                               const DropoutPlan* dropout) {
    ResidualDropoutForward(out, residual, x, B, T, C, kind, layer, dropout);
    LayerNormForward(ln_out, mean, rstd, out, w, b, B * T, C);
  }
  // dx (B,T,C) = dropout mask applied to dout (overwrites dx).
  virtual void DropoutBackward(float* dx, const float* dout, int B, int T, int C, DropoutKind kind,
                               int layer, const DropoutPlan* dropout) = 0;

  // Per-row cross-entropy of logits (N,V) against targets (N): writes
  // losses (N) and log-sum-exp (N).
  virtual void CrossEntropyForward(float* losses, float* lse, const float* logits,
                                   const int32_t* targets, int N, int V) = 0;
  // In place: logits (N,V) become dlogits = (softmax - onehot(target)) * scale.
  virtual void CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets, int N,
                                    int V, float scale) = 0;

  // Sum of squares of x (n), in double, returned to the host (synchronises).
  virtual double SumSquares(const float* x, size_t n) = 0;
  // One AdamW step over n parameters; m and v are the moments.
  virtual void AdamW(float* params, const float* grads, float* m, float* v, size_t n,
                     const AdamWArgs& args) = 0;
  // One AdamW step over each of `ranges` of the flat buffers params, grads,
  // m and v, with the range's weight decay (args.weight_decay is ignored).
  // The ranges must not overlap (the CPU updates them concurrently):
  // the same values, bit for bit, as one AdamW call per range. A backend
  // that can do all of them in one pass (the CPU: one parallel region, not
  // one per range) overrides this; by default it is one AdamW call per range.
  virtual void AdamWRanges(float* params, const float* grads, float* m, float* v,
                           const std::vector<AdamWRange>& ranges, const AdamWArgs& args) {
    AdamWArgs range_args = args;
    for (const AdamWRange& r : ranges) {
      range_args.weight_decay = r.weight_decay;
      AdamW(params + r.begin, grads + r.begin, m + r.begin, v + r.begin, r.end - r.begin,
            range_args);
    }
  }
  // x *= alpha over n values.
  virtual void Scale(float* x, float alpha, size_t n) = 0;
};

// The arithmetic of matrix products (the projections and attention's
// batched products). Storage, accumulation, master weights and optimizer
// moments stay fp32 in every mode.
enum class MatmulPrecision {
  kFp32,  // fp32 inputs and arithmetic
  kTf32,  // CUDA only: fp32 inputs rounded to TF32 on the tensor cores, fp32 accumulation
  kBf16,  // projections' inputs rounded to bf16, fp32 accumulation: on CUDA bf16 operands to
          // cuBLASLt's tensor cores, attention's products in TF32; on the CPU the projections
          // through oneDNN (AMX / AVX512-BF16 where present), attention in fp32
};
const char* MatmulPrecisionName(MatmulPrecision precision);  // "fp32", "tf32", "bf16"

// How MakeKernels builds a device's kernels. Fields a device does not use
// are ignored, except that the CPU refuses kTf32, and kBf16 in a build
// without oneDNN.
struct KernelOptions {
  int num_threads = 0;  // CPU: host threads; 0 = all cores
  MatmulPrecision precision = MatmulPrecision::kFp32;
  int cuda_device = 0;  // CUDA: device ordinal (a rank passes its local rank mod device count)
  // CUDA: attention through the flash kernels (model/cuda/flash_attention.cu:
  // TF32 tensor cores, no T x T probabilities in memory) where the precision
  // is kTf32 or kBf16, the head size is 16, 32 or 64, and the GPU gives a
  // block the shared memory their backward needs (at head size 64, 111 KB:
  // not sm_86 or sm_89); else, and by default, the materialised kernels.
  // Training turns it on (TrainingKernelOptions); the kernel tests choose per
  // case.
  bool flash_attention = false;
  // CUDA, with flash_attention at kBf16: attention through the bf16
  // tensor-core flash kernels (model/cuda/flash_bf16_body.h: mma.sync, FA2's
  // scheme; q, k, v, probabilities and score gradients in bf16, sums in
  // fp32; 37 KB of shared memory a block at most, so every GPU from sm_80)
  // instead of the TF32 ones. Off by default: written where no GPU was at
  // hand and checked there only on a warp emulator; the config's
  // attention_kernels: FLASH_BF16_TENSOR_CORES asks for it.
  bool flash_bf16_tensor_cores = false;
};

// The kernels of `device`. Fails with one clear line for a device this build
// or this machine lacks: kCuda in a build without the CUDA Toolkit, or on a
// machine where cudaGetDeviceCount finds no GPU ("no CUDA device:
// cudaGetDeviceCount returned ..."); never crashes.
absl::StatusOr<std::unique_ptr<Kernels>> MakeKernels(Device device, const KernelOptions& options);
// True when this build has the CUDA kernels (whether or not a GPU is here).
bool CudaCompiledIn();

// GPUs this process can use: 0 in a build without CUDA or on a machine
// without a usable GPU (never fails). A rank picks local rank mod this count.
int CudaDeviceCount();

// The 16-byte UUID of GPU `ordinal` as this process numbers it (the same
// physical GPU has the same UUID in every process, whatever
// CUDA_VISIBLE_DEVICES renumbers), or all zeros when it cannot be read.
std::array<uint8_t, 16> CudaDeviceUuid(int ordinal);

// Free memory of GPU `ordinal` in bytes (cudaMemGetInfo), or -1 when it
// cannot be read (no such GPU, a build without CUDA). Makes `ordinal` the
// calling thread's current device and leaves it current (switching back to
// a device no one chose would create a context on GPU 0): call it for the
// GPU this process uses.
double CudaFreeBytes(int ordinal);

// Device memory the CUDA kernels allocate for themselves, beyond the buffers
// their caller allocates, while training a GPT on batches of B sequences of T
// tokens, width C and NH heads: attention's per-head copies of q, k, v, of the
// output gradient and of dq, dk, dv (7 x B*T*C floats), the gradient of the
// scores (B*NH*T*T floats) and, with attention-probability dropout, the
// dropped probabilities (B*NH*T*T more), the column-sum partials of the bias
// and LayerNorm gradients, the sort of positions by token that the embedding
// gradient uses, cuBLASLt's workspace and, with bf16 operands
// (MatmulPrecision::kBf16), the bf16 copies of the largest projection's
// weight, input and output gradient (the LM head's, V the padded vocabulary).
// Kept at the largest shape run, so a memory budget adds it to
// Gpt::Footprint's buffers. In double, so that any shape can be sized; the
// same figure in every build.
// With flash_attention (CudaFlashAttentionApplies), attention keeps none of
// those per-head copies and score buffers, only a float per row (B*NH*T).
double CudaKernelsScratchBytes(int B, int T, int C, int NH, int V, bool attention_dropout,
                               bool bf16_operands, bool flash_attention);

// The host memory the CPU kernels' attention takes as per-thread scratch
// (CpuKernels::ThreadScratch) with `threads` threads at context T and head
// size hs: a (kQueryBlock, T) block of dropped probabilities or their
// gradient, one of scales, and a transposed (hs, T) head, in floats, per
// thread. In double, so that any shape can be sized.
double CpuAttentionScratchBytes(int threads, int T, int hs);

// The host memory the CPU kernels' bf16 products take, at most, where
// oneDNN has no bf16 matmul for the CPU (model/cpu/bf16_matmul.h): fp32
// widenings of a product's right operand, whole, and of its left operand,
// a block of rows at a time. For products of at most `rows` rows by `wide`
// columns against `width` (the model's): the LM head's (rows, wide)
// gradient against its (wide, width) weight, and the (rows, width) input.
// In double, so that any shape can be sized.
double CpuWidenedBf16ScratchBytes(double rows, double wide, double width);

// Whether CUDA kernels made with `options` run attention of head size hs
// through the flash kernels: the rule the kernels apply
// (KernelOptions::flash_attention), asked of GPU options.cuda_device. False
// in a build without CUDA, on a machine without that GPU, or when the GPU
// cannot be asked.
bool CudaFlashAttentionApplies(const KernelOptions& options, int hs);

// The same with default options and num_threads host threads (0 = all cores).
absl::StatusOr<std::unique_ptr<Kernels>> MakeKernels(Device device, int num_threads);

// A device buffer owned by a Kernels object, freed on destruction.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Kernels* kernels, size_t count)
      : kernels_(kernels),
        data_(static_cast<T*>(kernels->Allocate(count * sizeof(T)))),
        count_(count) {}
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      kernels_ = other.kernels_;
      data_ = other.data_;
      count_ = other.count_;
      other.data_ = nullptr;
      other.count_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Reset(); }

  T* data() const { return data_; }
  size_t size() const { return count_; }

 private:
  void Reset() {
    if (data_ != nullptr) kernels_->Free(data_);
    data_ = nullptr;
  }
  Kernels* kernels_ = nullptr;
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace dropk

#endif  // DROPK_MODEL_KERNELS_H_
