#include "trainer/token_file.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/fifo.h"

namespace dropk {
namespace {

using ::testing::ElementsAreArray;
using ::testing::AllOf;
using ::testing::HasSubstr;

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("dropk_token_file_") + info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  static std::string ReadBytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  static void WriteBytes(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }
  static void PutLe(std::string& bytes, size_t offset, uint64_t value, int width) {
    for (int i = 0; i < width; ++i) bytes[offset + i] = static_cast<char>(value >> (8 * i));
  }

  // A valid file of 4 tokens with vocab 10 (width 1), then `edit` applied to
  // its bytes; returns the Open error message (fails the test if Open works).
  std::string OpenCorrupted(const std::string& name, void (*edit)(std::string&)) {
    const std::string path = Path(name);
    const std::vector<int32_t> tokens = {1, 2, 3, 9};
    EXPECT_TRUE(WriteTokenFile(path, tokens, 10).ok());
    std::string bytes = ReadBytes(path);
    edit(bytes);
    WriteBytes(path, bytes);
    auto file = TokenFile::Open(path);
    EXPECT_FALSE(file.ok()) << name << " was accepted";
    if (file.ok()) return "";
    const std::string message(file.status().message());
    EXPECT_THAT(message, HasSubstr(path));
    return message;
  }

  std::filesystem::path dir_;
};

TEST_F(TokenFileTest, WidthFollowsVocabSize) {
  EXPECT_EQ(TokenWidthFor(1), 1);
  EXPECT_EQ(TokenWidthFor(256), 1);
  EXPECT_EQ(TokenWidthFor(257), 2);
  EXPECT_EQ(TokenWidthFor(65536), 2);
  EXPECT_EQ(TokenWidthFor(65537), 4);
}

TEST_F(TokenFileTest, RoundTripsEveryWidth) {
  for (const int vocab : {65, 256, 50257, 65536, 100000}) {
    std::vector<int32_t> tokens;
    for (int i = 0; i < 1000; ++i) tokens.push_back((i * 7919) % vocab);
    tokens.push_back(vocab - 1);
    tokens.push_back(0);
    const std::string path = Path("tokens_" + std::to_string(vocab) + ".bin");
    ASSERT_TRUE(WriteTokenFile(path, tokens, vocab).ok());
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    const int width = TokenWidthFor(vocab);
    EXPECT_EQ(std::filesystem::file_size(path), 32 + tokens.size() * width);

    auto file = TokenFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ(file->size(), tokens.size());
    EXPECT_EQ(file->vocab_size(), vocab);
    EXPECT_EQ(file->token_width(), width);
    for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ((*file)[i], tokens[i]) << i;
    std::vector<int32_t> window(100);
    file->Read(900, window.size(), window.data());
    EXPECT_THAT(window, ElementsAreArray(tokens.begin() + 900, tokens.begin() + 1000));
  }
}

TEST_F(TokenFileTest, HeaderIsTheDocumentedLayout) {
  const std::string path = Path("layout.bin");
  const std::vector<int32_t> tokens = {0x0102, 0x0304};
  ASSERT_TRUE(WriteTokenFile(path, tokens, 1000).ok());
  const std::string bytes = ReadBytes(path);
  const std::string expected(
      "DROPKTOK"
      "\x01\0\0\0"          // version
      "\xE8\x03\0\0"        // vocab 1000
      "\x02\0\0\0"          // width 2
      "\0\0\0\0"            // dataset_id: 0, unknown
      "\x02\0\0\0\0\0\0\0"  // count
      "\x02\x01\x04\x03",   // tokens, little-endian
      36);
  EXPECT_EQ(bytes, expected);
}

// The dataset id sits at offset 20 (a reserved 0 before ids existed, so old
// files read as id 0) and comes back from Open.
TEST_F(TokenFileTest, DatasetIdIsStoredAtOffset20) {
  const std::string path = Path("id.bin");
  ASSERT_TRUE(WriteTokenFile(path, std::vector<int32_t>{1, 2}, 7, 0xA1B2C3D4u).ok());
  EXPECT_EQ(ReadBytes(path).substr(20, 4), std::string("\xD4\xC3\xB2\xA1", 4));
  auto file = TokenFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->dataset_id(), 0xA1B2C3D4u);
  TokenFile moved = std::move(*file);
  EXPECT_EQ(moved.dataset_id(), 0xA1B2C3D4u);
}

TEST_F(TokenFileTest, EmptyFileOfTokensIsValid) {
  const std::string path = Path("empty.bin");
  ASSERT_TRUE(WriteTokenFile(path, {}, 65).ok());
  auto file = TokenFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->size(), 0u);
}

