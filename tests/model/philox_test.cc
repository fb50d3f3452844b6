// Philox4x32-10 against Random123's published known-answer vectors
// (kat_vectors, "philox4x32 10" lines: counter[4] key[2] -> output[4]).
#include "model/philox.h"

#include <gtest/gtest.h>

namespace dropk {
namespace {

struct KnownAnswer {
  Philox4x32Block counter;
  uint32_t key0, key1;
  Philox4x32Block expected;
};

TEST(PhiloxTest, MatchesRandom123KnownAnswers) {
  const KnownAnswer cases[] = {
      {{{0x00000000, 0x00000000, 0x00000000, 0x00000000}},
       0x00000000,
       0x00000000,
       {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       0xffffffff,
       0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       0xa4093822,
       0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const KnownAnswer& c : cases) {
    const Philox4x32Block out = Philox4x32_10(c.counter, c.key0, c.key1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], c.expected.v[i]) << "word " << i;
  }
}

TEST(PhiloxTest, SeedIsKeyLowWordFirst) {
  const Philox4x32Block direct =
      Philox4x32_10({{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0);
  const Philox4x32Block via_seed =
      Philox(0x299f31d0a4093822ull, 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(direct.v[i], via_seed.v[i]);
}

TEST(PhiloxTest, UniformFloatCoversHalfOpenUnitInterval) {
  EXPECT_EQ(UniformFloat(0u), 0.0f);
  EXPECT_LT(UniformFloat(0xFFFFFFFFu), 1.0f);
  EXPECT_GT(UniformFloat(0xFFFFFFFFu), 0.9999f);
}

}  // namespace
}  // namespace dropk
