// The CPU inference engine's KV cache and the attention that reads it: for
// each layer and slot, the keys and values of block_size positions, held in
// fp32 or in bf16 (EngineKvCache).
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
  // Offset of (layer, slot, pos)'s row of C values.
  size_t RowAt(int layer, int slot, int pos) const;
  template <typename Element>
  void AttendOf(const Element* keys, const Element* values, float* out, const float* q, int pos,
                float* scores) const;

  const EngineKvCache format_;
  const int max_slots_, T_, C_, NH_, hs_;
  std::vector<float> k_, v_;         // (L,S,T,C) in an fp32 cache, else empty
  std::vector<uint16_t> k16_, v16_;  // (L,S,T,C) in a bf16 cache (heads packed), else empty
};

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_KV_CACHE_H_
