#include "trainer/token_dataset.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "trainer/batch_loader.h"
#include "trainer/data_checksums.h"
#include "trainer/prepare_data.h"
#include "trainer/tokenizer_file.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class TokenDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("dropk_dataset_") + info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "single");
    std::filesystem::create_directories(dir_ / "shards");
    for (int i = 0; i < 5000; ++i) tokens_.push_back((i * 7919 + i / 13) % 1000);
    ASSERT_TRUE(WriteTokenFile((dir_ / "single/train.bin").string(), tokens_, 1000).ok());
    // Uneven shards, one shorter than a window.
    const std::vector<size_t> cuts = {0, 1700, 1710, 3999, 5000};
    for (size_t s = 0; s + 1 < cuts.size(); ++s) {
      const std::span<const int32_t> part(tokens_.data() + cuts[s], cuts[s + 1] - cuts[s]);
      ASSERT_TRUE(WriteTokenFile(Shard("train", static_cast<int>(s)), part, 1000).ok());
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Shard(const std::string& split, int i) const {
    return (dir_ / "shards" / ShardFileName(split, i)).string();
  }

  std::filesystem::path dir_;
  std::vector<int32_t> tokens_;
};

TEST_F(TokenDatasetTest, ShardsReadAsOneSequence) {
  auto data = TokenDataset::Open((dir_ / "shards").string(), "train");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->files().size(), 4u);
  ASSERT_EQ(data->size(), tokens_.size());
  std::vector<int32_t> all(tokens_.size());
  data->Read(0, all.size(), all.data());
  EXPECT_EQ(all, tokens_);
  std::vector<int32_t> across(30);
  data->Read(1690, 30, across.data());  // spans three files
  EXPECT_EQ(across, std::vector<int32_t>(tokens_.begin() + 1690, tokens_.begin() + 1720));
  EXPECT_EQ((*data)[1705], tokens_[1705]);
}

TEST_F(TokenDatasetTest, ShardedAndSingleFileGiveIdenticalBatches) {
  auto single = TokenDataset::Open((dir_ / "single").string(), "train");
  auto shards = TokenDataset::Open((dir_ / "shards").string(), "train");
  ASSERT_TRUE(single.ok()) << single.status();
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(single->files().size(), 1u);
  const int T = 32, B = 4;
  BatchLoader a(&*single, 42, T, kTrainBatches, B), b(&*shards, 42, T, kTrainBatches, B);
  std::vector<int32_t> xa(B * T), ya(B * T), xb(B * T), yb(B * T);
  for (uint64_t step = 0; step < 200; ++step) {
    a.Fill(step, 0, B, xa.data(), ya.data());
    b.Fill(step, 0, B, xb.data(), yb.data());
    ASSERT_EQ(xa, xb) << "step " << step;
    ASSERT_EQ(ya, yb) << "step " << step;
  }
}

TEST_F(TokenDatasetTest, ErrorsNameTheDirectoryOrFile) {
  const std::string shards = (dir_ / "shards").string();
  // Both forms.
  ASSERT_TRUE(WriteTokenFile(shards + "/train.bin", tokens_, 1000).ok());
  EXPECT_THAT(std::string(TokenDataset::Open(shards, "train").status().message()),
              HasSubstr("both train.bin and train-00000.bin"));
  std::filesystem::remove(shards + "/train.bin");
  // A gap.
  std::filesystem::remove(Shard("train", 2));
  EXPECT_THAT(std::string(TokenDataset::Open(shards, "train").status().message()),
              HasSubstr("train-00002.bin is missing"));
  // Shards that disagree on the vocabulary.
  ASSERT_TRUE(WriteTokenFile(Shard("train", 2), tokens_, 2000).ok());
  EXPECT_THAT(std::string(TokenDataset::Open(shards, "train").status().message()),
              HasSubstr("vocab_size 2000 differs"));
  // Neither form.
  const absl::Status none = TokenDataset::Open(shards, "val").status();
  EXPECT_TRUE(absl::IsNotFound(none)) << none;
  EXPECT_THAT(std::string(none.message()), HasSubstr("val.bin"));
}

