// dropk launch's hostfile reading: a pipe (`--hostfile <(...)`) is read
// whole, and a pipe that never ends or has no writer is refused in bounded
// time instead of blocking the launcher for good.
#include "tools/hostfile_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dropk {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// A pipe whose read end is named /dev/fd/N, as bash's `<(...)` names it.
class PipeHostfileTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::pipe(fds_), 0); }
  void TearDown() override {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  std::string ReadEndPath() const { return "/dev/fd/" + std::to_string(fds_[0]); }
  void Write(const std::string& text) {
    ASSERT_EQ(::write(fds_[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  void CloseWriteEnd() {
    ::close(fds_[1]);
    fds_[1] = -1;
  }
  int fds_[2] = {-1, -1};
};

TEST_F(PipeHostfileTest, APipeIsReadToItsEnd) {
  Write("node1 slots=2\n");
  Write("node2 slots=2\n");
  CloseWriteEnd();
  absl::StatusOr<std::string> text = ReadHostfileText(ReadEndPath(), 1 << 20, 5000ms);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "node1 slots=2\nnode2 slots=2\n");
}

// Its writer still holds it open and sends no more: refused after the
// quiet limit, not waited on for good.
TEST_F(PipeHostfileTest, AWriterThatGoesQuietIsRefusedAfterTheLimit) {
  Write("node1\n");
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> text = ReadHostfileText(ReadEndPath(), 1 << 20, 200ms);
  ASSERT_FALSE(text.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(),
              HasSubstr("a pipe whose writer sent nothing for 0.2 s (6 bytes before)"));
}

TEST_F(PipeHostfileTest, APipePastTheLimitIsRefused) {
  Write(std::string(100, 'x'));
  CloseWriteEnd();
  absl::StatusOr<std::string> text = ReadHostfileText(ReadEndPath(), 64, 5000ms);
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(text.status().message(), HasSubstr("more than the 64 bytes allowed"));
}

// A FIFO no program has opened for writing: opening it blocked for good.
TEST(FifoHostfileTest, AFifoWithoutAWriterIsRefusedAtOnce) {
  char dir_template[] = "/tmp/dropk-fifo-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string fifo = std::string(dir_template) + "/hosts";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> text = ReadHostfileText(fifo, 1 << 20, 30000ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(text.status().message(), HasSubstr("a pipe that no program writes to"));
  ::unlink(fifo.c_str());
  ::rmdir(dir_template);
}

TEST(FileHostfileTest, ARegularFileIsReadAndAMissingOneIsNotFound) {
  char path[] = "/tmp/dropk-hostfile-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "localhost\n", 10), 10);
  ::close(fd);
  absl::StatusOr<std::string> text = ReadHostfileText(path, 1 << 20, 1000ms);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "localhost\n");
  ::unlink(path);
  EXPECT_EQ(ReadHostfileText(path, 1 << 20, 1000ms).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadHostfileText("/tmp", 1 << 20, 1000ms).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dropk
