// The safetensors reader trusts no size: every malformed header is refused
// naming the file (and the tensor), never read past the file's end.
#include "checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "support/forwarding_env.h"
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
  EXPECT_EQ(file->ReadTensorBytes("a").value_or(""), tensors[0].bytes);
  const SafetensorsFile::Tensor& b = file->tensors().at("b.weight");
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(file->ReadTensorBytes("b.weight").value_or(""), tensors[1].bytes);
}

// The whole file was read into memory: a file larger than memory (a sparse
// 1 TiB one here, or a big model's weights) threw std::bad_alloc, which
// dropk-train reported as "out of memory; lower batch_size, ...", naming
// neither init_from nor the file. Only the header is read now, and a
// tensor's bytes when asked. Run in a child limited to 1 GiB of address
// space, so the old code fails the same way however the machine
// overcommits memory.
TEST_F(SafetensorsTest, AFileLargerThanMemoryIsReadByItsHeaderAlone) {
  const float values[2] = {0.5f, -1.0f};
  std::vector<SafetensorsTensor> tensors = {
      {"w", "F32", {2}, std::string(reinterpret_cast<const char*>(values), sizeof(values))}};
  const std::string path = Write(SafetensorsHeader(tensors, {}) + tensors[0].bytes);
  ASSERT_EQ(truncate(path.c_str(), off_t{1} << 40), 0) << "a sparse 1 TiB file";
  const auto read_within_1_gib = [&] {
    const rlimit limit{1u << 30, 1u << 30};
    setrlimit(RLIMIT_AS, &limit);
    absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
    const bool read = file.ok() && file->tensors().size() == 1 &&
                      file->ReadTensorBytes("w").value_or("") == tensors[0].bytes;
    std::_Exit(read ? 0 : 1);
  };
  EXPECT_EXIT(read_within_1_gib(), ::testing::ExitedWithCode(0), "");
}

// The header is read first and a tensor's bytes later: a file cut short
// in between is an error naming the file and the tensor, not a short read.
TEST_F(SafetensorsTest, AFileShortenedAfterItsHeaderWasReadIsNamed) {
  std::vector<SafetensorsTensor> tensors = {{"w", "F32", {2}, std::string(8, '\1')}};
  const std::string path = Write(SafetensorsHeader(tensors, {}) + tensors[0].bytes);
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  ASSERT_EQ(truncate(path.c_str(), st.st_size - 4), 0);
  const absl::StatusOr<std::string> bytes = file->ReadTensorBytes("w");
  // The file changed under the reader: no bad argument (exit 2) but lost data.
  EXPECT_TRUE(absl::IsDataLoss(bytes.status())) << bytes.status();
  EXPECT_THAT(std::string(bytes.status().message()), AllOf(HasSubstr(path), HasSubstr("tensor w")));
}

// An Env whose reads of the file fail as a disk that fails does (EIO).
class FailingReadsEnv : public ForwardingEnv {
 public:
  FailingReadsEnv() : ForwardingEnv(Env::Default()) {}
  absl::Status ReadFileRange(const std::string& path, uint64_t offset, size_t n,
                             void* out) override {
    if (fail_reads) return absl::InternalError(path + ": read: Input/output error");
    return base_->ReadFileRange(path, offset, n, out);
  }
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    if (fail_stat) return absl::InternalError("stat: Input/output error");  // no path: added
    return base_->FileSize(path);
  }
  bool fail_reads = true, fail_stat = false;
};

// Every read error was InvalidArgument, which dropk-train exits 2 for (a
// bad command line): an I/O error is no bad argument. Unavailable (exit 1),
// naming the file, as base/path_status.h names an I/O error.
TEST_F(SafetensorsTest, AnIoErrorIsUnavailableNamingTheFile) {
  std::vector<SafetensorsTensor> tensors = {{"w", "F32", {2}, std::string(8, '\1')}};
  const std::string path = Write(SafetensorsHeader(tensors, {}) + tensors[0].bytes);
  FailingReadsEnv env;
  absl::Status s = ReadSafetensors(path, &env).status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr(path), HasSubstr("Input/output error")));
  env.fail_stat = true;
  s = ReadSafetensors(path, &env).status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ": stat: Input/output error"));

  env.fail_reads = env.fail_stat = false;
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path, &env);
  ASSERT_TRUE(file.ok()) << file.status();
  env.fail_reads = true;
  const absl::StatusOr<std::string> bytes = file->ReadTensorBytes("w");
  EXPECT_TRUE(absl::IsUnavailable(bytes.status())) << bytes.status();
  EXPECT_THAT(std::string(bytes.status().message()), AllOf(HasSubstr(path), HasSubstr("tensor w")));
}

