// GPT-2's byte-level BPE (TextTokenizer of kind GPT2_BPE) against OpenAI's
// ids: the known answers of data/gpt2/README.md and hard text whose expected
// ids tools/gpt2_reference.py (the algorithm of OpenAI's encoder.py) printed.
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gpt2_vocab_files.h"
#include "model/tokenizer.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string SourcePath(const std::string& relative) {
  return std::string(DROPK_SOURCE_DIR) + "/" + relative;
}

// The GPT-2 tokenizer, built once for the whole suite (parsing 1.5 MB of JSON
// and merges takes a while).
const TextTokenizer& Gpt2() {
  static const TextTokenizer* const tokenizer = [] {
    absl::StatusOr<Tokenizer> proto =
        Gpt2TokenizerFromFiles(ReadFile(SourcePath("data/gpt2/encoder.json")),
                               ReadFile(SourcePath("data/gpt2/vocab.bpe")));
    EXPECT_TRUE(proto.ok()) << proto.status();
    absl::StatusOr<TextTokenizer> tok = TextTokenizer::FromProto(*proto);
    EXPECT_TRUE(tok.ok()) << tok.status();
    return new TextTokenizer(*std::move(tok));
  }();
  return *tokenizer;
}

std::vector<int32_t> Encode(const std::string& text) {
  absl::StatusOr<std::vector<int32_t>> ids = Gpt2().Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>();
}

TEST(Gpt2TokenizerTest, KnownAnswer) {
  EXPECT_EQ(Gpt2().kind(), Tokenizer::GPT2_BPE);
  EXPECT_EQ(Gpt2().vocab_size(), 50257);
  EXPECT_THAT(Encode("Hello, world! First Citizen:"),
              ElementsAre(15496, 11, 995, 0, 3274, 22307, 25));
}

