#include "model/profiled_kernels.h"

#include <algorithm>
#include <chrono>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"

namespace dropk {

const char* KernelOpName(KernelOp op) {
  switch (op) {
    case KernelOp::kEmbeddingForward: return "EmbeddingForward";
    case KernelOp::kEmbeddingBackward: return "EmbeddingBackward";
    case KernelOp::kLayerNormForward: return "LayerNormForward";
    case KernelOp::kLayerNormBackward: return "LayerNormBackward";
    case KernelOp::kMatmulForward: return "MatmulForward";
    case KernelOp::kMatmulBackward: return "MatmulBackward";
    case KernelOp::kAttentionForward: return "AttentionForward";
    case KernelOp::kAttentionBackward: return "AttentionBackward";
    case KernelOp::kGeluForward: return "GeluForward";
    case KernelOp::kGeluBackward: return "GeluBackward";
    case KernelOp::kResidualDropoutForward: return "ResidualDropoutForward";
    case KernelOp::kResidualDropoutLayerNormForward: return "ResidualDropoutLayerNorm";
    case KernelOp::kDropoutBackward: return "DropoutBackward";
    case KernelOp::kCrossEntropyForward: return "CrossEntropyForward";
    case KernelOp::kCrossEntropyBackward: return "CrossEntropyBackward";
    case KernelOp::kSumSquares: return "SumSquares";
    case KernelOp::kAdamW: return "AdamW";
    case KernelOp::kScale: return "Scale";
    case KernelOp::kZero: return "Zero";
    case KernelOp::kCopy: return "Copy";
    case KernelOp::kCount: break;
  }
  return "unknown";
}

ProfiledKernels::ProfiledKernels(std::unique_ptr<Kernels> inner) : inner_(std::move(inner)) {}

template <typename Call>
auto ProfiledKernels::Timed(KernelOp op, Call&& op_call) {
  // Paused: the op alone, with no device wait, so untimed steps run at
  // their own speed.
  if (paused_) return op_call();
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  const auto record = [&] {
    inner_->Synchronize();
    OpTotals& t = totals_[static_cast<int>(op)];
    t.seconds += std::chrono::duration<double>(Clock::now() - start).count();
    ++t.calls;
  };
  if constexpr (std::is_void_v<decltype(op_call())>) {
    op_call();
    record();
  } else {
    auto result = op_call();
    record();
    return result;
  }
}

double ProfiledKernels::TotalSeconds() const {
  double total = 0;
  for (const OpTotals& t : totals_) total += t.seconds;
  return total;
}

std::string ProfiledKernels::Report(int64_t steps, double step_seconds) const {
  std::vector<int> order;
  for (int i = 0; i < static_cast<int>(KernelOp::kCount); ++i) {
    if (totals_[i].calls > 0) order.push_back(i);
  }
  std::sort(order.begin(), order.end(),
            [this](int a, int b) { return totals_[a].seconds > totals_[b].seconds; });
  const double per_step = 1e3 / static_cast<double>(steps);
  const double share = step_seconds > 0 ? 100.0 / step_seconds : 0.0;
  std::string text =
      absl::StrFormat("%-24s %10s %10s %7s\n", "op", "ms/step", "calls/step", "% step");
  for (int i : order) {
    const OpTotals& t = totals_[i];
    absl::StrAppendFormat(&text, "%-24s %10.3f %10.1f %6.1f%%\n",
                          KernelOpName(static_cast<KernelOp>(i)), t.seconds * per_step,
                          static_cast<double>(t.calls) / static_cast<double>(steps),
                          t.seconds * share);
  }
  const double rest = std::max(0.0, step_seconds - TotalSeconds());
  absl::StrAppendFormat(&text, "%-24s %10.3f %10s %6.1f%%\n", "(outside ops)", rest * per_step, "",
                        rest * share);
  absl::StrAppendFormat(&text, "%-24s %10.3f %10s %6.1f%%\n", "step", step_seconds * per_step, "",
                        step_seconds > 0 ? 100.0 : 0.0);
  return text;
}

void ProfiledKernels::CopyToDevice(void* dst, const void* host_src, size_t bytes) {
  Timed(KernelOp::kCopy, [&] { inner_->CopyToDevice(dst, host_src, bytes); });
}

void ProfiledKernels::CopyToHost(void* host_dst, const void* src, size_t bytes) {
  Timed(KernelOp::kCopy, [&] { inner_->CopyToHost(host_dst, src, bytes); });
}

void ProfiledKernels::Zero(void* dst, size_t bytes) {
  Timed(KernelOp::kZero, [&] { inner_->Zero(dst, bytes); });
}

void ProfiledKernels::EmbeddingForward(float* out, const int32_t* tokens, const float* wte,
                                       const float* wpe, int B, int T, int C,
                                       const DropoutPlan* dropout) {
  Timed(KernelOp::kEmbeddingForward,
        [&] { inner_->EmbeddingForward(out, tokens, wte, wpe, B, T, C, dropout); });
}

void ProfiledKernels::EmbeddingBackward(float* dwte, float* dwpe, float* dout,
                                        const int32_t* tokens, int B, int T, int C,
                                        const DropoutPlan* dropout) {
  Timed(KernelOp::kEmbeddingBackward,
        [&] { inner_->EmbeddingBackward(dwte, dwpe, dout, tokens, B, T, C, dropout); });
}

void ProfiledKernels::LayerNormForward(float* out, float* mean, float* rstd, const float* inp,
                                       const float* w, const float* b, int N, int C) {
  Timed(KernelOp::kLayerNormForward,
        [&] { inner_->LayerNormForward(out, mean, rstd, inp, w, b, N, C); });
}

void ProfiledKernels::LayerNormBackward(float* dinp, float* dw, float* db, const float* dout,
                                        const float* inp, const float* w, const float* mean,
                                        const float* rstd, int N, int C) {
  Timed(KernelOp::kLayerNormBackward,
        [&] { inner_->LayerNormBackward(dinp, dw, db, dout, inp, w, mean, rstd, N, C); });
}

void ProfiledKernels::MatmulForward(float* out, const float* inp, const float* w, const float* bias,
                                    int N, int C, int OC) {
  Timed(KernelOp::kMatmulForward, [&] { inner_->MatmulForward(out, inp, w, bias, N, C, OC); });
}

void ProfiledKernels::MatmulBackward(float* dinp, float* dw, float* dbias, const float* dout,
                                     const float* inp, const float* w, int N, int C, int OC,
                                     bool accumulate_dinp) {
  Timed(KernelOp::kMatmulBackward,
        [&] { inner_->MatmulBackward(dinp, dw, dbias, dout, inp, w, N, C, OC, accumulate_dinp); });
}

void ProfiledKernels::AttentionForward(float* out, float* probs, const float* qkv, int B, int T,
                                       int C, int NH, int layer, const DropoutPlan* dropout) {
  Timed(KernelOp::kAttentionForward,
        [&] { inner_->AttentionForward(out, probs, qkv, B, T, C, NH, layer, dropout); });
}

void ProfiledKernels::AttentionBackward(float* dqkv, const float* dout, const float* qkv,
                                        const float* out, const float* probs, int B, int T, int C,
                                        int NH, int layer, const DropoutPlan* dropout) {
  Timed(KernelOp::kAttentionBackward, [&] {
    inner_->AttentionBackward(dqkv, dout, qkv, out, probs, B, T, C, NH, layer, dropout);
  });
}

void ProfiledKernels::GeluForward(float* out, const float* inp, size_t n) {
  Timed(KernelOp::kGeluForward, [&] { inner_->GeluForward(out, inp, n); });
}

void ProfiledKernels::GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) {
  Timed(KernelOp::kGeluBackward, [&] { inner_->GeluBackward(dinp, inp, dout, n); });
}

