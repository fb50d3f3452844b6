// A Kernels that times every op of another one: where a training step goes,
// op by op (dropk-train --profile, dropk-train-throughput-bench --profile).
//
// Each call runs the wrapped op, then waits for the device (Synchronize), and
// adds the wall time to that op's total. Waiting serialises a GPU's queue, so
// a profiled GPU step is slower than an unprofiled one, but each op's share
// is its own; on the CPU every op is already synchronous and the overhead is
// one clock read per call. Counting can be paused (evaluation passes are not
// training steps). Results are those of the wrapped kernels, bit for bit.
//
// Not thread-safe, like every Kernels.
#ifndef DROPK_MODEL_PROFILED_KERNELS_H_
#define DROPK_MODEL_PROFILED_KERNELS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "model/kernels.h"

namespace dropk {

// Every timed op of Kernels, in interface order.
enum class KernelOp {
  kEmbeddingForward,
  kEmbeddingBackward,
  kLayerNormForward,
  kLayerNormBackward,
  kMatmulForward,
  kMatmulBackward,
  kAttentionForward,
  kAttentionBackward,
  kGeluForward,
  kGeluBackward,
  kResidualDropoutForward,
  kResidualDropoutLayerNormForward,
  kDropoutBackward,
  kCrossEntropyForward,
  kCrossEntropyBackward,
  kSumSquares,
  kAdamW,
  kScale,
  kZero,
  kCopy,  // CopyToDevice and CopyToHost
  kCount,
};
const char* KernelOpName(KernelOp op);  // e.g. "MatmulBackward"

// Time and calls of one op.
struct OpTotals {
  double seconds = 0;
  int64_t calls = 0;
};

class ProfiledKernels final : public Kernels {
 public:
  // Times the ops of `inner`, which it owns.
  explicit ProfiledKernels(std::unique_ptr<Kernels> inner);

  // While paused, ops run untimed and without the device wait. Unpausing
  // waits for the device once, so work queued while paused is not counted
  // against the next timed op.
  void set_paused(bool paused) {
    if (paused_ && !paused) inner_->Synchronize();
    paused_ = paused;
  }
  void Reset() { totals_ = {}; }  // forgets every total
  const OpTotals& totals(KernelOp op) const { return totals_[static_cast<int>(op)]; }
  double TotalSeconds() const;  // over all ops
  // A table, one row per op with any calls, slowest first: ms per step,
  // calls per step and share of `step_seconds` (the steps' wall time, which
  // also holds what no op accounts for: communication waits, host work); a
  // last row gives that remainder. `steps` must be positive.
  std::string Report(int64_t steps, double step_seconds) const;

  Device device() const override { return inner_->device(); }
  std::string Describe() const override { return inner_->Describe() + ", profiled"; }
  void* Allocate(size_t bytes) override { return inner_->Allocate(bytes); }
  void Free(void* ptr) override { inner_->Free(ptr); }
  void CopyToDevice(void* dst, const void* host_src, size_t bytes) override;
  void CopyToHost(void* host_dst, const void* src, size_t bytes) override;
  void Zero(void* dst, size_t bytes) override;
  void Synchronize() override { inner_->Synchronize(); }
  std::unique_ptr<DeviceEvent> CreateEvent() override { return inner_->CreateEvent(); }
  void FitThreadsToLoad() override { inner_->FitThreadsToLoad(); }
  void NoteExternalWrite(const void* dst, size_t bytes) override {
    inner_->NoteExternalWrite(dst, bytes);
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
    return inner_->AttentionSavedFloats(B, T, C, NH);
  }
  void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* out,
                         const float* probs, int B, int T, int C, int NH, int layer,
                         const DropoutPlan* dropout) override;
  void GeluForward(float* out, const float* inp, size_t n) override;
  void GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) override;
  void ResidualDropoutForward(float* out, const float* residual, const float* x, int B, int T,
                              int C, DropoutKind kind, int layer,
                              const DropoutPlan* dropout) override;
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
  // Runs op_call (a call on inner_), waits for the device and adds the time
  // to op's totals unless paused; returns what the call returns.
  template <typename Call>
  auto Timed(KernelOp op, Call&& op_call);

  std::unique_ptr<Kernels> inner_;
  bool paused_ = false;
  std::array<OpTotals, static_cast<int>(KernelOp::kCount)> totals_{};
};

}  // namespace dropk

#endif  // DROPK_MODEL_PROFILED_KERNELS_H_
