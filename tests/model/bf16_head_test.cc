// A bf16 KV cache's heads (model/cpu/bf16_head.h): packing rounds each value
// to the nearest bf16, and the score and the weighted sum over a packed head
// give, bit for bit, the fp32 cache's arithmetic over the widened values, at
// both vector widths (Lanes8, the path of AVX builds, and Lanes4, the
// portable one) and at head sizes with and without a tail past 16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/bf16_head.h"
#include "cpu/bf16_matmul.h"
#include "cpu/fixed_order_dot.h"

namespace dropk {
namespace {

// Values spread over several binades, signs mixed, as keys and queries are.
std::vector<float> Values(int n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-6, 6);
  std::vector<float> v(n);
  for (float& x : v) x = std::ldexp(mantissa(gen), exponent(gen));
  return v;
}

const int kHeadSizes[] = {1, 5, 12, 16, 20, 31, 32, 48, 64, 100, 128};

TEST(Bf16HeadTest, PackRoundsToNearestEvenAndUnpackWidensExactly) {
  for (const int n : kHeadSizes) {
    const std::vector<float> x = Values(n, 1 + n);
    std::vector<uint16_t> packed(n);
    PackBf16Head(packed.data(), x.data(), n);
    std::vector<float> back(n);
    UnpackBf16Head(back.data(), packed.data(), n);
    for (int d = 0; d < n; ++d) {
      const uint16_t want = ToBf16Bits(x[d]);
      uint32_t got_bits;
      std::memcpy(&got_bits, &back[d], sizeof got_bits);
      EXPECT_EQ(got_bits, static_cast<uint32_t>(want) << 16) << "n " << n << " d " << d;
    }
  }
  // Ties go to the even bf16: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
  const float tie = 1.0f + std::ldexp(1.0f, -8);
  uint16_t packed;
  PackBf16Head(&packed, &tie, 1);
  EXPECT_EQ(Bf16BitsToFloat(packed), 1.0f);
}

// The layout itself: a whole 16 as pairs (x[j], x[j + 8]), the tail in order.
TEST(Bf16HeadTest, WholeSixteensArePairedAndTheTailIsInOrder) {
  std::vector<float> x(20);
  for (int d = 0; d < 20; ++d) x[d] = static_cast<float>(d);  // exact in bf16
  std::vector<uint16_t> packed(20);
  PackBf16Head(packed.data(), x.data(), 20);
  const float want[20] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 16, 17, 18, 19};
  for (int i = 0; i < 20; ++i) EXPECT_EQ(Bf16BitsToFloat(packed[i]), want[i]) << i;
}

template <typename Lanes>
void ExpectProductsMatchFp32(const char* width) {
  for (const int n : kHeadSizes) {
    SCOPED_TRACE(testing::Message() << width << ", head size " << n);
    const std::vector<float> q = Values(n, 100 + n), x = Values(n, 200 + n);
    std::vector<uint16_t> packed(n);
    PackBf16Head(packed.data(), x.data(), n);
    std::vector<float> widened(n);
    UnpackBf16Head(widened.data(), packed.data(), n);

    const float want_dot = FixedOrderDot(q.data(), widened.data(), n);
    const float got_dot = FixedOrderDotBf16<Lanes>(q.data(), packed.data(), n);
    EXPECT_EQ(std::memcmp(&want_dot, &got_dot, sizeof(float)), 0) << want_dot << " " << got_dot;

    // Three positions' weighted values on one output, as attention sums them.
    std::vector<float> want(q), got(q);
    for (const float p : {0.625f, 0.3f, 0.075f}) {
      for (int d = 0; d < n; ++d) want[d] = MulAdd(p, widened[d], want[d]);
      AddScaledBf16<Lanes>(got.data(), p, packed.data(), n);
    }
    EXPECT_EQ(std::memcmp(want.data(), got.data(), n * sizeof(float)), 0);
  }
}

// Lanes8 is DotLanes where the target has AVX; elsewhere it is not used (and
// GCC warns that its vectors change the ABI).
#if defined(__AVX__)
TEST(Bf16HeadTest, ProductsMatchFp32OverWidenedValuesEightLanesWide) {
  ExpectProductsMatchFp32<Lanes8>("Lanes8");
}
#endif

TEST(Bf16HeadTest, ProductsMatchFp32OverWidenedValuesFourLanesWide) {
  ExpectProductsMatchFp32<Lanes4>("Lanes4");
}

}  // namespace
}  // namespace dropk
