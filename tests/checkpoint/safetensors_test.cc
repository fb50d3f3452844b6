// The safetensors reader trusts no size: every malformed header is refused
// naming the file (and the tensor), never read past the file's end.
#include "checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>

#include "support/temp_dir.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  // Writes `bytes` as a file and returns its path.
  std::string Write(const std::string& bytes) {
    const std::string path = tmp_.Path("f.safetensors");
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return path;
  }

  // A file whose header is `json` followed by `data`.
  std::string WithHeader(const std::string& json, const std::string& data) {
    std::string length(8, '\0');
    for (int i = 0; i < 8; ++i) length[i] = static_cast<char>(uint64_t{json.size()} >> (8 * i));
    return Write(length + json + data);
  }

  // ReadSafetensors' error message for a file with that header and data.
  std::string ErrorFor(const std::string& json, const std::string& data) {
    absl::StatusOr<SafetensorsFile> file = ReadSafetensors(WithHeader(json, data));
    EXPECT_FALSE(file.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(file.status())) << file.status();
    return std::string(file.status().message());
  }

  test_util::ScopedTempDir tmp_{"safetensors_test"};
};

TEST_F(SafetensorsTest, WhatIsWrittenReadsBack) {
  const float values[3] = {1.5f, -2.0f, 3.25f};
  std::vector<SafetensorsTensor> tensors = {
      {"a", "F32", {3}, std::string(reinterpret_cast<const char*>(values), sizeof(values))},
      {"b.weight", "BF16", {2, 1}, std::string("\x01\x02\x03\x04", 4)}};
  const std::string header = SafetensorsHeader(tensors, {{"producer", "test"}});
  EXPECT_EQ((header.size() - 8) % 8, 0u) << "padded to 8 bytes";
  const std::string path = Write(header + tensors[0].bytes + tensors[1].bytes);
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("producer"), "test");
  ASSERT_EQ(file->tensors().size(), 2u);
  const SafetensorsFile::Tensor& a = file->tensors().at("a");
  EXPECT_EQ(a.dtype, "F32");
  EXPECT_EQ(a.shape, std::vector<int64_t>{3});
  EXPECT_EQ(file->bytes(a), tensors[0].bytes);
  const SafetensorsFile::Tensor& b = file->tensors().at("b.weight");
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(file->bytes(b), tensors[1].bytes);
}

TEST_F(SafetensorsTest, AMissingFileIsNotFound) {
  const absl::Status s = ReadSafetensors(tmp_.Path("none.safetensors")).status();
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("none.safetensors"));
}

TEST_F(SafetensorsTest, ShortFilesAndHeaderLengthsPastTheEndAreRefused) {
  for (const std::string& bytes :
       {std::string("abc"), std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10),
        std::string("\x10\0\0\0\0\0\0\0{}", 10)}) {
    const std::string path = Write(bytes);
    const absl::Status s = ReadSafetensors(path).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr(path), HasSubstr("not a valid")));
  }
}

TEST_F(SafetensorsTest, MalformedHeadersNameWhatIsWrong) {
  EXPECT_THAT(ErrorFor("[1, 2]", ""), HasSubstr("not a JSON object"));
  EXPECT_THAT(ErrorFor("{\"a\": ", ""), HasSubstr("not a JSON object"));
  EXPECT_THAT(ErrorFor(R"({"__metadata__": {"k": 1}})", ""), HasSubstr("metadata k"));
  EXPECT_THAT(ErrorFor(R"({"w": {"dtype": "F32", "shape": [1]}})", "abcd"),
              HasSubstr("tensor w: needs dtype, shape and two data_offsets"));
  EXPECT_THAT(ErrorFor(R"({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}})", "abcd"),
              HasSubstr("tensor w: unknown dtype F99"));
  EXPECT_THAT(ErrorFor(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "abcd"),
              HasSubstr("tensor w: a shape of [-1]"));
  EXPECT_THAT(ErrorFor(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}})", "abcd"),
              HasSubstr("tensor w: bytes [0, 8) outside the 4 bytes after the header"));
  EXPECT_THAT(ErrorFor(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", "abcd"),
              HasSubstr("tensor w: shape [2] of F32 needs 8 bytes, its range holds 4"));
  // A shape whose byte count overflows 64 bits is not wrapped into a fit.
  EXPECT_THAT(
      ErrorFor(
          R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 1073741824], "data_offsets": [0, 0]}})",
          ""),
      HasSubstr("needs more than 2^64 bytes, its range holds 0"));
}

}  // namespace
}  // namespace dropk
