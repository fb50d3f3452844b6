// The KV-cache inference engine on one NVIDIA GPU (dropk-serve --device
// cuda). Weights and caches live on the GPU; each step uploads its rows'
// tokens, slots and positions, runs the model through the batch-invariant
// row kernels of inference.cu, and copies only the wanted logits back, so
// the scheduler samples on the host exactly as with the CPU engine.
//
// The logits are bitwise the same for a sequence alone or among others on
// the same GPU (inference_launch.h says why); they are close to, not
// bitwise equal to, the CPU engine's (other summation orders, expf).
//
// Private to model/; reach it through MakeInferenceEngine with
// options.device == Device::kCuda.
#ifndef DROPK_MODEL_CUDA_CUDA_INFERENCE_ENGINE_H_
#define DROPK_MODEL_CUDA_CUDA_INFERENCE_ENGINE_H_

#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "model/inference.h"

namespace dropk {

// Builds the engine on GPU options.cuda_device over host parameters (the
// caller has checked the config and the parameter count). Fails with one line
// when there is no usable GPU, the ordinal is out of range, block_size is
// past what the attention kernel holds, or the weights and caches do not fit
// in the GPU's memory (naming the bytes wanted and free).
//
// A CUDA error during Prefill or Decode (a lost device) throws DeviceError
// (base/device_error.h) naming the part of the step and CUDA's error; the
// engine must not be used again. The scheduler then fails the requests and
// marks the service unhealthy (sampler/scheduler.h).
absl::StatusOr<std::unique_ptr<InferenceEngine>> MakeCudaInferenceEngine(
    const GptConfig& config, std::span<const float> host_params, const InferenceOptions& options);

}  // namespace dropk

#endif  // DROPK_MODEL_CUDA_CUDA_INFERENCE_ENGINE_H_
