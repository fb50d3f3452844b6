// Inference with a KV cache: prefill a sequence's prompt once, then decode one
// token per step for many sequences together (continuous batching). No
// dropout, no recomputation of earlier positions, no allocation after
// construction.
//
// Batch invariance (DESIGN invariant 5): every output row is computed by the
// same arithmetic in the same order whatever the other rows of the step are,
// so a sequence's logits are bit for bit the same alone or among many. The
// CPU engine gets this from row-wise kernels (each product output is one
// multiply-add chain in channel order, each attention score one fixed-order
// dot product; threads split output columns, never a reduction), not from
// sgemm, whose blocking may depend on the number of rows.
//
// The interface is device-neutral; MakeInferenceEngine is the one place that
// chooses the implementation (model/cpu/inference_cpu.cc, or
// model/cuda/cuda_inference_engine.cc in a build with CUDA).
#ifndef DROPK_MODEL_INFERENCE_H_
#define DROPK_MODEL_INFERENCE_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/kernels.h"
#include "model/param_layout.h"

namespace dropk {

// How the engine holds the products' weights (the four per block and the LM
// head, which is also the token embedding): fp32, or bf16, each weight
// rounded to the nearest bf16 once (half the memory and the bytes a step
// reads; the products still sum in fp32, in the same fixed order, so batch
// invariance holds). A seed's text under bf16 is its own, reproducible, but
// not fp32's. LayerNorms, biases and position embeddings stay fp32; the KV
// cache is as EngineKvCache says. The CPU engine only.
enum class EngineWeights { kFp32, kBf16 };
const char* EngineWeightsName(EngineWeights weights);  // "fp32", "bf16"
// The inverse, for a flag its parser has limited to fp32 and bf16 (in any
// case): kBf16 for "bf16", kFp32 otherwise.
EngineWeights EngineWeightsFromName(std::string_view name);

// How the engine holds its KV cache: fp32, or bf16, each key and value
// rounded to the nearest bf16 (ties to even) as it is written and widened
// exactly as it is read. Half the memory a slot takes (GPT-2 124M: 38 MB a
// slot of 1,024 positions, against 75) and half the bytes attention reads at
// long contexts; scores, softmax and the weighted sums stay fp32, in the same
// fixed order, so batch invariance holds. A seed's text under bf16 is its
// own, reproducible, but not fp32's. The CPU engine only.
enum class EngineKvCache { kFp32, kBf16 };
const char* EngineKvCacheName(EngineKvCache kv_cache);  // "fp32", "bf16"
// The inverse, for a flag its parser has limited to fp32 and bf16 (in any
// case): kBf16 for "bf16", kFp32 otherwise.
EngineKvCache EngineKvCacheFromName(std::string_view name);

struct InferenceOptions {
  Device device = Device::kCpu;
  int max_slots = 16;   // sequences that can hold a KV cache at once (batch limit)
  int num_threads = 0;  // host threads for the CPU engine; 0 = all cores; at most kMaxThreads
  static constexpr int kMaxThreads = 1024;
  int cuda_device = 0;  // the GPU of the CUDA engine (a cudaSetDevice ordinal)
  EngineWeights weights = EngineWeights::kFp32;
  EngineKvCache kv_cache = EngineKvCache::kFp32;
  // CUDA engine: replay each decode step as one CUDA graph per row count
  // (captured on first use) instead of ~100 separate launches. The same
  // kernels and bits either way; off is for comparison and for debugging.
  bool cuda_graphs = true;
};

// Holds a copy of the weights and a KV cache of block_size positions for each
// of max_slots slots. Not thread-safe: one thread (the scheduler) drives it.
class InferenceEngine {
 public:
  virtual ~InferenceEngine() = default;

  virtual const GptConfig& config() const = 0;
  virtual int max_slots() const = 0;

  // Empties slot's cache (length 0).
  virtual void Reset(int slot) = 0;
  // Tokens cached in slot (the position the next token takes).
  virtual int Length(int slot) const = 0;

  // Appends tokens (n >= 1, Length(slot) + n <= block_size, ids < V) to
  // slot's sequence and returns the logits (V) that follow the last of them.
  // The pointer is host memory owned by the engine, valid until the next call.
  virtual const float* Prefill(int slot, std::span<const int32_t> tokens) = 0;

  // Prefills several sequences in one step: appends prompts[i] to slots[i]
  // (distinct slots, each prompt as Prefill asks, at most MaxStepTokens()
  // tokens in all) and returns logits (n,V), row i the logits after the last
  // token of prompts[i]: the bits Prefill(slots[i], prompts[i]) alone gives
  // (batch invariance), for one pass over the weights instead of n. Host
  // memory owned by the engine, valid until the next call.
  virtual const float* PrefillMany(std::span<const int> slots,
                                   std::span<const std::span<const int32_t>> prompts) = 0;
  // The most tokens one PrefillMany takes: max(max_slots(), block_size).
  int MaxStepTokens() const { return std::max(max_slots(), config().block_size); }

  // One decode step: appends tokens[i] to slots[i] (distinct slots, each with
  // Length < block_size) and returns logits (B,V), row i for slots[i]. Host
  // memory owned by the engine, valid until the next call.
  virtual const float* Decode(std::span<const int> slots, std::span<const int32_t> tokens) = 0;

  // Host threads the engine's last step ran on (a CPU engine's team, which
  // shrinks while other processes hold cores); 0 when its work is not on the
  // host. A caller sizing its own host work between steps matches it.
  virtual int HostThreads() const { return 0; }
};

// Builds an engine over host parameters in ParamLayout order (copied).
// InvalidArgument for a bad config, a parameter count that does not match
// the layout, or max_slots < 1; FailedPrecondition for device cuda in a
// build without CUDA or on a machine without a GPU (one line that says so).
absl::StatusOr<std::unique_ptr<InferenceEngine>> MakeInferenceEngine(
    const GptConfig& config, std::span<const float> host_params, const InferenceOptions& options);

}  // namespace dropk

#endif  // DROPK_MODEL_INFERENCE_H_
