// A GPT-2 model: parameters, gradients and every activation in device memory
// allocated once at construction, forward and backward through a Kernels
// object. Nothing is allocated inside Forward or Backward.
#ifndef DROPK_MODEL_GPT_H_
#define DROPK_MODEL_GPT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "model/dropout.h"
#include "model/kernels.h"
#include "model/param_layout.h"

namespace dropk {

// Called during Backward each time the kernels that make the gradients of
// [begin, end) of the flat gradient buffer final for this micro-batch have
// been enqueued. Ranges arrive in the order backward finishes them: ln_f,
// block L-1, ..., block 0, then [0, wpe end) (wte and wpe). `ready` was
// recorded on the model's Kernels right after those kernels: the gradients
// may be read only after waiting on it (base/device_event.h; a no-op on the
// CPU). It stays valid until the next call to Backward. Data-parallel
// training starts a bucket's allreduce here.
using GradsReadyFn = std::function<void(size_t begin, size_t end, DeviceEvent* ready)>;

// Bytes a Gpt allocates, as doubles so that any shape can be sized, even
// one whose byte count would overflow 64 bits.
struct GptFootprint {
  double params_bytes = 0;       // parameters (ParamLayout)
  double grads_bytes = 0;        // gradients, same layout
  double activations_bytes = 0;  // activations and backward scratch for max_batch x block_size
  double TotalBytes() const;
};

class Gpt {
 public:
  // What Create(config, max_batch, ...) allocates, computed from the same
  // layout and buffer list, without allocating. InvalidArgument for an
  // invalid config or max_batch, or a parameter count past 64 bits.
  // Attention's saved state is taken at the default kernels' size, (B,NH,T,T)
  // per layer, the largest any kernels keep.
  static absl::StatusOr<GptFootprint> Footprint(const GptConfig& config, int max_batch);
  // The same with attention_saved floats per layer
  // (Kernels::AttentionSavedFloats of the kernels that will run).
  static absl::StatusOr<GptFootprint> Footprint(const GptConfig& config, int max_batch,
                                                double attention_saved);

  // Allocates parameters, gradients and activations for batches of up to
  // max_batch sequences of up to config.block_size tokens. Fails on an invalid
  // config, on shapes the kernels cannot index (more than 2^31-1 rows of
  // max_batch x block_size) and on sizes no address space holds; it does not
  // check free memory (see Footprint). `kernels` must outlive the model.
  static absl::StatusOr<std::unique_ptr<Gpt>> Create(const GptConfig& config, int max_batch,
                                                     Kernels* kernels);
  ~Gpt();

  // GPT-2 initialisation as nanoGPT: N(0, 0.02) matrices and embeddings,
  // N(0, 0.02/sqrt(2L)) for the residual projections, zero biases, LayerNorm
  // 1 and 0. Normals come from Philox keyed by seed, so every machine and
  // every rank initialises identically.
  void InitWeights(uint64_t seed);

  // Runs the model over host tokens (B,T), 1 <= B <= max_batch,
  // 1 <= T <= block_size (callers size their batches from the same config;
  // a violation is a bug and fails a DROPK_CHECK).
  // With host targets (B,T) it returns the mean cross-entropy and prepares
  // Backward; without (nullptr) it returns 0 and only the logits are valid.
  // dropout == nullptr means evaluation: no dropout anywhere.
  float Forward(const int32_t* host_tokens, const int32_t* host_targets, int B, int T,
                const DropoutPlan* dropout);

  // Backpropagates the last Forward with targets, accumulating into grads()
  // the gradient of loss_scale * (mean loss). Uses the same dropout plan as
  // that Forward (masks are regenerated, not stored).
  void Backward(float loss_scale, const GradsReadyFn& on_ready = nullptr);

  void ZeroGrad();

  // Logits (B,T,V) of the last Forward, copied to the host.
  void LogitsToHost(int b, int t, float* host_out) const;

  const GptConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  int max_batch() const { return max_batch_; }
  size_t num_params() const { return layout_.num_params(); }
  float* params() { return params_.data(); }  // device memory, layout()
  float* grads() { return grads_.data(); }    // device memory, layout()
  Kernels* kernels() const { return kernels_; }

  // Multiply-adds of one forward+backward over B*T tokens at context T,
  // counted as 2 FLOPs each: 6 * params * tokens plus attention
  // (the usual estimate used for MFU).
  double TrainingFlops(int B, int T) const;

 private:
  Gpt(const GptConfig& config, int max_batch, Kernels* kernels);
  struct Activations;
  // Calls visit(member, element count) for every activation buffer;
  // attention_saved is what the kernels keep per layer for attention's
  // backward at max_batch (Kernels::AttentionSavedFloats).
  template <typename N, typename Visit>
  static void VisitActivationBuffers(const GptConfig& config, int max_batch, N attention_saved,
                                     Visit&& visit);

  GptConfig config_;
  ParamLayout layout_;
  int max_batch_;
  Kernels* kernels_;
  DeviceBuffer<float> params_;
  DeviceBuffer<float> grads_;
  std::unique_ptr<Activations> acts_;
  // One readiness event per GradsReadyFn call of a Backward (n_layer + 2).
  std::vector<std::unique_ptr<DeviceEvent>> ready_events_;
  // The shape and dropout plan of the last Forward, for Backward.
  int last_B_ = 0, last_T_ = 0;
  bool has_targets_ = false;
  bool has_dropout_ = false;
  DropoutPlan last_dropout_;
};

}  // namespace dropk

#endif  // DROPK_MODEL_GPT_H_
