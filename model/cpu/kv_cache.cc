// KvCache: fp32 or bf16 rows, one attention routine over either.
#include "cpu/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu/bf16_head.h"
#include "cpu/fixed_order_dot.h"

namespace dropk {

KvCache::KvCache(const GptConfig& config, int max_slots, EngineKvCache format)
    : format_(format),
      max_slots_(max_slots),
      T_(config.block_size),
      NH_(config.n_head),
      hs_(config.n_embd / config.n_head) {
  const size_t n =
      static_cast<size_t>(config.n_layer) * max_slots * config.block_size * config.n_embd;
  if (format == EngineKvCache::kBf16) {
    k16_.assign(n, 0);
    v16_.assign(n, 0);
  } else {
    k_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
  }
}

size_t KvCache::bytes() const {
  return (k_.size() + v_.size()) * sizeof(float) + (k16_.size() + v16_.size()) * sizeof(uint16_t);
}

size_t KvCache::HeadAt(int layer, int slot, int head, int pos) const {
  return (((static_cast<size_t>(layer) * max_slots_ + slot) * NH_ + head) * T_ + pos) * hs_;
}

void KvCache::Write(int layer, int slot, int pos, const float* k, const float* v) {
  for (int h = 0; h < NH_; ++h) {
    const size_t at = HeadAt(layer, slot, h, pos);
    if (format_ == EngineKvCache::kBf16) {
      PackBf16Head(k16_.data() + at, k + h * hs_, hs_);
      PackBf16Head(v16_.data() + at, v + h * hs_, hs_);
    } else {
      std::memcpy(k_.data() + at, k + h * hs_, hs_ * sizeof(float));
      std::memcpy(v_.data() + at, v + h * hs_, hs_ * sizeof(float));
    }
  }
}

void KvCache::Attend(float* out, const float* q, int layer, int slot, int pos, int head,
                     float* scores) const {
  const size_t at = HeadAt(layer, slot, head, 0);
  if (format_ == EngineKvCache::kBf16) {
    AttendOf(k16_.data() + at, v16_.data() + at, out, q, pos, scores);
  } else {
    AttendOf(k_.data() + at, v_.data() + at, out, q, pos, scores);
  }
}

// keys and values point at the head's values of position 0; position j's
// follow hs_ further on per j.
template <typename Element>
void KvCache::AttendOf(const Element* keys, const Element* values, float* out, const float* q,
                       int pos, float* scores) const {
  constexpr bool kBf16 = std::is_same_v<Element, uint16_t>;
  const int hs = hs_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  float maxv = -INFINITY;
  for (int j = 0; j <= pos; ++j) {
    const Element* k = keys + static_cast<size_t>(j) * hs;
    if constexpr (kBf16) {
      scores[j] = FixedOrderDotBf16(q, k, hs) * scale;
    } else {
      scores[j] = FixedOrderDot(q, k, hs) * scale;
    }
    maxv = std::max(maxv, scores[j]);
  }
  float sum = 0.0f;
  for (int j = 0; j <= pos; ++j) {
    scores[j] = std::exp(scores[j] - maxv);
    sum += scores[j];
  }
  const float inv = 1.0f / sum;
  for (int d = 0; d < hs; ++d) out[d] = 0.0f;
  for (int j = 0; j <= pos; ++j) {
    const float pj = scores[j] * inv;
    const Element* v = values + static_cast<size_t>(j) * hs;
    if constexpr (kBf16) {
      AddScaledBf16(out, pj, v, hs);
    } else {
      for (int d = 0; d < hs; ++d) out[d] = MulAdd(pj, v[d], out[d]);
    }
  }
}

}  // namespace dropk