// Files of two `dropk data prepare` runs (one interrupted between its
// renames) were read as one data set when the vocabulary sizes agreed.
TEST_F(TokenDatasetTest, FilesOfTwoPreparationsAreRefused) {
  const std::string dir = (dir_ / "mixed").string();
  std::filesystem::create_directories(dir);
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  auto tokenizer = TextTokenizer::FromCorpus(Tokenizer::BYTE, "");
  ASSERT_TRUE(tokenizer.ok());
  const auto write_tokenizer = [&](uint32_t id) {
    auto bytes = TokenizerFileBytes(*tokenizer, id, dir + "/tokenizer.pb");
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    std::ofstream(dir + "/tokenizer.pb", std::ios::binary | std::ios::trunc) << *bytes;
  };
  // The id a preparation of these files would stamp (the trainer checks
  // the tokens against it).
  auto plain = TokenizerFileBytes(*tokenizer, 0, dir + "/tokenizer.pb");
  ASSERT_TRUE(plain.ok());
  const std::vector<uint8_t> bytes = {1, 2, 3, 4, 1, 2, 3, 4};  // train then val
  const uint32_t id = DatasetId(crc32c::Value(bytes.data(), bytes.size()), *plain, tokens.size(),
                                kDefaultShardTokens);
  ASSERT_NE(id, 8u);
  const std::string id_text = absl::StrCat("(dataset id ", id, ")");
  // One preparation: loads, and the tokenizer's proto has no id left.
  ASSERT_TRUE(WriteTokenFile(dir + "/train.bin", tokens, 256, id).ok());
  ASSERT_TRUE(WriteTokenFile(dir + "/val.bin", tokens, 256, id).ok());
  write_tokenizer(id);
  auto data = LoadTrainingData(dir);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->tokenizer.proto().dataset_id(), 0u);
  EXPECT_EQ(data->train.dataset_id(), id);

  // val.bin of another run.
  ASSERT_TRUE(WriteTokenFile(dir + "/val.bin", tokens, 256, 8).ok());
  absl::Status mixed = LoadTrainingData(dir).status();
  EXPECT_TRUE(absl::IsInvalidArgument(mixed)) << mixed;  // exit 2
  EXPECT_THAT(std::string(mixed.message()), AllOf(HasSubstr(dir + "/val.bin' (dataset id 8)"),
                                                  HasSubstr(dir + "/tokenizer.pb' " + id_text),
                                                  HasSubstr("run `dropk data prepare` again")));
  // A new train.bin beside files prepared before ids (id 0).
  ASSERT_TRUE(WriteTokenFile(dir + "/val.bin", tokens, 256, 0).ok());
  write_tokenizer(0);
  mixed = LoadTrainingData(dir).status();
  EXPECT_TRUE(absl::IsInvalidArgument(mixed)) << mixed;
  EXPECT_THAT(std::string(mixed.message()), HasSubstr("train.bin' " + id_text));
  // Data prepared before ids: every id 0, still read.
  ASSERT_TRUE(WriteTokenFile(dir + "/train.bin", tokens, 256, 0).ok());
  EXPECT_TRUE(LoadTrainingData(dir).ok());

  // Shards of two runs (a stale shard past the new run's last).
  ASSERT_TRUE(WriteTokenFile(Shard("val", 0), tokens, 1000, 5).ok());
  ASSERT_TRUE(WriteTokenFile(Shard("val", 1), tokens, 1000, 6).ok());
  const absl::Status shards = TokenDataset::Open((dir_ / "shards").string(), "val").status();
  EXPECT_TRUE(absl::IsInvalidArgument(shards)) << shards;
  EXPECT_THAT(std::string(shards.message()), AllOf(HasSubstr("val-00000.bin' (dataset id 5)"),
                                                   HasSubstr("val-00001.bin' (dataset id 6)")));
}

// Shard 100000 is written with six digits; the reader took only five-digit
// names as shards, so it counted 100000 shards in a complete set of 100001
// and called train-100001.bin missing.
TEST(ShardNameTest, NamesPastShard99999AreShardsToo) {
  EXPECT_EQ(ShardFileName("train", 0), "train-00000.bin");
  EXPECT_EQ(ShardFileName("train", 99999), "train-99999.bin");
  EXPECT_EQ(ShardFileName("train", 100000), "train-100000.bin");
  for (int index : {0, 7, 99999, 100000, 123456, 2147483647}) {
    EXPECT_EQ(ShardIndex(ShardFileName("val", index), "val"), index) << index;
    EXPECT_TRUE(IsShardName(ShardFileName("train", index), "train")) << index;
  }
  for (const char* name : {"train-0001.bin", "train-000001.bin", "train-099999.bin",
                           "train-2147483648.bin", "train-1234a.bin", "train-00001.bi",
                           "train.bin", "val-00001.bin", "train-+0001.bin", "train- 0001.bin"}) {
    EXPECT_FALSE(IsShardName(name, "train")) << name;
    EXPECT_EQ(ShardIndex(name, "train"), std::nullopt) << name;
  }
}

// A shard numbered 100000 past a gap was not counted, so the set opened
// without it, silently.
TEST_F(TokenDatasetTest, AShardNumberedPast99999IsNotLeftOutSilently) {
  const std::string shards = (dir_ / "shards").string();
  ASSERT_TRUE(WriteTokenFile(Shard("train", 100000), tokens_, 1000).ok());
  const absl::Status status = TokenDataset::Open(shards, "train").status();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("has 5 train shards but train-00004.bin"));
}

// A token file copied by hand (a shard beside itself, or into the other
// split) was read twice without a word. IdenticalTokenFiles names each two
// files of the same tokens, and only those: files alike in the bytes it
// samples (first, middle and last 4 KiB) but not whole are told apart.
TEST_F(TokenDatasetTest, IdenticalTokenFilesFindsCopiesAndOnlyCopies) {
  std::vector<int32_t> tokens(20000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 31) % 1000);
  std::vector<int32_t> differs_unsampled = tokens;
  differs_unsampled[3000] = (differs_unsampled[3000] + 1) % 1000;  // between the samples
  std::vector<std::string> paths;
  for (const std::vector<int32_t>* content :
       {&tokens, &differs_unsampled, &tokens, &tokens_, &tokens}) {
    paths.push_back((dir_ / ("file" + std::to_string(paths.size()) + ".bin")).string());
    ASSERT_TRUE(WriteTokenFile(paths.back(), *content, 1000).ok());
  }
  std::vector<TokenFile> files;
  std::vector<const TokenFile*> pointers;
  for (const std::string& path : paths) {
    absl::StatusOr<TokenFile> file = TokenFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    files.push_back(*std::move(file));
  }
  for (const TokenFile& file : files) pointers.push_back(&file);
  using Pairs = std::vector<std::pair<size_t, size_t>>;
  EXPECT_EQ(IdenticalTokenFiles(pointers), (Pairs{{0, 2}, {0, 4}, {2, 4}}));
  pointers.erase(pointers.begin() + 2, pointers.end());
  EXPECT_EQ(IdenticalTokenFiles(pointers), Pairs{});
}

}  // namespace
}  // namespace dropk
