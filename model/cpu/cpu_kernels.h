// The CPU implementation of Kernels: OpenBLAS sgemm for matrix products,
// OpenMP for everything else. The reference and test oracle for other
// devices. Private to model/; reach it through MakeKernels(Device::kCpu, n).
//
// Reductions are arranged so that results do not depend on the thread count
// (per-column sums loop over rows in a fixed order, SumSquares adds fixed
// blocks in order), so the team can be resized between steps.
#ifndef DROPK_MODEL_CPU_CPU_KERNELS_H_
#define DROPK_MODEL_CPU_CPU_KERNELS_H_

#include <memory>
#include <vector>

#include "cpu/bf16_matmul.h"
#include "cpu/bf16_weight_cache.h"
#include "model/kernels.h"
#include "model/thread_governor.h"

namespace dropk {

// The CPU's readiness event: work is done when the op returns.
class CpuEvent final : public DeviceEvent {
 public:
  void Record() override {}
  void HostWait() override {}
  void* native_handle() override { return nullptr; }
};

class CpuKernels final : public Kernels {
 public:
  // num_threads: the team (0 = all cores). bf16: when not null, the
  // projections (MatmulForward/MatmulBackward) round their inputs to bf16
  // and multiply through it (precision bf16); attention stays fp32. The
  // bf16 copy of each weight w is kept (Bf16WeightCache) until a write to
  // it: CopyToDevice, Zero, Scale, AdamW and AdamWRanges report theirs, Free forgets all,
  // other writers must call NoteExternalWrite (see Kernels).
  explicit CpuKernels(int num_threads, std::unique_ptr<Bf16Matmul> bf16 = nullptr);

  Device device() const override { return Device::kCpu; }
  std::string Describe() const override;

  void* Allocate(size_t bytes) override;
  void Free(void* ptr) override;
  void CopyToDevice(void* dst, const void* host_src, size_t bytes) override;
  void CopyToHost(void* host_dst, const void* src, size_t bytes) override;
  void Zero(void* dst, size_t bytes) override;
  void Synchronize() override {}
  // Every CPU op has completed when it returns, so events are no-ops.
  std::unique_ptr<DeviceEvent> CreateEvent() override { return std::make_unique<CpuEvent>(); }
  void FitThreadsToLoad() override;
  void NoteExternalWrite(const void* dst, size_t bytes) override;

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
  void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* out,
                         const float* probs, int B, int T, int C, int NH, int layer,
                         const DropoutPlan* dropout) override;
  void GeluForward(float* out, const float* inp, size_t n) override;
  void GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) override;
  void ResidualDropoutForward(float* out, const float* residual, const float* x, int B, int T,
                              int C, DropoutKind kind, int layer,
                              const DropoutPlan* dropout) override;
  // One pass per row: the residual row is still in L1 when it is normalised.
  void ResidualDropoutLayerNormForward(float* out, float* ln_out, float* mean, float* rstd,
                                       const float* residual, const float* x, const float* w,
                                       const float* b, int B, int T, int C, DropoutKind kind,
                                       int layer, const DropoutPlan* dropout) override;
  void DropoutBackward(float* dx, const float* dout, int B, int T, int C, DropoutKind kind,
                       int layer, const DropoutPlan* dropout) override;
  void CrossEntropyForward(float* losses, float* lse, const float* logits, const int32_t* targets,
                           int N, int V) override;
  void CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets, int N, int V,
                            float scale) override;
  double SumSquares(const float* x, size_t n) override;
  void AdamW(float* params, const float* grads, float* m, float* v, size_t n,
             const AdamWArgs& args) override;
  void AdamWRanges(float* params, const float* grads, float* m, float* v,
                   const std::vector<AdamWRange>& ranges, const AdamWArgs& args) override;
  void Scale(float* x, float alpha, size_t n) override;

 private:
  // Per-thread scratch of at least floats_per_thread floats; grows (allocates)
  // only when a larger shape than ever before is seen, i.e. in the first step.
  float* ThreadScratch(size_t floats_per_thread);
  // Scratch for bf16 copies of matmul operands, grown on first use.
  uint16_t* Bf16Scratch(std::vector<uint16_t>& buffer, size_t count);
  void MatmulForwardBf16(float* out, const float* inp, const float* w, const float* bias, int N,
                         int C, int OC);
  void MatmulBackwardBf16(float* dinp, float* dw, const float* dout, const float* inp,
                          const float* w, int N, int C, int OC, bool accumulate_dinp);
  // dbias (OC) += column sums of dout (N,OC), columns in parallel, rows in order.
  void AccumulateColumnSums(float* dbias, const float* dout, int N, int OC);

  int num_threads_;     // the largest team; scratch is sized for it
  int active_threads_;  // the team of the next parallel regions, <= num_threads_
  ThreadGovernor governor_;
  std::vector<double> block_sums_;  // SumSquares' per-block partial sums
  std::vector<float> scratch_;
  size_t scratch_per_thread_ = 0;
  std::unique_ptr<Bf16Matmul> bf16_;  // null: fp32 matmuls
  std::vector<uint16_t> bf16_lhs_, bf16_rhs_;  // bf16 copies of dout and inp
  Bf16WeightCache bf16_weights_;  // bf16 copies of the matmuls' w
};

// Multiplies x[0, n) in place by the dropout scales of elements [e0, e0 + n)
// of (stream, site, step); n may be any length. Shared by the CPU kernels.
void ApplyDropoutScales(float* x, const DropoutPlan& plan, uint32_t stream, uint32_t site,
                        uint64_t e0, int64_t n, float p);

// out[i] = residual[i] + x[i] * scale[i] (scale from dropout) for one
// contiguous run of n elements; residual may be null (then out = x * scale).
void ResidualDropoutRun(float* out, const float* residual, const float* x, const DropoutPlan& plan,
                        uint32_t stream, uint32_t site, uint64_t e0, int64_t n, float p);

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_CPU_KERNELS_H_
