#include "model/tokenizer.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dropk {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh directory per test, removed afterwards.
TEST(TokenizerTest, CharVocabularyIsSortedDistinctCodePoints) {
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, "hello world");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->kind(), Tokenizer::CHAR);
  EXPECT_EQ(tokenizer->vocab_size(), 8);
  EXPECT_THAT(tokenizer->proto().code_points(),
              ElementsAre(' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w'));
  auto ids = tokenizer->Encode("hello");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(3, 2, 4, 4, 5));
}

TEST(TokenizerTest, CharRoundTripsMultibyteUtf8) {
  // 1-, 2-, 3- and 4-byte sequences: a, é, €, 😀.
  const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80 \xC3\xA9!";
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, text);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(tokenizer->proto().code_points(),
              ElementsAre(' ', '!', 'a', 0xE9u, 0x20ACu, 0x1F600u));
  auto ids = tokenizer->Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(2, 3, 4, 5, 0, 3, 1));
  EXPECT_EQ(tokenizer->Decode(*ids), text);
  EXPECT_EQ(tokenizer->DecodeOne(5), "\xF0\x9F\x98\x80");
}

TEST(TokenizerTest, InvalidUtf8NamesTheByteOffset) {
  for (const std::string& bad : {std::string("abc\xFFz"), std::string("abc\xC3"),
                                 std::string("abc\xC0\xAF"),         // overlong '/'
                                 std::string("abc\xED\xA0\x80")}) {  // surrogate D800
    auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, bad);
    ASSERT_FALSE(tokenizer.ok()) << "accepted " << bad;
    EXPECT_THAT(std::string(tokenizer.status().message()),
                HasSubstr("invalid UTF-8 at byte offset 3"));
  }
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, "abc");
  ASSERT_TRUE(tokenizer.ok());
  auto ids = tokenizer->Encode("ab\x80");
  ASSERT_FALSE(ids.ok());
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("byte offset 2"));
}

TEST(TokenizerTest, UnknownCharacterNamesItAndItsOffset) {
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, "abc");
  ASSERT_TRUE(tokenizer.ok());
  auto ids = tokenizer->Encode("ab\xC3\xA9");
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("'\xC3\xA9'"));
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("U+00E9"));
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("byte offset 2"));
}

// The bound the service uses to refuse a prompt too long for the context
// before encoding it: no token stands for more bytes than this.
TEST(TokenizerTest, MaxTokenBytes) {
  const auto bytes_of = [](const std::string& corpus) {
    return TextTokenizer::FromCorpus(Tokenizer::CHAR, corpus)->max_token_bytes();
  };
  EXPECT_EQ(bytes_of("hello"), 1u);
  EXPECT_EQ(bytes_of("h\xC3\xA9"), 2u);                   // é
  EXPECT_EQ(bytes_of("\xE2\x82\xAC a"), 3u);              // €
  EXPECT_EQ(bytes_of("\xF0\x9F\x98\x80\xC3\xA9 a"), 4u);  // 😀
  EXPECT_EQ(TextTokenizer::FromCorpus(Tokenizer::BYTE, "")->max_token_bytes(), 1u);
  Tokenizer bpe;
  bpe.set_kind(Tokenizer::GPT2_BPE);
  for (int b = 0; b < 256; ++b) bpe.add_vocab(std::string(1, static_cast<char>(b)));
  bpe.add_vocab("ab");
  auto* merge = bpe.add_merges();
  merge->set_left('a');
  merge->set_right('b');
  const auto tokenizer = TextTokenizer::FromProto(bpe);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->max_token_bytes(), 2u);
}

TEST(TokenizerTest, CharFromEmptyTextFails) {
  EXPECT_FALSE(TextTokenizer::FromCorpus(Tokenizer::CHAR, "").ok());
  EXPECT_FALSE(TextTokenizer::FromCorpus(Tokenizer::KIND_UNSPECIFIED, "abc").ok());
}

TEST(TokenizerTest, OutOfRangeIdsDecodeToReplacementCharacter) {
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, "ab");
  ASSERT_TRUE(tokenizer.ok());
  const std::vector<int32_t> ids = {0, -1, 2, 1, 1 << 30};
  EXPECT_EQ(tokenizer->Decode(ids),
            "a\xEF\xBF\xBD\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer->DecodeOne(-7), "\xEF\xBF\xBD");
}

TEST(TokenizerTest, ByteRoundTripsArbitraryBytes) {
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::BYTE, "ignored");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->vocab_size(), 256);
  EXPECT_EQ(tokenizer->proto().code_points_size(), 0);
  std::string bytes;
  for (int i = 255; i >= 0; --i) bytes.push_back(static_cast<char>(i));
  bytes += "\xFF\xC3";  // invalid UTF-8 is fine for bytes
  auto ids = tokenizer->Encode(bytes);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), bytes.size());
  EXPECT_EQ((*ids)[0], 255);
  EXPECT_EQ((*ids)[255], 0);
  EXPECT_EQ(tokenizer->Decode(*ids), bytes);
  EXPECT_EQ(tokenizer->DecodeOne(256), "\xEF\xBF\xBD");
}

TEST(TokenizerTest, FromProtoAcceptsValidProtos) {
  Tokenizer proto;
  proto.set_kind(Tokenizer::CHAR);
  for (uint32_t cp : {0x0Au, 0x41u, 0x10FFFFu}) proto.add_code_points(cp);
  auto tokenizer = TextTokenizer::FromProto(proto);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->vocab_size(), 3);
  proto.Clear();
  proto.set_kind(Tokenizer::BYTE);
  EXPECT_TRUE(TextTokenizer::FromProto(proto).ok());
}

TEST(TokenizerTest, FromProtoRejectsBadProtos) {
  struct Case {
    const char* what;
    Tokenizer proto;
    const char* message;
  };
  std::vector<Case> cases;
  const auto make = [](Tokenizer::Kind kind, std::vector<uint32_t> code_points) {
    Tokenizer proto;
    proto.set_kind(kind);
    for (uint32_t cp : code_points) proto.add_code_points(cp);
    return proto;
  };
  cases.push_back({"kind unset", make(Tokenizer::KIND_UNSPECIFIED, {65}), "Tokenizer.kind"});
  cases.push_back({"unknown kind", make(static_cast<Tokenizer::Kind>(9), {}), "is 9"});
  cases.push_back({"empty char", make(Tokenizer::CHAR, {}), "has 0 entries"});
  cases.push_back({"unsorted", make(Tokenizer::CHAR, {66, 65}), "code_points[1] = U+0041"});
  cases.push_back({"duplicate", make(Tokenizer::CHAR, {65, 65}), "sorted and distinct"});
  cases.push_back({"surrogate", make(Tokenizer::CHAR, {65, 0xD800}), "U+D800"});
  cases.push_back({"too large", make(Tokenizer::CHAR, {0x110000}), "U+110000"});
  cases.push_back({"byte with code points", make(Tokenizer::BYTE, {65}), "kind BYTE"});
  for (const Case& c : cases) {
    auto tokenizer = TextTokenizer::FromProto(c.proto);
    ASSERT_FALSE(tokenizer.ok()) << c.what;
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr(c.message)) << c.what;
  }
}

}  // namespace
}  // namespace dropk
