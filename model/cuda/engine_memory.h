// What the CUDA inference engine (cuda_inference_engine.cc) will take of its
// GPU's memory, part by part, so that it can refuse a --max-batch that does
// not fit before it allocates anything, naming the parts. Plain arithmetic
// without CUDA headers, so the CPU tests cover it. Private to model/cuda/.
#ifndef DROPK_MODEL_CUDA_ENGINE_MEMORY_H_
#define DROPK_MODEL_CUDA_ENGINE_MEMORY_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_format.h"
#include "model/param_layout.h"

namespace dropk::cuda {

// Bytes of device memory, by part. Every array is rounded up to
// kAllocationGranule, as cudaMalloc hands out memory.
struct EngineMemory {
  // cudaMalloc's granule: an array of 1 byte takes this much.
  static constexpr size_t kAllocationGranule = size_t{2} << 20;
  // What one node of an instantiated CUDA graph is taken to hold on the
  // device (its kernel's parameters and launch state). An allowance, not a
  // measurement: CUDA does not report it, and kernel parameters take at most
  // 4 KiB (32 KiB since CUDA 12.1; the engine's take under 100 bytes).
  static constexpr size_t kGraphNodeBytes = 8 << 10;
  // Left free for what the CUDA runtime allocates itself after the engine's
  // arrays (module loading, the launch queue's growth, graph upload).
  static constexpr size_t kRuntimeHeadroom = size_t{256} << 20;

  size_t weights = 0;      // the parameters, fp32
  size_t kv_caches = 0;    // keys and values: 2 x (L, slots, T, C) fp32
  size_t activations = 0;  // the step's rows: x, ln, attention out, gathered, qkv, fc, stats
  size_t logits = 0;       // (max(slots, 1), V) fp32, and the step's plan
  size_t graphs = 0;       // one instantiated graph per decode row count 1..slots
  size_t headroom = kRuntimeHeadroom;

  size_t total() const { return weights + kv_caches + activations + logits + graphs + headroom; }

  // "weights 0.46 GiB, KV caches 4.50 GiB, ..." for an error message.
  std::string Describe() const {
    constexpr double kGiB = 1073741824.0;
    return absl::StrFormat(
        "weights %.2f GiB, KV caches %.2f GiB, activations and logits %.2f GiB, CUDA graphs "
        "%.2f GiB, runtime headroom %.2f GiB",
        weights / kGiB, kv_caches / kGiB, (activations + logits) / kGiB, graphs / kGiB,
        headroom / kGiB);
  }
};

// count elements of `element_bytes` as cudaMalloc rounds them.
inline size_t DeviceArrayBytes(size_t count, size_t element_bytes) {
  const size_t bytes = std::max<size_t>(count, 1) * element_bytes;
  const size_t g = EngineMemory::kAllocationGranule;
  return (bytes + g - 1) / g * g;
}

// Kernel launches and copies in one decode step of the engine: the plan's
// upload, the embedding, 8 per layer, then gather, LayerNorm, the LM head
// and the logits' copy (cuda_inference_engine.cc's EnqueueStep).
inline int DecodeStepNodes(int n_layer) { return 2 + 8 * n_layer + 4; }

// The engine's memory for `config` with `num_params` parameters and `slots`
// sequences: a step has at most max(slots, block_size) rows (a whole window
// of prefill, or one row per slot), and at most max(slots, 1) of them want
// logits. Graphs are counted only when `graphs` is on.
inline EngineMemory EngineMemoryFor(const GptConfig& config, size_t num_params, int slots,
                                    bool graphs) {
  const size_t L = config.n_layer, S = std::max(slots, 0), T = config.block_size, C = config.n_embd,
               V = config.vocab_size, R = std::max(S, T), H = std::max<size_t>(S, 1);
  EngineMemory m;
  m.weights = DeviceArrayBytes(num_params, sizeof(float));
  m.kv_caches = 2 * DeviceArrayBytes(L * S * T * C, sizeof(float));
  // x, ln, atty, gathered (R,C); qkv (R,3C); fch (R,4C); mean, rstd (R).
  m.activations =
      4 * DeviceArrayBytes(R * C, sizeof(float)) + DeviceArrayBytes(R * 3 * C, sizeof(float)) +
      DeviceArrayBytes(R * 4 * C, sizeof(float)) + 2 * DeviceArrayBytes(R, sizeof(float));
  m.logits = DeviceArrayBytes(H * V, sizeof(float)) + DeviceArrayBytes(4 * R, sizeof(int32_t));
  if (graphs) m.graphs = S * DecodeStepNodes(config.n_layer) * EngineMemory::kGraphNodeBytes;
  return m;
}

}  // namespace dropk::cuda

#endif  // DROPK_MODEL_CUDA_ENGINE_MEMORY_H_
