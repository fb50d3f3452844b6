// FailingKernels: kernels that behave like a GPU whose context breaks
// mid-run, for tests of what dropk does after a device failure without a
// GPU. They run another Kernels (the CPU's) until the n-th call of one op,
// which throws DeviceError as CudaKernels would (an illegal address); from
// then on every op throws, as every call on a CUDA context fails after a
// sticky error. Free and the destructor never throw, as CudaKernels'.
#ifndef DROPK_TESTS_SUPPORT_FAILING_KERNELS_H_
#define DROPK_TESTS_SUPPORT_FAILING_KERNELS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/device_error.h"
#include "model/kernels.h"

namespace dropk::test_util {

// The cause a FailingKernels reports, worded as check.h words CUDA's.
inline constexpr char kFakeIllegalAddress[] =
    "cudaEventSynchronize(event_) failed: cudaErrorIllegalAddress (an illegal memory access was "
    "encountered) at fake_gpu.cc:1";

class FailingKernels final : public Kernels {
 public:
  // Throws on the fail_on_call-th call (1-based) of the op named `op` (a
  // Kernels method name, e.g. "AttentionBackward"), and on every op after.
  FailingKernels(std::unique_ptr<Kernels> inner, std::string op, int64_t fail_on_call)
      : inner_(std::move(inner)), op_(std::move(op)), fail_on_call_(fail_on_call) {}

  bool failed() const { return failed_; }

  // Reports `extra` more floats from AttentionSavedFloats than the inner
  // kernels keep (as kernels of another form would), and records where each
  // AttentionForward and AttentionBackward found its probs: for tests of how
  // a model lays out what its kernels keep.
  void PadAttentionSaved(size_t extra) { attention_pad_ = extra; }
  const std::vector<const float*>& forward_probs() const { return forward_probs_; }
  const std::vector<const float*>& backward_probs() const { return backward_probs_; }
  // Ops called after the failure (each threw again).
  int64_t calls_after_failure() const { return calls_after_failure_; }

  Device device() const override { return inner_->device(); }
  std::string Describe() const override { return "fake GPU over " + inner_->Describe(); }
  void* Allocate(size_t bytes) override { return inner_->Allocate(bytes); }
  void Free(void* ptr) override { inner_->Free(ptr); }
  void CopyToDevice(void* dst, const void* host_src, size_t bytes) override {
    Tick("CopyToDevice");
    inner_->CopyToDevice(dst, host_src, bytes);
  }
  void CopyToHost(void* host_dst, const void* src, size_t bytes) override {
    Tick("CopyToHost");
    inner_->CopyToHost(host_dst, src, bytes);
  }
  void Zero(void* dst, size_t bytes) override {
    Tick("Zero");
    inner_->Zero(dst, bytes);
  }
  void Synchronize() override {
    Tick("Synchronize");
    inner_->Synchronize();
  }
  std::unique_ptr<DeviceEvent> CreateEvent() override { return inner_->CreateEvent(); }
  void FitThreadsToLoad() override { inner_->FitThreadsToLoad(); }
  void NoteExternalWrite(const void* dst, size_t bytes) override {
    inner_->NoteExternalWrite(dst, bytes);
  }

