#include "cpu/bf16_weight_cache.h"

#include <cstdint>

#include "cpu/bf16_matmul.h"

namespace dropk {

const uint16_t* Bf16WeightCache::Get(const float* w, size_t n) {
  Copy* copy = nullptr;
  for (Copy& c : copies_) {
    if (c.source == w) {
      copy = &c;
      break;
    }
  }
  if (copy == nullptr) copy = &copies_.emplace_back(Copy{w, n, false, {}});
  if (copy->valid && copy->n == n) return copy->bf16.data();
  copy->n = n;
  copy->bf16.resize(n);
  ConvertToBf16(copy->bf16.data(), w, n);
  copy->valid = true;
  ++conversions_;
  return copy->bf16.data();
}

void Bf16WeightCache::Invalidate(const void* begin, size_t bytes) {
  const auto lo = reinterpret_cast<uintptr_t>(begin), hi = lo + bytes;
  for (Copy& c : copies_) {
    const auto source_lo = reinterpret_cast<uintptr_t>(c.source);
    const uintptr_t source_hi = source_lo + c.n * sizeof(float);
    if (lo < source_hi && source_lo < hi) c.valid = false;
  }
}

}  // namespace dropk
