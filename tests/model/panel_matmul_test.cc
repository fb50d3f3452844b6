// The inference engine's products (model/cpu/panel_matmul.h): every output
// is the chain bias + x0*w0 + x1*w1 + ... in channel order, so its bits do
// not depend on the rows beside it, the tile it falls in, or the team size;
// and packing keeps every weight where the embedding lookup finds it. Each
// holds for fp32 panels and for bf16 ones (the chain over the weights
// rounded to bf16).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <vector>

#include "cpu/bf16_matmul.h"
#include "cpu/panel_matmul.h"

namespace dropk {
namespace {

std::vector<float> RandomValues(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// The header's chain for one output, one fused multiply-add per channel
// (std::fma rounds once, as the vector FMA does).
float ChainOf(const float* x, const float* w_row, float bias, int C) {
  float acc = bias;
  for (int c = 0; c < C; ++c) acc = std::fma(x[c], w_row[c], acc);
  return acc;
}

// The weights as a PackedLinear of `weights` holds them: as given, or each
// rounded to the nearest bf16 (ties to even).
std::vector<float> StoredWeights(const std::vector<float>& w, PanelWeights weights) {
  if (weights == PanelWeights::kFp32) return w;
  std::vector<float> rounded(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    const uint32_t bits = static_cast<uint32_t>(ToBf16Bits(w[i])) << 16;
    std::memcpy(&rounded[i], &bits, sizeof(float));
  }
  return rounded;
}

const PanelWeights kBothWeights[] = {PanelWeights::kFp32, PanelWeights::kBf16};

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Shape {
  int rows, in, out;
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << s.rows << " rows, " << s.in << " in, " << s.out << " out";
}

class PanelMatmulTest : public testing::TestWithParam<Shape> {};

// Widths that are and are not whole panels (48, 24 or 12 columns by
// target), channel counts that are not multiples of any vector, and row
// counts that take every tile (8, 4, 2 and 1 rows).
INSTANTIATE_TEST_SUITE_P(Shapes, PanelMatmulTest,
                         testing::Values(Shape{1, 7, 5}, Shape{3, 16, 48}, Shape{15, 33, 97},
                                         Shape{17, 64, 200}, Shape{29, 100, 13}));

TEST_P(PanelMatmulTest, EveryOutputIsItsOwnChainInChannelOrder) {
  const auto [R, C, OC] = GetParam();
  const std::vector<float> x = RandomValues(static_cast<size_t>(R) * C, 1);
  const std::vector<float> w = RandomValues(static_cast<size_t>(OC) * C, 2);
  const std::vector<float> bias = RandomValues(OC, 3);
  for (const PanelWeights weights : kBothWeights) {
    const std::vector<float> stored = StoredWeights(w, weights);
    for (const bool with_bias : {true, false}) {
      const PackedLinear packed(w.data(), with_bias ? bias.data() : nullptr, OC, C, weights);
      std::vector<float> out(static_cast<size_t>(R) * OC, NAN);
      PanelMatmul(out.data(), x.data(), packed, R, 2);
      for (int r = 0; r < R; ++r) {
        for (int o = 0; o < OC; ++o) {
          const float want =
              ChainOf(&x[static_cast<size_t>(r) * C], &stored[static_cast<size_t>(o) * C],
                      with_bias ? bias[o] : 0.0f, C);
#if defined(__FMA__)
          ASSERT_EQ(out[static_cast<size_t>(r) * OC + o], want)
              << "row " << r << " column " << o << ", bf16 " << (weights == PanelWeights::kBf16);
#else  // c + a * b: two roundings a step
          ASSERT_NEAR(out[static_cast<size_t>(r) * OC + o], want, 1e-5f * C)
              << "row " << r << " column " << o << ", bf16 " << (weights == PanelWeights::kBf16);
#endif
        }
      }
    }
  }
}

TEST_P(PanelMatmulTest, ARowsBitsDoNotDependOnTheOtherRowsOrTheTeam) {
  const auto [R, C, OC] = GetParam();
  const std::vector<float> x = RandomValues(static_cast<size_t>(R) * C, 4);
  const std::vector<float> w = RandomValues(static_cast<size_t>(OC) * C, 5);
  const std::vector<float> bias = RandomValues(OC, 6);
  for (const PanelWeights weights : kBothWeights) {
    const PackedLinear packed(w.data(), bias.data(), OC, C, weights);
    std::vector<float> all(static_cast<size_t>(R) * OC);
    PanelMatmul(all.data(), x.data(), packed, R, 2);
    for (int r = 0; r < R; ++r) {
      std::vector<float> alone(OC);
      PanelMatmul(alone.data(), &x[static_cast<size_t>(r) * C], packed, 1, 1);
      const std::vector<float> among(all.begin() + static_cast<ptrdiff_t>(r) * OC,
                                     all.begin() + static_cast<ptrdiff_t>(r + 1) * OC);
      ASSERT_TRUE(SameBits(alone, among))
          << "row " << r << " of " << R << ", bf16 " << (weights == PanelWeights::kBf16);
    }
    std::vector<float> three_threads(all.size());
    PanelMatmul(three_threads.data(), x.data(), packed, R, 3);
    EXPECT_TRUE(SameBits(all, three_threads));
  }
}

TEST(PackedLinearTest, CopyRowGivesBackEachRowOfTheWeights) {
  const int OC = 101, C = 19;
  const std::vector<float> w = RandomValues(static_cast<size_t>(OC) * C, 7);
  const PackedLinear packed(w.data(), nullptr, OC, C);
  EXPECT_EQ(packed.out_features(), OC);
  EXPECT_EQ(packed.in_features(), C);
  EXPECT_EQ(packed.num_panels(),
            (OC + PackedLinear::kPanelColumns - 1) / PackedLinear::kPanelColumns);
  for (int o = 0; o < OC; ++o) {
    std::vector<float> row(C);
    packed.CopyRow(o, row.data());
    ASSERT_TRUE(SameBits(row, std::vector<float>(w.begin() + static_cast<ptrdiff_t>(o) * C,
                                                 w.begin() + static_cast<ptrdiff_t>(o + 1) * C)))
        << "row " << o;
  }
}

// bf16 panels hold each weight rounded to the nearest bf16, which CopyRow
// gives back (the tied embedding under bf16 weights), in half the bytes
// (C = 23 is odd: its last channel pairs with padding).
TEST(PackedLinearTest, Bf16PanelsHoldTheRoundedWeightsInHalfTheBytes) {
  const int OC = 97, C = 23;
  std::vector<float> w = RandomValues(static_cast<size_t>(OC) * C, 9);
  w[5] = 1.0f + 1.0f / 256.0f;  // halfway between two bf16s: ties to even, down to 1
  w[6] = 1.0f + 3.0f / 256.0f;  // halfway, up to the even 1 + 4/256
  const PackedLinear fp32(w.data(), nullptr, OC, C);
  const PackedLinear bf16(w.data(), nullptr, OC, C, PanelWeights::kBf16);
  EXPECT_EQ(bf16.weights(), PanelWeights::kBf16);
  const size_t bias_bytes =
      static_cast<size_t>(fp32.num_panels()) * PackedLinear::kPanelColumns * 4;
  // Two bytes a weight; an odd channel count takes one channel of padding.
  EXPECT_EQ(fp32.bytes() - bias_bytes,
            static_cast<size_t>(fp32.num_panels()) * C * PackedLinear::kPanelColumns * 4);
  EXPECT_EQ(bf16.bytes() - bias_bytes, (fp32.bytes() - bias_bytes) / 2 * (C + 1) / C);
  const std::vector<float> rounded = StoredWeights(w, PanelWeights::kBf16);
  EXPECT_EQ(rounded[5], 1.0f);
  EXPECT_EQ(rounded[6], 1.0f + 4.0f / 256.0f);
  for (int o = 0; o < OC; ++o) {
    std::vector<float> row(C);
    bf16.CopyRow(o, row.data());
    ASSERT_TRUE(
        SameBits(row, std::vector<float>(rounded.begin() + static_cast<ptrdiff_t>(o) * C,
                                         rounded.begin() + static_cast<ptrdiff_t>(o + 1) * C)))
        << "row " << o;
  }
}

TEST(PanelMatmulEdgeTest, NoRowsWritesNothing) {
  const std::vector<float> w = RandomValues(6, 8);
  const PackedLinear packed(w.data(), nullptr, 3, 2);
  float out[1] = {42.0f};
  PanelMatmul(out, nullptr, packed, 0, 2);
  EXPECT_EQ(out[0], 42.0f);
}

}  // namespace
}  // namespace dropk
