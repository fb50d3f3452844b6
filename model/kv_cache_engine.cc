#include "kv_cache_engine.h"

#include <algorithm>

#include "base/check.h"

namespace dropk {

KvCacheEngine::KvCacheEngine(const GptConfig& config, int max_slots)
    : config_(config),
      max_slots_(max_slots),
      max_rows_(std::max(max_slots, config.block_size)),
      lengths_(max_slots, 0) {}

void KvCacheEngine::Reset(int slot) {
  DROPK_CHECK(slot >= 0 && slot < max_slots_);
  lengths_[slot] = 0;
}

int KvCacheEngine::Length(int slot) const {
  DROPK_CHECK(slot >= 0 && slot < max_slots_);
  return lengths_[slot];
}

const float* KvCacheEngine::Prefill(int slot, std::span<const int32_t> tokens) {
  DROPK_CHECK(slot >= 0 && slot < max_slots_);
  const int n = static_cast<int>(tokens.size());
  DROPK_CHECK(n >= 1 && lengths_[slot] + n <= config_.block_size);
  const RowPlan plan = Plan();
  for (int i = 0; i < n; ++i) {
    DROPK_CHECK(tokens[i] >= 0 && tokens[i] < config_.vocab_size);
    plan.tokens[i] = tokens[i];
    plan.slots[i] = slot;
    plan.positions[i] = lengths_[slot] + i;
  }
  plan.head_rows[0] = n - 1;  // only the last position's logits are wanted
  const float* logits = Step(n, 1);
  lengths_[slot] += n;
  return logits;
}

const float* KvCacheEngine::Decode(std::span<const int> slots, std::span<const int32_t> tokens) {
  const int B = static_cast<int>(slots.size());
  DROPK_CHECK(B >= 1 && B <= max_slots_ && tokens.size() == slots.size());
  const RowPlan plan = Plan();
  for (int i = 0; i < B; ++i) {
    const int s = slots[i];
    DROPK_CHECK(s >= 0 && s < max_slots_ && lengths_[s] < config_.block_size);
    DROPK_CHECK(tokens[i] >= 0 && tokens[i] < config_.vocab_size);
    plan.tokens[i] = tokens[i];
    plan.slots[i] = s;
    plan.positions[i] = lengths_[s];
    plan.head_rows[i] = i;
  }
  const float* logits = Step(B, B);
  for (int i = 0; i < B; ++i) ++lengths_[slots[i]];
  return logits;
}

}  // namespace dropk
