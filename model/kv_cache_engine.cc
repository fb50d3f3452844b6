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
  const std::span<const int32_t> prompts[1] = {tokens};
  return PrefillMany(std::span<const int>(&slot, 1), prompts);
}

const float* KvCacheEngine::PrefillMany(std::span<const int> slots,
                                        std::span<const std::span<const int32_t>> prompts) {
  const int n = static_cast<int>(slots.size());
  DROPK_CHECK(n >= 1 && n <= max_slots_ && prompts.size() == slots.size());
  const RowPlan plan = Plan();
  int rows = 0;
  for (int i = 0; i < n; ++i) {
    const int slot = slots[i];
    const int len = static_cast<int>(prompts[i].size());
    DROPK_CHECK(slot >= 0 && slot < max_slots_);
    DROPK_CHECK(std::find(slots.begin(), slots.begin() + i, slot) == slots.begin() + i);
    DROPK_CHECK(len >= 1 && lengths_[slot] + len <= config_.block_size);
    DROPK_CHECK(rows + len <= max_rows_);
    for (int j = 0; j < len; ++j, ++rows) {
      DROPK_CHECK(prompts[i][j] >= 0 && prompts[i][j] < config_.vocab_size);
      plan.tokens[rows] = prompts[i][j];
      plan.slots[rows] = slot;
      plan.positions[rows] = lengths_[slot] + j;
    }
    plan.head_rows[i] = rows - 1;  // only each prompt's last position's logits are wanted
  }
  const float* logits = Step(rows, n);
  for (int i = 0; i < n; ++i) lengths_[slots[i]] += static_cast<int>(prompts[i].size());
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