TEST(Gpt2TokenizerTest, TinyShakespeareIs338025Tokens) {
  const std::string text = ReadFile(SourcePath("data/tinyshakespeare.txt"));
  ASSERT_EQ(text.size(), 1115394u);
  const std::vector<int32_t> ids = Encode(text);
  EXPECT_EQ(ids.size(), 338025u);
  EXPECT_EQ(Gpt2().Decode(ids), text);
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

TEST(Gpt2TokenizerTest, HardTextMatchesOpenAiEncoder) {
  const std::vector<Case> cases = {
      {"Hello, world! First Citizen:", {15496, 11, 995, 0, 3274, 22307, 25}},
      {"I'm sure you'll see they've done it, haven't they? 'Tis he'd 'LL",
       {40,   1101, 1654, 345, 1183, 766, 484, 1053, 1760, 340, 11,
        4398, 470,  484,  30,  705,  51,  271, 339,  1549, 705, 3069}},
      {"\303\234n\303\257c\303\266d\303\251 Stra\303\237e "
       "\316\225\316\273\316\273\316\267\316\275\316\271\316\272\316\254 "
       "\321\200\321\203\321\201\321\201\320\272\320\270\320\271 "
       "\346\227\245\346\234\254\350\252\236\343\201\256\343\203\206\343\202\255\343\202\271\343"
       "\203\210 \344\270\255\346\226\207 \355\225\234\352\265\255\354\226\264 "
       "\330\247\331\204\330\271\330\261\330\250\331\212\330\251",
       {127,   250,   77,    26884, 66,    9101,  67,    2634,  15195, 39683, 68,    7377,  243,
        39377, 39377, 138,   115,   26180, 29945, 43000, 138,   105,   220,   21169, 35072, 21727,
        21727, 31583, 18849, 140,   117,   10545, 245,   98,    17312, 105,   45739, 252,   5641,
        24336, 25084, 43302, 220,   40792, 23877, 229,   220,   47991, 250,   166,   113,   255,
        168,   244,   112,   28981, 44690, 26897, 39848, 22654, 45632}},
      {"numbers 1234567 \331\243\331\244\331\245 \302\275 \302\262 \342\205\253 3.14159 1,000,000",
       {77,  17024, 17031, 2231, 3134, 18923, 96,   149,   97,  149, 98,  25208, 1587,
        110, 2343,  227,   104,  513,  13,    1415, 19707, 352, 11,  830, 11,    830}},
      {"spaces:  two   three    four\011\011tabs\012\012\012newlines \012 \015\012 end   ",
       {2777, 2114, 25,  220,  734,  220, 220, 1115, 220, 220, 220, 1440, 197, 197, 8658,
        82,   628,  198, 3605, 6615, 220, 198, 220,  201, 198, 886, 220,  220, 220}},
      {"emoji \360\237\231\202\360\237\221\215\360\237\217\275 "
       "\360\237\221\250\342\200\215\360\237\221\251\342\200\215\360\237\221\247 "
       "\360\237\207\253\360\237\207\267 and ZWJ",
       {368, 31370, 32485, 41840, 235,   8582, 237, 121,  50169, 101, 447, 235,  41840, 102,
        447, 235,   41840, 100,   12520, 229,  104, 8582, 229,   115, 290, 1168, 54,    41}},
      {"punctuation!!! ... --- ??? $$$ @user #tag <|endoftext|>",
       {79,   16260, 2288,  10185, 2644, 11420, 34913, 720,  13702, 2488,
        7220, 1303,  12985, 1279,  91,   437,   1659,  5239, 91,    29}},
      {"mixed\302\240nbsp\343\200\200ideographic\342\200\250line\302\205nel\013vt",
       {76, 2966, 1849, 77, 24145, 5099, 222, 485, 6826, 447, 101, 1370, 126, 227, 4954, 199,
        36540}},
      {"CamelCaseWords and_snake_case and kebab-case x=1+2*3",
       {34, 17983, 20448, 37117, 290,  62, 16184, 539, 62, 7442, 290, 885,
        65, 397,   12,    7442,  2124, 28, 16,    10,  17, 9,    18}},
      {"   leading and trailing   ", {220, 220, 3756, 290, 25462, 220, 220, 220}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Encode(c.text), c.ids) << "text: " << c.text;
    EXPECT_EQ(Gpt2().Decode(c.ids), c.text);
  }
}

TEST(Gpt2TokenizerTest, EndOfTextIsSpecialAndNeverEncoded) {
  EXPECT_EQ(Gpt2().DecodeOne(50256), "<|endoftext|>");
  EXPECT_THAT(Gpt2().proto().special_ids(), ElementsAre(50256));
  // As encoder.py does: the text of a special token is ordinary text.
  EXPECT_THAT(Encode("<|endoftext|>"), ElementsAre(27, 91, 437, 1659, 5239, 91, 29));
}

TEST(Gpt2TokenizerTest, InvalidUtf8IsEncodedAsBytes) {
  const int32_t ff = Encode("\377")[0];
  EXPECT_EQ(Gpt2().DecodeOne(ff), "\377");
  // The valid text around invalid bytes encodes as it would alone.
  std::vector<int32_t> want = Encode("Hello");
  want.push_back(ff);
  for (int32_t id : Encode(" world")) want.push_back(id);
  EXPECT_EQ(Encode("Hello\377 world"), want);
  // A truncated character, a lone continuation byte, an overlong NUL, a
  // surrogate: all come back byte for byte.
  for (const std::string& text : {std::string("caf\303"), std::string("\251t\351"),
                                  std::string("\300\200x"), std::string("\355\240\200 a")}) {
    EXPECT_EQ(Gpt2().Decode(Encode(text)), text);
  }
}

TEST(Gpt2TokenizerTest, DecodeOfEncodeIsIdentityForAnyBytes) {
  // Random byte strings biased towards what is hard for the pre-tokenizer:
  // spaces, apostrophes, letters, digits, multi-byte UTF-8 and its fragments.
  const std::vector<std::string> atoms = {" ",
                                          "  ",
                                          "\t",
                                          "\n",
                                          "\r\n",
                                          "'",
                                          "'s",
                                          "'ll",
                                          "a",
                                          "Z",
                                          "7",
                                          "!",
                                          ".",
                                          "\303\251",
                                          "\343\201\256",
                                          "\360\237\231\202",
                                          "\342\200\215",
                                          "\302\240",
                                          "\343\200\200",
                                          "\302\205",
                                          "\303",
                                          "\201",
                                          "\377",
                                          "\360\237",
                                          "\000"};
  std::mt19937 rng(20261129);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      if (rng() % 8 == 0) {
        text.push_back(static_cast<char>(rng() % 256));
      } else {
        text += atoms[rng() % atoms.size()];
      }
    }
    ASSERT_EQ(Gpt2().Decode(Encode(text)), text) << "trial " << trial;
  }
}

