// AdamW over a Gpt's flat parameter buffer, with nanoGPT's grouping: weight
// decay on matrices and embeddings (2-D tensors), none on biases and
// LayerNorm. The moments live on the model's device in the same layout as
// the parameters, so a slice of one is a slice of all.
#ifndef DROPK_TRAINER_OPTIMIZER_H_
#define DROPK_TRAINER_OPTIMIZER_H_

#include <cstdint>
#include <vector>

#include "model/gpt.h"

namespace dropk {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamWOptimizer {
 public:
  // gpt must outlive the optimizer. Moments start at zero.
  AdamWOptimizer(Gpt* gpt, const AdamWOptions& options);

  // One update of every parameter from gpt->grads() multiplied by
  // grad_scale (global-norm clipping), at learning rate lr.
  void Step(float lr, float grad_scale);

  int64_t step() const { return step_; }
  // Restores AdamW's t when resuming from a checkpoint.
  void set_step(int64_t step) { step_ = step; }
  float* first_moment() { return m_.data(); }   // device memory, param layout
  float* second_moment() { return v_.data(); }  // device memory, param layout

 private:
  Gpt* gpt_;
  AdamWOptions options_;
  DeviceBuffer<float> m_, v_;
  // Maximal runs of tensors with the same decay, updated in one
  // Kernels::AdamWRanges call.
  std::vector<AdamWRange> ranges_;
  int64_t step_ = 0;
};

// The factor that clips gradients of global L2 norm `norm` to `max_norm`
// (1 when max_norm <= 0, i.e. clipping off, or the norm is within it).
float ClipScale(double norm, float max_norm);

}  // namespace dropk

#endif  // DROPK_TRAINER_OPTIMIZER_H_
