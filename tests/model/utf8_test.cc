#include "model/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace dropk {
namespace {

TEST(Utf8Test, CompleteTextIsNotHeldBack) {
  const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x99\x82";  // a é € 🙂
  EXPECT_EQ(CompleteUtf8Prefix(text, text.size()), text.size());
  EXPECT_EQ(CompleteUtf8Prefix(text, 0), 0u);
  EXPECT_EQ(CompleteUtf8Prefix("abc", 2), 2u);
}

TEST(Utf8Test, UnfinishedCharacterIsHeldBackFromItsLeadByte) {
  const std::string emoji = "ok \xF0\x9F\x99\x82";  // 🙂 is 4 bytes from offset 3
  for (size_t end = 4; end < emoji.size(); ++end) {
    EXPECT_EQ(CompleteUtf8Prefix(emoji, end), 3u) << "end " << end;
  }
  const std::string e_acute = "caf\xC3\xA9";
  EXPECT_EQ(CompleteUtf8Prefix(e_acute, 4), 3u);
  EXPECT_EQ(CompleteUtf8Prefix(e_acute, 5), 5u);
  const std::string euro = "\xE2\x82\xAC";
  EXPECT_EQ(CompleteUtf8Prefix(euro, 2), 0u);
}

TEST(Utf8Test, InvalidBytesAreNeverHeldBack) {
  EXPECT_EQ(CompleteUtf8Prefix("a\xFF", 2), 2u);             // not UTF-8 at all
  EXPECT_EQ(CompleteUtf8Prefix("\x80\x80\x80\x80", 4), 4u);  // stray continuations
  EXPECT_EQ(CompleteUtf8Prefix("\xC3\xA9\xA9", 3), 3u);      // one continuation too many
}

TEST(Utf8Test, StreamingByteByByteSendsEveryCharacterWhole) {
  // What the sampler does: after each token's bytes arrive, send the newly
  // complete prefix. Every event must be valid UTF-8 on its own.
  const std::string text = "h\xC3\xA9llo \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x91\x8D!";
  size_t sent = 0;
  std::string joined;
  for (size_t have = 1; have <= text.size(); ++have) {
    const size_t safe = CompleteUtf8Prefix(text, have);
    ASSERT_GE(safe, sent);
    const std::string event = text.substr(sent, safe - sent);
    if (!event.empty()) {
      EXPECT_EQ(CompleteUtf8Prefix(event, event.size()), event.size()) << "split character";
      EXPECT_NE(static_cast<unsigned char>(event[0]) & 0xC0, 0x80) << "starts mid-character";
    }
    joined += event;
    sent = safe;
  }
  EXPECT_EQ(joined, text);
}

TEST(Utf8Test, FirstNonUtf8ByteFollowsRfc3629) {
  EXPECT_EQ(FirstNonUtf8Byte(""), std::nullopt);
  EXPECT_EQ(FirstNonUtf8Byte("runs/h\xC3\xA9 \xE4\xB8\x96 \xF0\x9F\x91\x8D \xF4\x8F\xBF\xBF"),
            std::nullopt);
  EXPECT_EQ(FirstNonUtf8Byte("runs/\xFF"), 5u);         // never in UTF-8
  EXPECT_EQ(FirstNonUtf8Byte("ab\x80"), 2u);            // a stray continuation byte
  EXPECT_EQ(FirstNonUtf8Byte("a\xC3"), 1u);             // cut short
  EXPECT_EQ(FirstNonUtf8Byte("a\xC3x"), 1u);            // not continued
  EXPECT_EQ(FirstNonUtf8Byte("\xC0\xAF"), 0u);          // overlong '/'
  EXPECT_EQ(FirstNonUtf8Byte("\xE0\x80\xAF"), 0u);      // overlong '/'
  EXPECT_EQ(FirstNonUtf8Byte("x\xED\xA0\x80"), 1u);     // a surrogate, U+D800
  EXPECT_EQ(FirstNonUtf8Byte("\xF4\x90\x80\x80"), 0u);  // past U+10FFFF
}

}  // namespace
}  // namespace dropk