TEST(Gpt2TokenizerTest, CacheDoesNotChangeIds) {
  EncodeCache cache;
  const std::string text = ReadFile(SourcePath("data/tinyshakespeare.txt")).substr(0, 100000);
  absl::StatusOr<std::vector<int32_t>> cached = Gpt2().Encode(text, &cache);
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(*cached, Encode(text));
  // A warm cache, and the same cache on other text.
  EXPECT_EQ(*Gpt2().Encode(text, &cache), *cached);
  EXPECT_EQ(*Gpt2().Encode("Hello, world! First Citizen:", &cache),
            Encode("Hello, world! First Citizen:"));
}

TEST(Gpt2TokenizerTest, LongRunsAreMergedInLinearithmicTime) {
  // A megabyte of one piece: quadratic merging would not finish.
  const std::string spaces(1 << 20, ' ');
  const std::vector<int32_t> ids = Encode(spaces);
  EXPECT_EQ(Gpt2().Decode(ids), spaces);
  EXPECT_EQ(ids.size(), spaces.size());  // GPT-2 has no token of two spaces
  const std::string letters(1 << 20, 'a');
  const std::vector<int32_t> letter_ids = Encode(letters);
  EXPECT_EQ(Gpt2().Decode(letter_ids), letters);
  EXPECT_LT(letter_ids.size(), letters.size() / 2);
  EXPECT_THAT(Encode("aaaaaaaa"), ElementsAre(24794, 24794));  // tools/gpt2_reference.py
}

TEST(Gpt2TokenizerTest, ProtoRoundTrip) {
  const std::string bytes = Gpt2().proto().SerializeAsString();
  Tokenizer parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  absl::StatusOr<TextTokenizer> again = TextTokenizer::FromProto(parsed);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again->Encode("Hello, world! First Citizen:"), Encode("Hello, world! First Citizen:"));
}

// A small valid GPT2_BPE proto: the 256 bytes, then "ab" = a + b.
Tokenizer TinyBpe() {
  Tokenizer proto;
  proto.set_kind(Tokenizer::GPT2_BPE);
  for (int b = 0; b < 256; ++b) proto.add_vocab(std::string(1, static_cast<char>(b)));
  proto.add_vocab("ab");
  Tokenizer::Merge* m = proto.add_merges();
  m->set_left('a');
  m->set_right('b');
  return proto;
}

TEST(Gpt2TokenizerTest, FromProtoValidates) {
  ASSERT_TRUE(TextTokenizer::FromProto(TinyBpe()).ok());
  EXPECT_THAT(*TextTokenizer::FromProto(TinyBpe())->Encode("abab a"),
              ElementsAre(256, 256, ' ', 'a'));
  const auto error = [](const Tokenizer& proto) {
    absl::StatusOr<TextTokenizer> tok = TextTokenizer::FromProto(proto);
    return tok.ok() ? std::string("ok") : std::string(tok.status().message());
  };
  Tokenizer missing_byte = TinyBpe();
  missing_byte.set_vocab(7, "xyz");
  EXPECT_THAT(error(missing_byte), HasSubstr("no token for the byte 0x07"));
  Tokenizer duplicate = TinyBpe();
  duplicate.set_vocab(256, "a");
  EXPECT_THAT(error(duplicate), HasSubstr("Tokenizer.vocab[256]"));
  Tokenizer out_of_range = TinyBpe();
  out_of_range.mutable_merges(0)->set_right(9999);
  EXPECT_THAT(error(out_of_range), HasSubstr("Tokenizer.merges[0] (97, 9999)"));
  Tokenizer not_a_token = TinyBpe();
  not_a_token.mutable_merges(0)->set_right('c');
  EXPECT_THAT(error(not_a_token), HasSubstr("which is not an ordinary token"));
  Tokenizer unreachable = TinyBpe();
  unreachable.add_vocab("abab");
  Tokenizer::Merge* m = unreachable.add_merges();
  m->set_left(257);  // "abab" is made by no earlier merge
  m->set_right(256);
  unreachable.add_vocab("ababab");
  EXPECT_THAT(error(unreachable), HasSubstr("neither a byte nor made by an earlier merge"));
  Tokenizer bad_special = TinyBpe();
  bad_special.add_special_ids(300);
  EXPECT_THAT(error(bad_special), HasSubstr("Tokenizer.special_ids[0] = 300"));
  Tokenizer char_with_vocab;
  char_with_vocab.set_kind(Tokenizer::CHAR);
  char_with_vocab.add_code_points('a');
  char_with_vocab.add_vocab("a");
  EXPECT_THAT(error(char_with_vocab), HasSubstr("are for kind GPT2_BPE"));
}