// A file this user may not read was InvalidArgument (exit 2) too. It is
// PermissionDenied, naming the file and the system's reason, as the
// checkpoint reader says. Read in a child, as nobody when root (root reads
// anything).
TEST_F(SafetensorsTest, AFileThatMayNotBeReadIsPermissionDenied) {
  std::vector<SafetensorsTensor> tensors = {{"w", "F32", {2}, std::string(8, '\1')}};
  const std::string path = Write(SafetensorsHeader(tensors, {}) + tensors[0].bytes);
  ASSERT_EQ(chmod(tmp_.path().c_str(), 0755), 0);
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  const auto read_as_a_user = [&] {
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      std::fprintf(stderr, "cannot become nobody\n");
      std::_Exit(2);
    }
    const absl::Status s = ReadSafetensors(path).status();
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    const bool named =
        absl::StrContains(s.message(), path) && absl::StrContains(s.message(), "Permission denied");
    std::_Exit(absl::IsPermissionDenied(s) && named ? 0 : 1);
  };
  EXPECT_EXIT(read_as_a_user(), ::testing::ExitedWithCode(0), "");
}

// A file removed after its header was read is NotFound, as a missing file
// is, and names the tensor too: it said "open: No such file or directory"
// with the file alone.
TEST_F(SafetensorsTest, AFileRemovedAfterItsHeaderWasReadIsNotFoundNamingTheTensor) {
  std::vector<SafetensorsTensor> tensors = {{"w", "F32", {2}, std::string(8, '\1')}};
  const std::string path = Write(SafetensorsHeader(tensors, {}) + tensors[0].bytes);
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(unlink(path.c_str()), 0);
  const absl::StatusOr<std::string> bytes = file->ReadTensorBytes("w");
  EXPECT_TRUE(absl::IsNotFound(bytes.status())) << bytes.status();
  EXPECT_THAT(std::string(bytes.status().message()), AllOf(HasSubstr(path), HasSubstr("tensor w")));
}

TEST_F(SafetensorsTest, AMissingFileIsNotFound) {
  const absl::Status s = ReadSafetensors(tmp_.Path("none.safetensors")).status();
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("none.safetensors"));
}

// A directory threw out of the reader (std::ios_base::failure: dropk-train
// aborted), and a FIFO would have been waited on forever.
TEST_F(SafetensorsTest, WhatIsNotARegularFileIsRefusedNamingIt) {
  const std::string fifo = tmp_.Path("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {tmp_.path(), fifo}) {
    const absl::Status s = ReadSafetensors(path).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(path + ": not a regular file"));
  }
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
  // Two tensors over the same bytes: the header lies about where the data
  // is (the old code gave both tensors the first one's values). Empty
  // ranges overlap nothing.
  EXPECT_THAT(
      ErrorFor(
          R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
          "abcdefgh"),
      HasSubstr("tensor b: bytes [4, 8) overlap tensor a's [0, 8)"));
  EXPECT_TRUE(
      ReadSafetensors(
          WithHeader(
              R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
              "abcdefgh"))
          .ok());
  // A shape whose byte count overflows 64 bits is not wrapped into a fit.
  EXPECT_THAT(
      ErrorFor(
          R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 1073741824], "data_offsets": [0, 0]}})",
          ""),
      HasSubstr("needs more than 2^64 bytes, its range holds 0"));
}

// A header is up to 100 MB of anything, quoted in a one-line error: a shape
// nested 200,000 deep (400 KB) overflowed the stack printing it (dropk-train
// --init_from segfaulted), and a name, dtype or shape of any length or with
// a newline was quoted whole.
TEST_F(SafetensorsTest, WhatAHeaderQuotesIsCutToOneLine) {
  constexpr int kDepth = 200000;
  const std::string deep = std::string(kDepth, '[') + std::string(kDepth, ']');
  const std::string nested = ErrorFor(
      R"({"w": {"dtype": "F32", "shape": )" + deep + R"(, "data_offsets": [0, 4]}})", "abcd");
  EXPECT_THAT(nested, HasSubstr("tensor w: a shape of [[[[[[[[[["));
  EXPECT_LT(nested.size(), 1000u) << nested.size();
  std::string long_shape = "[1";
  for (int i = 0; i < 100000; ++i) long_shape += ",1";
  const std::string wide = ErrorFor(
      R"({"w": {"dtype": "F32", "shape": )" + long_shape + R"(], "data_offsets": [0, 8]}})",
      "abcdefgh");
  EXPECT_THAT(wide, AllOf(HasSubstr("tensor w: shape [1,1,1,"), HasSubstr("...")));
  EXPECT_LT(wide.size(), 1000u) << wide.size();
  const std::string named =
      ErrorFor(R"({"a\nb": {"dtype": "F\u202e99", "shape": [1], "data_offsets": [0, 4]}})", "abcd");
  EXPECT_THAT(named, HasSubstr("tensor a\\u000ab: unknown dtype F\\u202e99"));
  EXPECT_EQ(named.find('\n'), std::string::npos) << named;
  const std::string long_name =
      ErrorFor("{\"" + std::string(100000, 'n') + R"(": {"dtype": "F32", "shape": [1]}})", "abcd");
  EXPECT_LT(long_name.size(), 1000u) << long_name.size();
}

}  // namespace
}  // namespace dropk
