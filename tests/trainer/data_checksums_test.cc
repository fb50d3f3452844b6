// Prepared data checked against what `dropk data prepare` recorded: a token
// turned into another valid token id passed every other check and was
// trained on without a word. Through LoadTrainingData, which dropk-train
// calls (trainer/data_checksums.h does the checking).
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "checkpoint/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/shakespeare_data.h"
#include "support/temp_dir.h"
#include "tokenizer.pb.h"
#include "trainer/data_checksums.h"
#include "trainer/prepare_data.h"
#include "trainer/token_dataset.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

class DataChecksumsTest : public ::testing::Test {
 protected:
  // Tiny Shakespeare prepared twice: "single" (train.bin, val.bin) and
  // "shards" (train-00000.bin ... of 200,000 tokens; val.bin, smaller).
  static void SetUpTestSuite() {
    prepared_ = new test_util::ScopedTempDir("data_checksums");
    ASSERT_TRUE(test_util::PrepareShakespeareData(prepared_->Path("single")).ok());
    PrepareOptions options;
    options.inputs = {DROPK_SOURCE_DIR "/data/tinyshakespeare.txt"};
    options.out_dir = prepared_->Path("shards");
    options.shard_tokens = 200'000;
    ASSERT_TRUE(PrepareData(options).ok());
  }
  static void TearDownTestSuite() { delete prepared_; }

  // A copy of the prepared directory `name`, this test's to change.
  std::string CopyOf(const std::string& name) {
    const std::string dir = scratch_.Path(name);
    fs::copy(prepared_->Path(name), dir, fs::copy_options::recursive);
    return dir;
  }

  // Rewrites dir/tokenizer.pb without its per-file checksums, as a
  // preparation before them wrote it (the dataset id only).
  static void DropFileChecksums(const std::string& dir) {
    const std::string path = dir + "/tokenizer.pb";
    Tokenizer proto;
    {
      std::ifstream in(path, std::ios::binary);
      ASSERT_TRUE(proto.ParseFromIstream(&in));
    }
    ASSERT_GT(proto.token_files_size(), 0);
    proto.clear_token_files();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    ASSERT_TRUE(proto.SerializeToOstream(&out));
  }

  static test_util::ScopedTempDir* prepared_;
  test_util::ScopedTempDir scratch_{"data_checksums_test"};
};
test_util::ScopedTempDir* DataChecksumsTest::prepared_ = nullptr;

TEST_F(DataChecksumsTest, PreparedDataVerifies) {
  for (const char* name : {"single", "shards"}) {
    absl::StatusOr<TrainingData> data = LoadTrainingData(prepared_->Path(name));
    ASSERT_TRUE(data.ok()) << name << ": " << data.status();
  }
  absl::StatusOr<TrainingData> shards = LoadTrainingData(prepared_->Path("shards"));
  ASSERT_TRUE(shards.ok());
  EXPECT_GT(shards->train.files().size(), 1u);
}

// The token bytes of the file at `path` (its last `token_bytes` bytes),
// read past dropk's loader.
std::string TokenBytesOf(const std::string& path, size_t token_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(std::istreambuf_iterator<char>(in), {});
  return bytes.substr(bytes.size() - token_bytes);
}

// LoadTrainingData hands back the checksum of the tokens themselves: the
// CRC32C of train's then val's token bytes, the same for the corpus in one
// file or in shards, with per-file checksums or only a dataset id.
TEST_F(DataChecksumsTest, TokensCrcIsOfTheTokensWhateverTheirFiles) {
  absl::StatusOr<TrainingData> single = LoadTrainingData(prepared_->Path("single"));
  ASSERT_TRUE(single.ok()) << single.status();
  const size_t width = single->train.files().front().token_width();
  const std::string tokens =
      TokenBytesOf(prepared_->Path("single") + "/train.bin", single->train.size() * width) +
      TokenBytesOf(prepared_->Path("single") + "/val.bin", single->val.size() * width);
  EXPECT_EQ(single->tokens_crc, crc32c::Value(tokens.data(), tokens.size()));
  EXPECT_EQ(TokensCrc(single->train, single->val), single->tokens_crc);

  absl::StatusOr<TrainingData> shards = LoadTrainingData(prepared_->Path("shards"));
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_NE(shards->train.dataset_id(), single->train.dataset_id());
  EXPECT_EQ(shards->tokens_crc, single->tokens_crc);
  const std::string before_checksums = CopyOf("shards");
  DropFileChecksums(before_checksums);
  absl::StatusOr<TrainingData> old = LoadTrainingData(before_checksums);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->tokens_crc, single->tokens_crc);
}

TEST_F(DataChecksumsTest, AChangedTokenIsRefusedNamingTheFile) {
  const std::string single = CopyOf("single");
  ASSERT_TRUE(test_util::ChangeOneByteToken(single + "/train.bin", 1000));
  absl::Status status = LoadTrainingData(single).status();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;  // exit 2
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("token file '" + single +
                              "/train.bin' does not match its checksum "
                              "recorded in " +
                              single + "/tokenizer.pb"),
                    HasSubstr("run `dropk data prepare` again"), Not(HasSubstr("\n"))));

  const std::string shards = CopyOf("shards");
  ASSERT_TRUE(test_util::ChangeOneByteToken(shards + "/" + ShardFileName("train", 3), 5));
  status = LoadTrainingData(shards).status();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("token file '" + shards + "/train-00003.bin' does not match its checksum"));
}

TEST_F(DataChecksumsTest, AChangedValTokenIsRefusedToo) {
  const std::string single = CopyOf("single");
  ASSERT_TRUE(test_util::ChangeOneByteToken(single + "/val.bin", 0));
  const absl::Status status = LoadTrainingData(single).status();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(single + "/val.bin' does not match"));
}

// The last shard deleted left a data set that opened whole, a shard short.
TEST_F(DataChecksumsTest, ADeletedLastShardIsNamed) {
  const std::string shards = CopyOf("shards");
  int last = 0;
  while (fs::exists(shards + "/" + ShardFileName("train", last + 1))) ++last;
  ASSERT_GT(last, 0);
  fs::remove(shards + "/" + ShardFileName("train", last));
  const absl::Status status = LoadTrainingData(shards).status();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(
      std::string(status.message()),
      AllOf(HasSubstr(shards + "/tokenizer.pb records token file(s) " +
                      ShardFileName("train", last) + " of its preparation that are missing"),
            HasSubstr("run `dropk data prepare` again")));
}

// tokenizer.pb of a preparation before per-file checksums still loads, and
// its tokens are checked against the dataset id it has.
TEST_F(DataChecksumsTest, DataWithOnlyADatasetIdIsCheckedAgainstIt) {
  for (const char* name : {"single", "shards"}) {
    const std::string dir = CopyOf(name);
    DropFileChecksums(dir);
    ASSERT_TRUE(LoadTrainingData(dir).ok()) << name << ": " << LoadTrainingData(dir).status();
    const std::string file =
        dir + "/" + (name == std::string("single") ? "val.bin" : "train-00001.bin");
    ASSERT_TRUE(test_util::ChangeOneByteToken(file, 7));
    const absl::Status status = LoadTrainingData(dir).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << name << ": " << status;
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr("do not match the dataset id"), HasSubstr(dir + "/tokenizer.pb"),
                      HasSubstr("run `dropk data prepare` again")))
        << name;
  }
}

}  // namespace
}  // namespace dropk
