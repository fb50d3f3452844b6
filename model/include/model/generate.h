// Autoregressive generation from a Gpt: temperature, top-k and top-p
// sampling, reproducible per seed (DESIGN invariant 5). This is the simple
// reference path (the whole context is re-run for every token, batch 1); the
// sampling service adds a KV cache and batching on top of the same Sample().
#ifndef DROPK_MODEL_GENERATE_H_
#define DROPK_MODEL_GENERATE_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "model/gpt.h"

namespace dropk {

// How one token is drawn from logits. Applied in this order: temperature,
// then top-k, then top-p. temperature 0 means greedy (argmax).
struct SamplingOptions {
  float temperature = 1.0f;  // >= 0
  int top_k = 0;             // 0 or negative: off; larger than V: clamped
  float top_p = 1.0f;        // in (0, 1]; 1: off
  uint64_t seed = 0;         // the request's own Philox key
};

// log(sum(exp(row))) over a row of logits (at least one value), stably
// (shifted by the row's maximum) and vectorised: a fast exp within 2 ulp of
// expf, summed in double in an order fixed at compile time, so the result is
// deterministic. The log-sum-exp of log-softmax: in the training loss
// (CpuKernels::CrossEntropyForward) and the service's logprobs.
float LogSumExp(std::span<const float> row);

// Draws one token id from logits (V) for the token at `position` of the
// output (the Philox counter), so the same (logits, options, position)
// always gives the same id. scratch must hold V floats and ids V ints; no
// allocation. Average O(V): top-k uses partial selection, not a full sort.
int32_t SampleToken(std::span<const float> logits, const SamplingOptions& options,
                    uint64_t position, std::span<float> scratch, std::span<int32_t> ids);

// Continues `prompt` (non-empty, ids < vocab) by max_new_tokens tokens with a
// model whose max_batch >= 1. Runs without dropout. Returns only the new ids.
// `stop`, when given, is asked before each token; once it returns true the
// ids made so far are returned (a prefix of the full result), so a long
// generation stays interruptible.
absl::StatusOr<std::vector<int32_t>> Generate(Gpt& gpt, std::span<const int32_t> prompt,
                                              int max_new_tokens, const SamplingOptions& options,
                                              const std::function<bool()>& stop = nullptr);

}  // namespace dropk

#endif  // DROPK_MODEL_GENERATE_H_
