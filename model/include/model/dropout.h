// Reproducible dropout (DESIGN.md invariant 1).
//
// The keep/drop decision for element e of dropout site s is word (e mod 4) of
// Philox4x32-10(key = seed, counter = (e / 4, stream, s, step)); it is kept
// when that word is below (1-p)·2^32 and kept values are scaled by 1/(1-p).
// Nothing else feeds it, so backward regenerates the mask instead of storing
// it, a resumed run draws the same masks, and CPU and CUDA agree bit for bit.
#ifndef DROPK_MODEL_DROPOUT_H_
#define DROPK_MODEL_DROPOUT_H_

#include <cstdint>

#include "model/philox.h"

namespace dropk {

// The four places where GPT-2 applies dropout.
enum class DropoutKind : uint32_t {
  kEmbedding = 0,        // after token + position embedding
  kAttentionProbs = 1,   // on the attention probabilities, per layer
  kAttentionOutput = 2,  // on the attention projection, before the residual add
  kMlpOutput = 3,        // on the MLP projection, before the residual add
};
constexpr int kNumDropoutKinds = 4;

// The site id that enters the Philox counter: layer * 4 + kind. The embedding
// site uses layer 0.
DROPK_HOST_DEVICE uint32_t DropoutSiteId(DropoutKind kind, int layer) {
  return static_cast<uint32_t>(layer) * kNumDropoutKinds + static_cast<uint32_t>(kind);
}

// (1-p)·2^32 rounded down: an element is kept when its 32-bit random word is
// strictly below this. 64 bits wide so that p = 0 (threshold 2^32) keeps
// every element. p must be in [0, 1).
DROPK_HOST_DEVICE uint64_t DropoutKeepThreshold(float p) {
  return static_cast<uint64_t>((1.0 - static_cast<double>(p)) * 4294967296.0);
}

// Rates of the four sites; 0 disables a site.
struct DropoutRates {
  float embedding = 0.0f;
  float attention_probs = 0.0f;
  float attention_output = 0.0f;
  float mlp_output = 0.0f;

  float Of(DropoutKind kind) const {
    switch (kind) {
      case DropoutKind::kEmbedding: return embedding;
      case DropoutKind::kAttentionProbs: return attention_probs;
      case DropoutKind::kAttentionOutput: return attention_output;
      case DropoutKind::kMlpOutput: return mlp_output;
    }
    return 0.0f;
  }
  bool Any() const {
    return embedding > 0 || attention_probs > 0 || attention_output > 0 || mlp_output > 0;
  }
};

// Which random numbers one forward/backward pass draws. The trainer fills it
// from the dropout stream policy:
//   per_rank:   stream_base = rank, per_sample = false, step = micro-batches
//               since the start of training; e indexes the whole micro-batch.
//   per_sample: stream_base = index of the micro-batch's first sample in the
//               optimizer step's global batch, per_sample = true, step =
//               optimizer step; sample b uses stream stream_base + b and e
//               indexes within the sample.
struct DropoutPlan {
  uint64_t seed = 0;
  uint32_t step = 0;
  uint32_t stream_base = 0;
  bool per_sample = false;
  DropoutRates rates;
};

// The Philox address of one element of a (B, per_sample_elems) tensor under a
// plan: sample b, element i within the sample.
struct DropoutAddress {
  uint32_t stream;
  uint64_t element;
};
DROPK_HOST_DEVICE DropoutAddress DropoutAddressOf(const DropoutPlan& plan, int b,
                                                  uint64_t per_sample_elems, uint64_t i) {
  if (plan.per_sample) return {plan.stream_base + static_cast<uint32_t>(b), i};
  return {plan.stream_base, static_cast<uint64_t>(b) * per_sample_elems + i};
}

// The keep decision for element e of (stream, site, step) under seed.
DROPK_HOST_DEVICE bool DropoutKeep(uint64_t seed, uint32_t stream, uint32_t site, uint32_t step,
                                   uint64_t e, uint64_t keep_threshold) {
  const Philox4x32Block r = Philox(seed, static_cast<uint32_t>(e >> 2), stream, site, step);
  return r.v[e & 3] < keep_threshold;
}

// The factor a kept element is multiplied by: 1/(1-p), in float, the same on
// every backend.
DROPK_HOST_DEVICE float DropoutKeepScale(float p) { return 1.0f / (1.0f - p); }

// Writes the scale factors of elements [e0, e0 + n) of (stream, site, step)
// into scale: 1/(1-p) where kept, 0 where dropped. One Philox call serves four
// consecutive elements. Host code; the CUDA kernels call DropoutKeep.
void DropoutScales(uint64_t seed, uint32_t stream, uint32_t site, uint32_t step, uint64_t e0,
                   int64_t n, float p, float* scale);

}  // namespace dropk

#endif  // DROPK_MODEL_DROPOUT_H_
