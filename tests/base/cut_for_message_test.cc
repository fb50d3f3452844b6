// base/cut_for_message.h: what an error message quotes of a client's text.
#include "base/cut_for_message.h"

#include <string>

#include "gtest/gtest.h"

namespace dropk {
namespace {

TEST(CutForMessageTest, ShortTextIsQuotedWhole) {
  EXPECT_EQ(CutForMessage("", 5), "");
  EXPECT_EQ(CutForMessage("abc", 5), "abc");
  EXPECT_EQ(CutForMessage("abcde", 5), "abcde");  // exactly the limit: no "..."
}

TEST(CutForMessageTest, LongTextKeepsItsFirstBytesAndSaysItWasCut) {
  EXPECT_EQ(CutForMessage("abcdef", 5), "abcde...");
  EXPECT_EQ(CutForMessage(std::string(15000, 'x'), 200), std::string(200, 'x') + "...");
  EXPECT_EQ(CutForMessage("abc", 0), "...");
}

TEST(CutForMessageTest, NeverSplitsAUtf8Character) {
  // "é" is 2 bytes (C3 A9), "€" 3 (E2 82 AC), "😀" 4 (F0 9F 98 80).
  EXPECT_EQ(CutForMessage("aé", 2), "a...");
  EXPECT_EQ(CutForMessage("aéb", 3), "aé...");
  EXPECT_EQ(CutForMessage("a€", 2), "a...");
  EXPECT_EQ(CutForMessage("a€", 3), "a...");
  EXPECT_EQ(CutForMessage("a€b", 4), "a€...");
  for (size_t max = 1; max <= 4; ++max) {
    EXPECT_EQ(CutForMessage("a😀b", max), "a...") << max;
  }
  EXPECT_EQ(CutForMessage("a😀b", 5), "a😀...");
  // A character at the very start that does not fit leaves nothing of it.
  EXPECT_EQ(CutForMessage("😀", 2), "...");
}

TEST(CutForMessageTest, TextThatIsNotUtf8IsCutAtTheLimit) {
  // Five continuation bytes in a row start no character: a plain byte cut.
  const std::string junk(5, '\x80');
  EXPECT_EQ(CutForMessage(junk, 4), std::string(4, '\x80') + "...");
  EXPECT_EQ(CutForMessage("\xff\xfe\xfd", 2), "\xff\xfe...");
}

}  // namespace
}  // namespace dropk
