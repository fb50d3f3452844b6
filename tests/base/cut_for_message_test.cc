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

TEST(HidesOrMovesTextTest, ControlsAndInvisibleFormatCharactersHideOrMoveText) {
  for (uint32_t cp : {0x00u,   0x09u,   0x0Au,   0x1Bu,   0x1Fu,   0x7Fu,   0x80u,   0x85u,
                      0x9Fu,   0x061Cu, 0x200Bu, 0x200Du, 0x200Eu, 0x200Fu, 0x2028u, 0x2029u,
                      0x202Au, 0x202Eu, 0x2060u, 0x2066u, 0x2069u, 0xFEFFu}) {
    EXPECT_TRUE(HidesOrMovesText(cp)) << std::hex << cp;
  }
  for (uint32_t cp : {0x20u, 0x41u, 0x7Eu, 0xA0u, 0xE9u, 0x061Bu, 0x200Au, 0x2010u, 0x2027u,
                      0x202Fu, 0x205Fu, 0x206Au, 0xFEFEu, 0xFFFDu, 0x1F600u}) {
    EXPECT_FALSE(HidesOrMovesText(cp)) << std::hex << cp;
  }
}

TEST(EscapeForMessageTest, EscapesWhatHidesOrMovesTextInLowerCaseHex) {
  EXPECT_EQ(EscapeForMessage(""), "");
  EXPECT_EQ(EscapeForMessage(std::string("a\0b", 3)), "a\\u0000b");  // NUL, C0
  EXPECT_EQ(EscapeForMessage("line\nend\ttab\x1b[31m"), "line\\u000aend\\u0009tab\\u001b[31m");
  EXPECT_EQ(EscapeForMessage("del\x7f"), "del\\u007f");
  EXPECT_EQ(EscapeForMessage("nel\u0085csi\u009b"), "nel\\u0085csi\\u009b");  // C1
  EXPECT_EQ(EscapeForMessage("abc\u202Edef"), "abc\\u202edef");  // right-to-left override
  EXPECT_EQ(EscapeForMessage("\u2066x\u2069\u200F\u061C"), "\\u2066x\\u2069\\u200f\\u061c");
  EXPECT_EQ(EscapeForMessage("zero\u200Bwidth\u200Djoin\u2060"),
            "zero\\u200bwidth\\u200djoin\\u2060");
  EXPECT_EQ(EscapeForMessage("\uFEFFbom"), "\\ufeffbom");
  EXPECT_EQ(EscapeForMessage("para\u2029line\u2028"), "para\\u2029line\\u2028");
}

// A message of several lines (a config report) keeps its line breaks and
// tabs, and escapes the rest: a path's ESC or carriage return.
TEST(EscapeForMessageTest, KeepingBreaksKeepsOnlyNewlinesAndTabs) {
  EXPECT_EQ(EscapeForMessage("a\nb\tc\r\x1b[31m", KeptBreaks::kNewlinesAndTabs),
            "a\nb\tc\\u000d\\u001b[31m");
  EXPECT_EQ(EscapeForMessage("\u202e\x0b\x0c", KeptBreaks::kNewlinesAndTabs),
            "\\u202e\\u000b\\u000c");
}

// A path may not hold a control character or a bidi override, but may hold
// the zero-width joiners and marks of Persian, Indic or emoji names.
TEST(EscapeForMessageTest, ControlCharactersAreControlsAndBidiOverridesOnly) {
  for (const std::string bad : {std::string("run\r"), std::string("a\nb"), std::string("\x1b[31m"),
                                std::string("x\u0085"), std::string("w\u202e.bin"),
                                std::string("\u2066x"), std::string("p\u2028q"), std::string("\x7f")}) {
    EXPECT_TRUE(HoldsControlCharacter(bad)) << EscapeForMessage(bad);
  }
  for (const std::string good :
       {std::string("runs/caf\u00e9 \xff"), std::string("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"),
        std::string("\U0001F9D1\u200D\U0001F4BB"), std::string("a\u200eb"), std::string("\x85")}) {
    EXPECT_FALSE(HoldsControlCharacter(good)) << EscapeForMessage(good);
  }
}

// What a program prints of an error: its lines kept, anything else escaped.
TEST(EscapeForMessageTest, ErrorTextForTerminalKeepsLinesOnly) {
  EXPECT_EQ(ErrorTextForTerminal(std::string_view("a\n\tb\r\x1b")), "a\n\tb\\u000d\\u001b");
}

TEST(EscapeForMessageTest, KeepsPrintableUtf8AndBytesThatAreNotUtf8) {
  for (const std::string text :
       {std::string("plain ASCII ~!@#$%^&*()"), std::string("caf\u00e9 \u20ac \u4e2d\u6587"),
        std::string("emoji \U0001F600 \U0001F9D1"), std::string("\u00a0nbsp \uFFFD")}) {
    EXPECT_EQ(EscapeForMessage(text), text);
  }
  EXPECT_EQ(EscapeForMessage("\U0001F600"), "\U0001F600");  // 4 bytes, kept whole
  EXPECT_EQ(EscapeForMessage("\U0001F9D1\u200D\U0001F4BB"), "\U0001F9D1\\u200d\U0001F4BB");
  // Bytes that are not UTF-8 are kept as they are: a lone continuation
  // byte, a truncated sequence, overlong and invalid lead bytes.
  for (const std::string junk :
       {std::string("\x80"), std::string("a\xe2\x80"), std::string("\xc0\xaf"),
        std::string("\xff\xfe"), std::string("\xe2\x80"), std::string("x\xf0\x9f\x98")}) {
    EXPECT_EQ(EscapeForMessage(junk), junk);
  }
  // A broken sequence does not swallow a control byte after it.
  EXPECT_EQ(EscapeForMessage("\xe2\x01"), "\xe2\\u0001");
  // C1 controls written as a bare byte (not UTF-8) are kept: not a character.
  EXPECT_EQ(EscapeForMessage("\x85"), "\x85");
}

TEST(CutAndEscapeForMessageTest, CutsThenEscapes) {
  EXPECT_EQ(CutAndEscapeForMessage("ab\u202Ecd", 100), "ab\\u202ecd");
  // The cut counts the client's bytes, and never splits the escaped character.
  EXPECT_EQ(CutAndEscapeForMessage("ab\u202Ecd", 4), "ab...");
  EXPECT_EQ(CutAndEscapeForMessage("ab\u202Ecd", 5), "ab\\u202e...");
  EXPECT_EQ(CutAndEscapeForMessage(std::string(300, '\x01'), 2), "\\u0001\\u0001...");
}

}  // namespace
}  // namespace dropk