TEST(Gpt2TokenizerTest, FromFilesNamesTheFaultyLine) {
  const std::string encoder = ReadFile(SourcePath("data/gpt2/encoder.json"));
  EXPECT_THAT(Gpt2TokenizerFromFiles("{not json", "#version: 0.2\n").status().message(),
              HasSubstr("encoder.json is not"));
  EXPECT_THAT(Gpt2TokenizerFromFiles(encoder, "#version: 0.2\n\304\240 t\nq\304\240 zz\n")
                  .status()
                  .message(),
              HasSubstr("vocab.bpe line 3"));
  EXPECT_THAT(Gpt2TokenizerFromFiles(R"({"a": 0, "b": 7})", "").status().message(),
              HasSubstr("want 0..1"));
  EXPECT_THAT(TextTokenizer::FromCorpus(Tokenizer::GPT2_BPE, "x").status().message(),
              HasSubstr("encoder.json"));
}

// An id nested 200,000 deep (a 400 KB encoder.json) overflowed the stack
// as the message quoted it: dropk data prepare --gpt2-dir segfaulted.
TEST(Gpt2TokenizerTest, AnIdThatIsNotANumberIsQuotedCutShort) {
  constexpr int kDepth = 200000;
  const std::string deep = std::string(kDepth, '[') + std::string(kDepth, ']');
  const absl::Status s = Gpt2TokenizerFromFiles(R"({"a": )" + deep + "}", "").status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("the id of \"a\" is [[[[["));
  EXPECT_LT(s.message().size(), 300u) << s.message().size();
}

// A vocab.bpe cut at a line boundary (a partial copy) parsed: every token
// its lost merges made was taken for a special token like <|endoftext|>,
// and data was prepared with other ids than OpenAI's, in silence. GPT-2's
// last merge is "Ġg azed"; a special token that pre-tokenization would cut
// into pieces (<|endoftext|>, "<pad>") still passes.
TEST(Gpt2TokenizerTest, AVocabBpeCutAtALineIsNamedNotTakenForSpecialTokens) {
  const std::string encoder = ReadFile(SourcePath("data/gpt2/encoder.json"));
  const std::string merges = ReadFile(SourcePath("data/gpt2/vocab.bpe"));
  ASSERT_TRUE(merges.ends_with("\304\240g azed\n"));
  const std::string without_last =
      merges.substr(0, merges.size() - std::string("Ġg azed\n").size());
  EXPECT_THAT(Gpt2TokenizerFromFiles(encoder, without_last).status().message(),
              AllOf(HasSubstr("no merge makes encoder.json's token \"Ġgazed\" (id 50255)"),
                    HasSubstr("holds 49999 merges: is it truncated?")));
  const std::string first_lines = merges.substr(0, merges.find("\n", merges.find("\n") + 1) + 1);
  EXPECT_THAT(Gpt2TokenizerFromFiles(encoder, first_lines).status().message(),
              HasSubstr("more like it"));

  const size_t end = encoder.rfind('}');
  ASSERT_NE(end, std::string::npos);
  const std::string with_pad = encoder.substr(0, end) + R"(, "<pad>": 50257})";
  const absl::StatusOr<Tokenizer> proto = Gpt2TokenizerFromFiles(with_pad, merges);
  ASSERT_TRUE(proto.ok()) << proto.status();
  EXPECT_THAT(proto->special_ids(), ElementsAre(50256, 50257));
}

}  // namespace
}  // namespace dropk
