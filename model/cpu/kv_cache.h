// The CPU inference engine's KV cache and the attention that reads it: for
// each layer and slot, the keys and values of block_size positions, held in
// fp32 or in bf16 (EngineKvCache). Each head's positions are contiguous
// ((L,S,NH,T,hs)), so attention reads a head's keys and values as one
// stream in position order. Laid out by position ((L,S,T,C)), a head's
// values at successive positions were a row apart (3 KB in GPT-2), and
// attention over 900 positions took as long with a bf16 cache as with an
// fp32 one (the reads were latency-bound); head-major, one thread's
// attention for 4 GPT-2 rows at 900 positions measured 17.7 ms of CPU in
// fp32 (24 before) and 9.8 ms in bf16 (2-core Zen 5 VM, 2026-12-01).
//
// A bf16 cache rounds each key and value to the nearest bf16 as it is
// written, each head packed as cpu/bf16_head.h lays it out, and widens them
// exactly as attention reads them; the scores, the softmax and the weighted
// sum of values are the fp32 cache's arithmetic in the fp32 cache's order.
// Either way a (row, head)'s output depends only on its query and its own
// slot's cache (batch invariance). Private to model/cpu/.
#ifndef DROPK_MODEL_CPU_KV_CACHE_H_
#define DROPK_MODEL_CPU_KV_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/inference.h"

namespace dropk {

class KvCache {
 public:
  // Zeroed keys and values for max_slots slots of config.block_size
  // positions in every layer (config as validated by GptConfig::Validate).
  KvCache(const GptConfig& config, int max_slots, EngineKvCache format);

  EngineKvCache format() const { return format_; }
  // Bytes the keys and values take: L x S x T x C x 2 x (4, or 2 in bf16).
  size_t bytes() const;

  // Stores one position's key k (C) and value v (C) in layer's cache of
  // slot, at pos (rounded to bf16 in a bf16 cache).
  void Write(int layer, int slot, int pos, const float* k, const float* v);

  // One head of one query over positions [0, pos] of slot's cache in layer:
  // out (hs) = softmax(q (hs) · k_j * scale over j) · v_j, with
  // scale = 1/sqrt(hs), each score a FixedOrderDot and the weighted sum one
  // multiply-add per position, in position order. scores is scratch of at
  // least pos + 1 floats. Thread-safe against other Attends (it only reads).
  void Attend(float* out, const float* q, int layer, int slot, int pos, int head,
              float* scores) const;

 private:
  // Offset of (layer, slot, head, pos)'s hs values.
  size_t HeadAt(int layer, int slot, int head, int pos) const;
  template <typename Element>
  void AttendOf(const Element* keys, const Element* values, float* out, const float* q, int pos,
                float* scores) const;

  const EngineKvCache format_;
  const int max_slots_, T_, NH_, hs_;
  std::vector<float> k_, v_;         // (L,S,NH,T,hs) in an fp32 cache, else empty
  std::vector<uint16_t> k16_, v16_;  // (L,S,NH,T,hs) in a bf16 cache (heads packed), else empty
};

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_KV_CACHE_H_
