// bf16 copies of matmul weights, made once and reused while the fp32
// weights stay the same. With precision bf16 every projection multiplies a
// bf16 copy of its weight; the forward and backward of a step and every
// micro-batch of gradient accumulation read the same weights, so converting
// them on each call (twice per step at least, ~50 ms of a 534 ms step on the
// small config) is wasted.
//
// Contract: the copy of [w, w + n) that Get returns stays in use until
// Invalidate is told of a write overlapping those bytes, or InvalidateAll.
// It is the owner's job to report every write to weight memory; CpuKernels
// reports its own (CopyToDevice, Zero, Scale, AdamW, AdamWRanges, Free) and those that
// callers announce through Kernels::NoteExternalWrite. A write it is not
// told of leaves a stale copy: the products would use old weights.
//
// Memory: one uint16_t per weight element seen (half the fp32 weights).
// Private to model/cpu/. Not thread-safe: call from the driving thread.
#ifndef DROPK_MODEL_CPU_BF16_WEIGHT_CACHE_H_
#define DROPK_MODEL_CPU_BF16_WEIGHT_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dropk {

class Bf16WeightCache {
 public:
  // The bf16 copy of w[0, n) (ConvertToBf16's rounding), converted now unless
  // a valid copy of exactly that range is held. Valid until the next
  // Invalidate/InvalidateAll that covers it.
  const uint16_t* Get(const float* w, size_t n);
  // Marks stale every copy whose source overlaps [begin, begin + bytes); its
  // storage is kept, so the next Get converts without allocating.
  void Invalidate(const void* begin, size_t bytes);
  // Forgets every copy and frees their storage (the weights may be gone).
  void InvalidateAll() { copies_.clear(); }
  // Conversions made so far (a miss in Get); for tests.
  int64_t conversions() const { return conversions_; }

 private:
  struct Copy {
    const float* source;
    size_t n;
    bool valid;
    std::vector<uint16_t> bf16;
  };
  // A handful of entries (four projections per layer and the LM head): a
  // linear scan is cheaper than any index.
  std::vector<Copy> copies_;
  int64_t conversions_ = 0;
};

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_BF16_WEIGHT_CACHE_H_