TEST_F(TokenFileTest, MoveKeepsTheMapping) {
  const std::string path = Path("move.bin");
  const std::vector<int32_t> tokens = {4, 5, 6};
  ASSERT_TRUE(WriteTokenFile(path, tokens, 7).ok());
  auto opened = TokenFile::Open(path);
  ASSERT_TRUE(opened.ok());
  TokenFile a = std::move(*opened);
  TokenFile b = std::move(a);
  EXPECT_EQ(a.size(), 0u);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[2], 6);
  a = std::move(b);
  EXPECT_EQ(a[0], 4);
}

TEST_F(TokenFileTest, WriteRejectsOutOfRangeTokens) {
  const std::vector<int32_t> tokens = {1, 2, 10};
  const absl::Status status = WriteTokenFile(Path("bad.bin"), tokens, 10);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("token 2 = 10"));
  EXPECT_FALSE(WriteTokenFile(Path("bad.bin"), std::vector<int32_t>{-1}, 10).ok());
  EXPECT_FALSE(WriteTokenFile(Path("bad.bin"), {}, 0).ok());
  EXPECT_FALSE(std::filesystem::exists(Path("bad.bin")));
}

TEST_F(TokenFileTest, WriteIntoMissingDirectoryNamesThePath) {
  const std::string path = Path("no/such/dir/x.bin");
  const absl::Status status = WriteTokenFile(path, std::vector<int32_t>{1}, 10);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
}

TEST_F(TokenFileTest, MissingFile) {
  const std::string path = Path("missing.bin");
  auto file = TokenFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
}

// A FIFO where val.bin should be: open(2) waited for a writer, so
// dropk-train hung before its first step.
TEST_F(TokenFileTest, FifoIsRefusedWithoutBlocking) {
  test_util::FifoWithUnblocker fifo(Path("val.bin"), std::chrono::seconds(10));
  const auto start = std::chrono::steady_clock::now();
  auto file = TokenFile::Open(fifo.path());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5)) << "open blocked";
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()),
              AllOf(HasSubstr(fifo.path()), HasSubstr("not a regular file")));
}

TEST_F(TokenFileTest, ShorterThanHeader) {
  EXPECT_THAT(OpenCorrupted("short.bin", [](std::string& b) { b.resize(20); }),
              HasSubstr("20 bytes, shorter than the 32-byte header"));
  EXPECT_THAT(OpenCorrupted("zero.bin", [](std::string& b) { b.clear(); }),
              HasSubstr("0 bytes, shorter than"));
}

TEST_F(TokenFileTest, BadMagic) {
  EXPECT_THAT(OpenCorrupted("magic.bin", [](std::string& b) { b[0] = 'X'; }),
              HasSubstr("bad magic \"XROPKTOK\""));
}

TEST_F(TokenFileTest, UnsupportedVersion) {
  EXPECT_THAT(OpenCorrupted("version.bin", [](std::string& b) { PutLe(b, 8, 2, 4); }),
              HasSubstr("unsupported version 2"));
}

TEST_F(TokenFileTest, BadWidth) {
  EXPECT_THAT(OpenCorrupted("width.bin", [](std::string& b) { PutLe(b, 16, 3, 4); }),
              HasSubstr("token width 3 is not 1, 2 or 4"));
}

TEST_F(TokenFileTest, ZeroVocab) {
  EXPECT_THAT(OpenCorrupted("vocab.bin", [](std::string& b) { PutLe(b, 12, 0, 4); }),
              HasSubstr("vocab_size is 0"));
}

TEST_F(TokenFileTest, Truncated) {
  const std::string message = OpenCorrupted("truncated.bin", [](std::string& b) { b.pop_back(); });
  EXPECT_THAT(message, HasSubstr("file size is 35 bytes"));
  EXPECT_THAT(message, HasSubstr("count 4 of 1-byte tokens needs 36 bytes"));
}

TEST_F(TokenFileTest, WrongCount) {
  EXPECT_THAT(OpenCorrupted("count.bin", [](std::string& b) { PutLe(b, 24, 3, 8); }),
              HasSubstr("file size is 36 bytes but the header's count 3"));
  EXPECT_THAT(OpenCorrupted("trailing.bin", [](std::string& b) { b += "xyz"; }),
              HasSubstr("file size is 39 bytes"));
}

TEST_F(TokenFileTest, AbsurdCountDoesNotOverflow) {
  const std::string message = OpenCorrupted("absurd.bin", [](std::string& b) {
    PutLe(b, 16, 4, 4);                   // width 4
    PutLe(b, 24, 0x4000000000000001, 8);  // count * 4 wraps to 4
  });
  EXPECT_THAT(message, HasSubstr("count 4611686018427387905"));
  EXPECT_THAT(message, HasSubstr("more than 2^64"));
}

TEST_F(TokenFileTest, TokenOutOfVocab) {
  EXPECT_THAT(OpenCorrupted("token.bin", [](std::string& b) { b[32 + 2] = 10; }),
              HasSubstr("token 2 = 10 is >= vocab_size 10"));
}

}  // namespace
}  // namespace dropk
