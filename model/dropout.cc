#include "model/dropout.h"

namespace dropk {

void DropoutScales(uint64_t seed, uint32_t stream, uint32_t site, uint32_t step, uint64_t e0,
                   int64_t n, float p, float* scale) {
  const uint64_t threshold = DropoutKeepThreshold(p);
  const float keep_scale = DropoutKeepScale(p);
  int64_t i = 0;
  // Elements before the first multiple of 4 share a block with earlier ones.
  while (i < n && ((e0 + i) & 3) != 0) {
    scale[i] = DropoutKeep(seed, stream, site, step, e0 + i, threshold) ? keep_scale : 0.0f;
    ++i;
  }
  // Whole blocks: independent iterations, which the compiler can vectorise.
  const int64_t whole = (n - i) / 4;
  const uint64_t block0 = (e0 + i) >> 2;
  float* out = scale + i;
  for (int64_t j = 0; j < whole; ++j) {
    const Philox4x32Block r = Philox(seed, static_cast<uint32_t>(block0 + j), stream, site, step);
    for (int w = 0; w < 4; ++w) out[4 * j + w] = r.v[w] < threshold ? keep_scale : 0.0f;
  }
  i += whole * 4;
  for (; i < n; ++i) {
    scale[i] = DropoutKeep(seed, stream, site, step, e0 + i, threshold) ? keep_scale : 0.0f;
  }
}

}  // namespace dropk
