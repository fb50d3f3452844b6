#include "trainer/optimizer.h"

#include <cmath>

namespace dropk {

AdamWOptimizer::AdamWOptimizer(Gpt* gpt, const AdamWOptions& options)
    : gpt_(gpt),
      options_(options),
      m_(gpt->kernels(), gpt->num_params()),
      v_(gpt->kernels(), gpt->num_params()) {
  for (const ParamTensor& t : gpt->layout().tensors()) {
    const float decay = t.weight_decay ? options_.weight_decay : 0.0f;
    if (!ranges_.empty() && ranges_.back().weight_decay == decay &&
        ranges_.back().end == t.offset) {
      ranges_.back().end = t.offset + t.numel;
    } else {
      ranges_.push_back({t.offset, t.offset + t.numel, decay});
    }
  }
}

void AdamWOptimizer::Step(float lr, float grad_scale) {
  ++step_;
  AdamWArgs args;
  args.lr = lr;
  args.beta1 = options_.beta1;
  args.beta2 = options_.beta2;
  args.eps = options_.eps;
  args.grad_scale = grad_scale;
  args.bias_correction1 = 1.0f - std::pow(options_.beta1, static_cast<float>(step_));
  args.bias_correction2 = 1.0f - std::pow(options_.beta2, static_cast<float>(step_));
  gpt_->kernels()->AdamWRanges(gpt_->params(), gpt_->grads(), m_.data(), v_.data(), ranges_, args);
}

float ClipScale(double norm, float max_norm) {
  if (max_norm <= 0.0f || !(norm > max_norm)) return 1.0f;
  return static_cast<float>(max_norm / norm);
}

}  // namespace dropk