void ProfiledKernels::ResidualDropoutForward(float* out, const float* residual, const float* x,
                                             int B, int T, int C, DropoutKind kind, int layer,
                                             const DropoutPlan* dropout) {
  Timed(KernelOp::kResidualDropoutForward,
        [&] { inner_->ResidualDropoutForward(out, residual, x, B, T, C, kind, layer, dropout); });
}

void ProfiledKernels::ResidualDropoutLayerNormForward(float* out, float* ln_out, float* mean,
                                                      float* rstd, const float* residual,
                                                      const float* x, const float* w,
                                                      const float* b, int B, int T, int C,
                                                      DropoutKind kind, int layer,
                                                      const DropoutPlan* dropout) {
  Timed(KernelOp::kResidualDropoutLayerNormForward, [&] {
    inner_->ResidualDropoutLayerNormForward(out, ln_out, mean, rstd, residual, x, w, b, B, T, C,
                                            kind, layer, dropout);
  });
}

void ProfiledKernels::DropoutBackward(float* dx, const float* dout, int B, int T, int C,
                                      DropoutKind kind, int layer, const DropoutPlan* dropout) {
  Timed(KernelOp::kDropoutBackward,
        [&] { inner_->DropoutBackward(dx, dout, B, T, C, kind, layer, dropout); });
}

void ProfiledKernels::CrossEntropyForward(float* losses, float* lse, const float* logits,
                                          const int32_t* targets, int N, int V) {
  Timed(KernelOp::kCrossEntropyForward,
        [&] { inner_->CrossEntropyForward(losses, lse, logits, targets, N, V); });
}

void ProfiledKernels::CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets,
                                           int N, int V, float scale) {
  Timed(KernelOp::kCrossEntropyBackward,
        [&] { inner_->CrossEntropyBackward(logits, lse, targets, N, V, scale); });
}

double ProfiledKernels::SumSquares(const float* x, size_t n) {
  return Timed(KernelOp::kSumSquares, [&] { return inner_->SumSquares(x, n); });
}

void ProfiledKernels::AdamW(float* params, const float* grads, float* m, float* v, size_t n,
                            const AdamWArgs& args) {
  Timed(KernelOp::kAdamW, [&] { inner_->AdamW(params, grads, m, v, n, args); });
}

void ProfiledKernels::AdamWRanges(float* params, const float* grads, float* m, float* v,
                                  const std::vector<AdamWRange>& ranges, const AdamWArgs& args) {
  Timed(KernelOp::kAdamW, [&] { inner_->AdamWRanges(params, grads, m, v, ranges, args); });
}

void ProfiledKernels::Scale(float* x, float alpha, size_t n) {
  Timed(KernelOp::kScale, [&] { inner_->Scale(x, alpha, n); });
}

}  // namespace dropk
