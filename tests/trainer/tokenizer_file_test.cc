// tokenizer.pb: save and load round trip, garbage refused naming the path.
#include "trainer/tokenizer_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dropk {
namespace {

using ::testing::HasSubstr;

class TokenizerFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("dropk_tokenizer_") + info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

TEST_F(TokenizerFileTest, SaveLoadRoundTrip) {
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, "To be, or not to be\xE2\x80\x94");
  ASSERT_TRUE(tokenizer.ok());
  const std::string path = Path("tokenizer.pb");
  ASSERT_TRUE(SaveTokenizer(*tokenizer, path).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  auto loaded = LoadTokenizer(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->proto().SerializeAsString(), tokenizer->proto().SerializeAsString());
  auto ids = loaded->Encode("not to be");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(loaded->Decode(*ids), "not to be");
}

// tokenizer.pb of prepared data carries its dataset id; LoadTokenizer hands
// it out and clears it, so a checkpoint's tokenizer (compared byte for byte
// on resume) never depends on which preparation it came from.
TEST_F(TokenizerFileTest, DatasetIdIsHandedOutAndCleared) {
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, "abc");
  ASSERT_TRUE(tokenizer.ok());
  const std::string path = Path("tokenizer.pb");
  auto bytes = TokenizerFileBytes(*tokenizer, 77, path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::ofstream(path, std::ios::binary) << *bytes;
  uint32_t id = 0;
  auto loaded = LoadTokenizer(path, Env::Default(), &id);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(id, 77u);
  EXPECT_EQ(loaded->proto().dataset_id(), 0u);
  EXPECT_EQ(loaded->proto().SerializeAsString(), tokenizer->proto().SerializeAsString());
  // SaveTokenizer's file has none.
  ASSERT_TRUE(SaveTokenizer(*tokenizer, path).ok());
  ASSERT_TRUE(LoadTokenizer(path, Env::Default(), &id).ok());
  EXPECT_EQ(id, 0u);
}

// ... and so are the token files' checksums recorded beside it.
TEST_F(TokenizerFileTest, FileChecksumsAreHandedOutAndCleared) {
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::CHAR, "abc");
  ASSERT_TRUE(tokenizer.ok());
  const std::string path = Path("tokenizer.pb");
  const std::map<std::string, uint32_t> checksums = {{"train.bin", 0xdeadbeef}, {"val.bin", 7}};
  auto bytes = TokenizerFileBytes(*tokenizer, 77, path, checksums);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::ofstream(path, std::ios::binary) << *bytes;
  uint32_t id = 0;
  std::map<std::string, uint32_t> loaded_checksums = {{"stale.bin", 1}};
  auto loaded = LoadTokenizer(path, Env::Default(), &id, &loaded_checksums);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(id, 77u);
  EXPECT_EQ(loaded_checksums, checksums);
  EXPECT_EQ(loaded->proto().token_files_size(), 0);
  EXPECT_EQ(loaded->proto().SerializeAsString(), tokenizer->proto().SerializeAsString());
}

TEST_F(TokenizerFileTest, LoadRefusesGarbageNamingThePath) {
  const std::string garbage = Path("garbage.pb");
  std::ofstream(garbage, std::ios::binary) << "this is not a protobuf\xFF\xFF\xFF";
  auto loaded = LoadTokenizer(garbage);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(garbage));

  // An empty file parses as an empty message, which FromProto rejects.
  const std::string empty = Path("empty.pb");
  std::ofstream(empty, std::ios::binary).flush();
  loaded = LoadTokenizer(empty);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(empty));
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("Tokenizer.kind"));

  const std::string missing = Path("missing.pb");
  loaded = LoadTokenizer(missing);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(missing));
}

}  // namespace
}  // namespace dropk
