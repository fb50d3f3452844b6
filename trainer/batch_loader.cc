#include "trainer/batch_loader.h"

#include <vector>

#include "model/philox.h"

namespace dropk {
namespace {
constexpr uint32_t kDataStream = 0x44415441u;  // "DATA"
}  // namespace

BatchLoader::BatchLoader(const TokenFile* data, uint64_t seed, int block_size, uint32_t split)
    : data_(data), seed_(seed), block_size_(block_size), split_(split) {}

uint64_t BatchLoader::SampleOffset(uint64_t step, uint64_t sample) const {
  const Philox4x32Block r =
      Philox(seed_, static_cast<uint32_t>(sample), static_cast<uint32_t>(step),
             static_cast<uint32_t>(step >> 32) ^ kDataStream, split_ ^ static_cast<uint32_t>(sample >> 32));
  const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
  const uint64_t windows = data_->size() - block_size_;  // offsets 0 .. size - T - 1
  return bits % windows;
}

void BatchLoader::Fill(uint64_t step, uint64_t first_sample, int B, int32_t* inputs,
                       int32_t* targets) const {
  const int T = block_size_;
  std::vector<int32_t> window(T + 1);
  for (int b = 0; b < B; ++b) {
    data_->Read(SampleOffset(step, first_sample + b), T + 1, window.data());
    std::copy(window.begin(), window.begin() + T, inputs + static_cast<size_t>(b) * T);
    std::copy(window.begin() + 1, window.end(), targets + static_cast<size_t>(b) * T);
  }
}

}  // namespace dropk
