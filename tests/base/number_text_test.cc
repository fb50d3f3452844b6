// base/number_text.h: reading a number as typed, so that an error quotes
// what the user wrote rather than what a float or double made of it.
#include "base/number_text.h"

#include <cmath>
#include <limits>
#include <string>

#include "base/exact_decimal.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dropk {
namespace {

using ::testing::HasSubstr;

TEST(NumberTextTest, SpellsNonZero) {
  for (const char* nonzero :
       {"1", "1e-50", "-1e-400", "0.0001", " 1e-400 ", "0x1p-2000", "0X0.8P-1100", "5e0"}) {
    EXPECT_TRUE(SpellsNonZero(nonzero)) << nonzero;
  }
  // Digits after the exponent mark do not count: 0e5 is zero however big
  // its exponent.
  for (const char* zero : {"0", "-0.0", "0e5", "0.000e-99", "0x0p5", "0X0.0P+9", "", " 0 "}) {
    EXPECT_FALSE(SpellsNonZero(zero)) << zero;
  }
}

TEST(NumberTextTest, UnderflowProblemForFloat) {
  EXPECT_EQ(UnderflowProblem("1e-50", 0.0f),
            "1e-50 is too small for a float: it would be read as 0 (the smallest nonzero "
            "magnitude is 1.4013e-45); write 0 for zero");
  EXPECT_THAT(UnderflowProblem("-1e-46", -0.0f), HasSubstr("-1e-46 is too small for a float"));
  // A subnormal float holds 1e-40, and a zero is no underflow.
  EXPECT_EQ(UnderflowProblem("1e-40", 1e-40f), "");
  EXPECT_EQ(UnderflowProblem("0.0e-99", 0.0f), "");
}

TEST(NumberTextTest, UnderflowProblemForDouble) {
  EXPECT_EQ(UnderflowProblem("1e-400", 0.0),
            "1e-400 is too small for a double: it would be read as 0 (the smallest nonzero "
            "magnitude is 4.94066e-324); write 0 for zero");
  EXPECT_EQ(UnderflowProblem("1e-50", 1e-50), "");
  EXPECT_EQ(UnderflowProblem("-0", 0.0), "");
}

TEST(NumberTextTest, ReadRealTextSaysHowTheTextReads) {
  float f = -1;
  EXPECT_EQ(ReadRealText("0.5", &f), RealText::kFinite);
  EXPECT_EQ(f, 0.5f);
  EXPECT_EQ(ReadRealText("abc", &f), RealText::kNotANumber);
  EXPECT_EQ(ReadRealText("", &f), RealText::kNotANumber);
  EXPECT_EQ(ReadRealText("1e39", &f), RealText::kNotFinite);  // past float, not double
  EXPECT_EQ(ReadRealText("nan", &f), RealText::kNotFinite);
  EXPECT_EQ(ReadRealText("1e-50", &f), RealText::kUnderflow);
  EXPECT_EQ(f, 0.0f);
  double d = -1;
  EXPECT_EQ(ReadRealText("1e39", &d), RealText::kFinite);
  EXPECT_EQ(ReadRealText("1e-50", &d), RealText::kFinite);
  EXPECT_EQ(ReadRealText("-1e-400", &d), RealText::kUnderflow);
  EXPECT_EQ(ReadRealText("0e-400", &d), RealText::kFinite);
}

TEST(NumberTextTest, ReadRealTextReadsWhatADoubleHolds) {
  const std::pair<const char*, double> cases[] = {{"1e-50", 1e-50}, {"0.25", 0.25}, {" 2.5 ", 2.5},
                                                  {"+3", 3.0},      {"-0", 0.0},    {"0e-400", 0.0},
                                                  {"1e308", 1e308}};
  for (const auto& [text, expected] : cases) {
    double v = -1;
    EXPECT_EQ(ReadRealText(text, &v), RealText::kFinite) << text;
    EXPECT_EQ(v, expected) << text;
  }
  double v = 0;
  for (const char* text : {"abc", "", "1.5x", "--1"}) {
    EXPECT_EQ(ReadRealText(text, &v), RealText::kNotANumber) << text;
  }
  for (const char* text : {"inf", "-inf", "1e400", "-1e400"}) {
    EXPECT_EQ(ReadRealText(text, &v), RealText::kNotFinite) << text;
  }
  EXPECT_EQ(ReadRealText(" 1e-400\t", &v), RealText::kUnderflow);
}

// absl's SimpleAtod reads hexadecimal floats too, and an underflow in hex
// is one as well (SpellsNonZero reads hex digits).
TEST(NumberTextTest, ReadRealTextHex) {
  double v = 0;
  EXPECT_EQ(ReadRealText("0x1p3", &v), RealText::kFinite);
  EXPECT_EQ(v, 8.0);
  EXPECT_EQ(ReadRealText("0x1p-2000", &v), RealText::kUnderflow);
  EXPECT_EQ(ReadRealText("0x0p-2000", &v), RealText::kFinite);
  EXPECT_EQ(ReadRealText("0x1p2000", &v), RealText::kNotFinite);
}

TEST(NumberTextTest, ShortestFloatTextReadsBackAsTheFloat) {
  EXPECT_EQ(ShortestFloatText(1.0f), "1");
  EXPECT_EQ(ShortestFloatText(0.1f), "0.1");
  EXPECT_EQ(ShortestFloatText(1048576.0f), "1048576");
  EXPECT_EQ(ShortestFloatText(std::nextafter(1.0f, 0.0f)), "0.99999994");
  EXPECT_EQ(ShortestFloatText(std::numeric_limits<float>::infinity()), "inf");
}

TEST(NumberTextTest, AsFloatNoteOnlyWhenRoundingChangedWhatIsShown) {
  EXPECT_EQ(AsFloatNote("0.99999999", 0.99999999f), " (1 as a float)");
  EXPECT_EQ(AsFloatNote("1048576.01", 1048576.01f), " (1048576 as a float)");
  EXPECT_EQ(AsFloatNote("1e39", std::numeric_limits<float>::infinity()), " (inf as a float)");
  EXPECT_EQ(AsFloatNote("100.1", 100.1f), "");  // the float shows as typed
  EXPECT_EQ(AsFloatNote("1.5", 1.5f), "");      // exact
  EXPECT_EQ(AsFloatNote("1e0", 1.0f), "");      // another spelling, the same number
  // absl's six digits showed this float as 100, a number inside (0, 100].
  EXPECT_EQ(AsFloatNote("100.00001", 100.00001f), "");
  // 1 as a double too, and still not the number typed.
  EXPECT_EQ(AsFloatNote("0.99999999999999999999", 1.0f), " (1 as a float)");
  EXPECT_EQ(AsFloatNote("1.00000000000000000000", 1.0f), "");
}

TEST(NumberTextTest, CompareDecimalExactlyDoesNotRound) {
  EXPECT_EQ(CompareDecimalExactly("0.99999999999999999999", 1.0), -1);
  EXPECT_EQ(CompareDecimalExactly("1.00000000000000000001", 1.0), 1);
  EXPECT_EQ(CompareDecimalExactly(" 1.000e0 ", 1.0), 0);
  EXPECT_EQ(CompareDecimalExactly("100e-2", 1.0), 0);
  EXPECT_EQ(CompareDecimalExactly("0.001", 0.001), -1);  // 0.001 as a double is above it
  EXPECT_EQ(CompareDecimalExactly("0.1", 0.1f), -1);     // 0.1f is above 0.1
  EXPECT_EQ(CompareDecimalExactly("-0", 0.0), 0);
  EXPECT_EQ(CompareDecimalExactly("-1e-400", 0.0), -1);
  EXPECT_EQ(CompareDecimalExactly("1048576.01", 1048576.0), 1);
  EXPECT_EQ(CompareDecimalExactly("1e999999999999999999999", 1e308), 1);
  EXPECT_EQ(CompareDecimalExactly("-2", -1.0), -1);
  for (const char* not_decimal : {"0x1p0", "inf", "nan", "", "1e", "1.2.3", "abc", "."}) {
    EXPECT_EQ(CompareDecimalExactly(not_decimal, 1.0), std::nullopt) << not_decimal;
  }
  EXPECT_EQ(CompareDecimalExactly("1", std::numeric_limits<double>::infinity()), std::nullopt);
}

}  // namespace
}  // namespace dropk