  void EmbeddingForward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                        int B, int T, int C, const DropoutPlan* dropout) override {
    Tick("EmbeddingForward");
    inner_->EmbeddingForward(out, tokens, wte, wpe, B, T, C, dropout);
  }
  void EmbeddingBackward(float* dwte, float* dwpe, float* dout, const int32_t* tokens, int B, int T,
                         int C, const DropoutPlan* dropout) override {
    Tick("EmbeddingBackward");
    inner_->EmbeddingBackward(dwte, dwpe, dout, tokens, B, T, C, dropout);
  }
  void LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                        const float* b, int N, int C) override {
    Tick("LayerNormForward");
    inner_->LayerNormForward(out, mean, rstd, inp, w, b, N, C);
  }
  void LayerNormBackward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                         const float* w, const float* mean, const float* rstd, int N,
                         int C) override {
    Tick("LayerNormBackward");
    inner_->LayerNormBackward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
  }
  void MatmulForward(float* out, const float* inp, const float* w, const float* bias, int N, int C,
                     int OC) override {
    Tick("MatmulForward");
    inner_->MatmulForward(out, inp, w, bias, N, C, OC);
  }
  void MatmulBackward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                      const float* w, int N, int C, int OC, bool accumulate_dinp) override {
    Tick("MatmulBackward");
    inner_->MatmulBackward(dinp, dw, dbias, dout, inp, w, N, C, OC, accumulate_dinp);
  }
  void AttentionForward(float* out, float* probs, const float* qkv, int B, int T, int C, int NH,
                        int layer, const DropoutPlan* dropout) override {
    Tick("AttentionForward");
    forward_probs_.push_back(probs);
    inner_->AttentionForward(out, probs, qkv, B, T, C, NH, layer, dropout);
  }
  size_t AttentionSavedFloats(int B, int T, int C, int NH) const override {
    return inner_->AttentionSavedFloats(B, T, C, NH) + attention_pad_;
  }
  void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* out,
                         const float* probs, int B, int T, int C, int NH, int layer,
                         const DropoutPlan* dropout) override {
    Tick("AttentionBackward");
    backward_probs_.push_back(probs);
    inner_->AttentionBackward(dqkv, dout, qkv, out, probs, B, T, C, NH, layer, dropout);
  }
  void GeluForward(float* out, const float* inp, size_t n) override {
    Tick("GeluForward");
    inner_->GeluForward(out, inp, n);
  }
  void GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) override {
    Tick("GeluBackward");
    inner_->GeluBackward(dinp, inp, dout, n);
  }
  void ResidualDropoutForward(float* out, const float* residual, const float* x, int B, int T,
                              int C, DropoutKind kind, int layer,
                              const DropoutPlan* dropout) override {
    Tick("ResidualDropoutForward");
    inner_->ResidualDropoutForward(out, residual, x, B, T, C, kind, layer, dropout);
  }
  void ResidualDropoutLayerNormForward(float* out, float* ln_out, float* mean, float* rstd,
                                       const float* residual, const float* x, const float* w,
                                       const float* b, int B, int T, int C, DropoutKind kind,
                                       int layer, const DropoutPlan* dropout) override {
    Tick("ResidualDropoutLayerNormForward");
    inner_->ResidualDropoutLayerNormForward(out, ln_out, mean, rstd, residual, x, w, b, B, T, C,
                                            kind, layer, dropout);
  }
  void DropoutBackward(float* dx, const float* dout, int B, int T, int C, DropoutKind kind,
                       int layer, const DropoutPlan* dropout) override {
    Tick("DropoutBackward");
    inner_->DropoutBackward(dx, dout, B, T, C, kind, layer, dropout);
  }
  void CrossEntropyForward(float* losses, float* lse, const float* logits, const int32_t* targets,
                           int N, int V) override {
    Tick("CrossEntropyForward");
    inner_->CrossEntropyForward(losses, lse, logits, targets, N, V);
  }
  void CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets, int N, int V,
                            float scale) override {
    Tick("CrossEntropyBackward");
    inner_->CrossEntropyBackward(logits, lse, targets, N, V, scale);
  }
  double SumSquares(const float* x, size_t n) override {
    Tick("SumSquares");
    return inner_->SumSquares(x, n);
  }
  void AdamW(float* params, const float* grads, float* m, float* v, size_t n,
             const AdamWArgs& args) override {
    Tick("AdamW");
    inner_->AdamW(params, grads, m, v, n, args);
  }
  void Scale(float* x, float alpha, size_t n) override {
    Tick("Scale");
    inner_->Scale(x, alpha, n);
  }

 private:
  void Tick(const char* op) {
    if (failed_) {
      ++calls_after_failure_;
      throw DeviceError(std::string(op) + " on cuda:0", kFakeIllegalAddress);
    }
    if (op_ == op && ++calls_ == fail_on_call_) {
      failed_ = true;
      throw DeviceError(std::string(op) + " on cuda:0", kFakeIllegalAddress);
    }
  }

  std::unique_ptr<Kernels> inner_;
  size_t attention_pad_ = 0;
  std::vector<const float*> forward_probs_, backward_probs_;
  const std::string op_;
  const int64_t fail_on_call_;
  int64_t calls_ = 0;
  bool failed_ = false;
  int64_t calls_after_failure_ = 0;
};

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_FAILING_KERNELS_H_
