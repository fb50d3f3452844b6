// The CPU engine's KV cache (model/cpu/kv_cache.h): a bf16 cache takes half
// the bytes, and its attention is the fp32 cache's, bit for bit, over keys
// and values rounded to bf16 (each value widened exactly, the same sums in
// the same order), at head sizes below 16, with a tail past 16, and whole.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "cpu/bf16_matmul.h"
#include "cpu/kv_cache.h"

namespace dropk {
namespace {

std::vector<float> Normal(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.5f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<float> RoundedToBf16(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16BitsToFloat(ToBf16Bits(v[i]));
  return out;
}

TEST(KvCacheTest, Bf16TakesHalfTheBytes) {
  const GptConfig config{61, 64, 3, 4, 32};
  const KvCache fp32(config, 5, EngineKvCache::kFp32), bf16(config, 5, EngineKvCache::kBf16);
  const size_t values = 2u * 3 * 5 * 64 * 32;  // keys and values of L x S x T x C
  EXPECT_EQ(fp32.bytes(), values * sizeof(float));
  EXPECT_EQ(bf16.bytes(), values * sizeof(uint16_t));
}

// n_embd / n_head: 12 (all tail), 20 (16 and a tail of 4), 32 (two whole 16s).
class KvCacheHeadSizeTest : public ::testing::TestWithParam<GptConfig> {};

TEST_P(KvCacheHeadSizeTest, Bf16AttentionIsFp32AttentionOverRoundedValues) {
  const GptConfig config = GetParam();
  const int C = config.n_embd, NH = config.n_head, hs = C / NH, T = config.block_size;
  const int slots = 3, slot = 1, layer = 1, positions = 40;
  KvCache bf16(config, slots, EngineKvCache::kBf16), rounded(config, slots, EngineKvCache::kFp32),
      unrounded(config, slots, EngineKvCache::kFp32);
  const std::vector<float> keys = Normal(static_cast<size_t>(positions) * C, 1);
  const std::vector<float> values = Normal(static_cast<size_t>(positions) * C, 2);
  const std::vector<float> rounded_keys = RoundedToBf16(keys);
  const std::vector<float> rounded_values = RoundedToBf16(values);
  for (int p = 0; p < positions; ++p) {
    bf16.Write(layer, slot, p, keys.data() + p * C, values.data() + p * C);
    rounded.Write(layer, slot, p, rounded_keys.data() + p * C, rounded_values.data() + p * C);
    unrounded.Write(layer, slot, p, keys.data() + p * C, values.data() + p * C);
  }
  const std::vector<float> q = Normal(C, 3);
  std::vector<float> scores(T), want(hs), got(hs), exact(hs);
  bool rounding_showed = false;
  for (const int pos : {0, 1, 17, positions - 1}) {
    for (int h = 0; h < NH; ++h) {
      rounded.Attend(want.data(), q.data() + h * hs, layer, slot, pos, h, scores.data());
      bf16.Attend(got.data(), q.data() + h * hs, layer, slot, pos, h, scores.data());
      EXPECT_EQ(std::memcmp(want.data(), got.data(), hs * sizeof(float)), 0)
          << "position " << pos << " head " << h;
      unrounded.Attend(exact.data(), q.data() + h * hs, layer, slot, pos, h, scores.data());
      rounding_showed |= std::memcmp(exact.data(), got.data(), hs * sizeof(float)) != 0;
    }
  }
  EXPECT_TRUE(rounding_showed);  // a bf16 cache is not an fp32 one
}

INSTANTIATE_TEST_SUITE_P(HeadSizes, KvCacheHeadSizeTest,
                         ::testing::Values(GptConfig{61, 64, 2, 3, 36}, GptConfig{61, 64, 2, 2, 40},
                                           GptConfig{61, 64, 2, 2, 64}),
                         [](const auto& info) {
                           return "HeadSize" +
                                  std::to_string(info.param.n_embd / info.param.n_head);
                         });

}  // namespace
}  // namespace dropk
