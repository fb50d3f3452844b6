// RecordFailure keeps each failing rank's line in the run directory.
#include "trainer/failure_record.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "support/forwarding_env.h"

namespace dropk {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::filesystem::path FreshDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / (name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(FailureRecordTest, PathNamesTheRankZeroPadded) {
  EXPECT_EQ(FailureRecordPath("/runs/a", 3), "/runs/a/failures/rank-00003.log");
}

// `dropk launch` tells the hosts no rank started on by these markers; only
// the markers of the attempt asked about count.
TEST(FailureRecordTest, StartMarkersNameRankAndHostOfTheirAttemptOnly) {
  const std::filesystem::path out = FreshDir("failure_record_started");
  ASSERT_TRUE(RecordRankStarted(out.string(), "a1", 3));
  ASSERT_TRUE(RecordRankStarted(out.string(), "a2", 0));
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  const std::optional<std::vector<StartedRank>> ranks =
      StartedRanksWithin(out.string(), "a1", std::chrono::seconds(5));
  ASSERT_TRUE(ranks.has_value());
  ASSERT_EQ(ranks->size(), 1u);
  EXPECT_EQ((*ranks)[0].rank, 3);
  EXPECT_EQ((*ranks)[0].host, host);
  EXPECT_NE(std::find((*ranks)[0].addresses.begin(), (*ranks)[0].addresses.end(), "127.0.0.1"),
            (*ranks)[0].addresses.end());
  EXPECT_TRUE(StartedRanksWithin(out.string(), "a3", std::chrono::seconds(5))->empty());
  RemoveStartMarkersWithin(out.string(), "a1", std::chrono::seconds(5));
  EXPECT_FALSE(std::filesystem::exists(StartMarkerDir(out.string(), "a1")));
  EXPECT_TRUE(std::filesystem::exists(StartMarkerDir(out.string(), "a2")));
  RemoveStartMarkersWithin(out.string(), "a2", std::chrono::seconds(5));
  EXPECT_FALSE(std::filesystem::exists(out / "started"));
  std::filesystem::remove_all(out);
}

// A marker directory that is absent says no rank started; one that cannot
// be read (here a file where the directory should be) says nothing, and
// `dropk launch` must not name hosts silent on it.
TEST(FailureRecordTest, StartMarkersThatCannotBeReadAreToldFromAbsentOnes) {
  const std::filesystem::path out = FreshDir("failure_record_unreadable_started");
  const std::optional<std::vector<StartedRank>> absent =
      StartedRanksWithin(out.string(), "a1", std::chrono::seconds(5));
  ASSERT_TRUE(absent.has_value());
  EXPECT_TRUE(absent->empty());
  std::filesystem::create_directories(out / "started");
  std::ofstream(StartMarkerDir(out.string(), "a1")) << "not a directory\n";
  EXPECT_FALSE(StartedRanksWithin(out.string(), "a1", std::chrono::seconds(5)).has_value());
  std::filesystem::remove_all(out);
}

TEST(FailureRecordTest, AppendsOneTimestampedLinePerFailureAndKeepsEarlierOnes) {
  const std::filesystem::path out = FreshDir("failure_record_append");
  ASSERT_TRUE(RecordFailure(out.string(), 2, "rank 2 of 4: first"));
  ASSERT_TRUE(RecordFailure(out.string(), 2, "rank 2 of 4: second"));
  const std::string text = ReadAll(FailureRecordPath(out.string(), 2));
  const size_t first = text.find(": rank 2 of 4: first\n");
  const size_t second = text.find(": rank 2 of 4: second\n");
  ASSERT_NE(first, std::string::npos) << text;
  ASSERT_NE(second, std::string::npos) << text;
  EXPECT_LT(first, second);
  // Each line starts with the UTC time to the millisecond, then host and pid.
  EXPECT_EQ(text[4], '-') << text;
  EXPECT_EQ(text[19], '.') << text;
  EXPECT_EQ(text[23], 'Z') << text;
  EXPECT_NE(text.find(" pid " + std::to_string(::getpid()) + ": "), std::string::npos) << text;
  EXPECT_FALSE(std::filesystem::exists(FailureRecordPath(out.string(), 0)));
  std::filesystem::remove_all(out);
}

TEST(FailureRecordTest, RecordsSinceAMarkAreTheNewLinesOfEveryRankOldestFirst) {
  const std::filesystem::path out = FreshDir("failure_record_since");
  EXPECT_TRUE(MarkFailureRecords(out.string()).empty());  // no failures/ yet
  ASSERT_TRUE(RecordFailure(out.string(), 0, "rank 0 of 2: before"));
  const FailureRecordMarks marks = MarkFailureRecords(out.string());
  ASSERT_EQ(marks.size(), 1u);
  // Written out of time order, on purpose: rank 1's line is the older.
  std::ofstream(FailureRecordPath(out.string(), 1), std::ios::app)
      << "2026-11-30T10:00:05Z host b pid 2: rank 1 of 2: second\n";
  std::ofstream(FailureRecordPath(out.string(), 0), std::ios::app)
      << "2026-11-30T10:00:09Z host a pid 1: rank 0 of 2: third\n";
  std::ofstream(FailureRecordPath(out.string(), 1), std::ios::app)
      << "2026-11-30T10:00:01Z host b pid 2: rank 1 of 2: first\n";
  const std::vector<std::string> lines = FailureRecordsSince(out.string(), marks);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[0].find(": first"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find(": second"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find(": third"), std::string::npos) << lines[2];
  std::filesystem::remove_all(out);
}

// A write that does not finish (here a FIFO nobody reads, as a shared
// filesystem gone with the network would) is given up after the limit.
TEST(FailureRecordTest, AWriteThatNeverEndsIsAbandonedAfterTheLimit) {
  const std::filesystem::path out = FreshDir("failure_record_stuck");
  std::filesystem::create_directories(out / "failures");
  ASSERT_EQ(::mkfifo(FailureRecordPath(out.string(), 0).c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(RecordFailure(out.string(), 0, "rank 0 of 1: lost", std::chrono::milliseconds(200)));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(200));
  EXPECT_LT(took, std::chrono::seconds(2));
  // The writer thread stays blocked in open(2) on the FIFO until this test
  // process exits, as a rank's would until the rank exits. (Freeing it by
  // opening the FIFO would make its write a SIGPIPE once the reader closes.)
}

TEST(FailureRecordTest, AnOutDirThatCannotHoldItIsReportedNotFatal) {
  const std::filesystem::path dir = FreshDir("failure_record_blocked");
  const std::string not_a_dir = (dir / "file").string();
  std::ofstream(not_a_dir) << "x";
  EXPECT_FALSE(RecordFailure(not_a_dir, 0, "rank 0 of 1: lost"));
  EXPECT_FALSE(RecordFailure("", 0, "rank 0 of 1: lost"));
  std::filesystem::remove_all(dir);
}

// An Env whose ListDir does not answer until released (a shared filesystem
// whose server is gone), or until 20 s have passed, so that a read that is
// not bounded fails the test instead of hanging it. Never deleted: a thread
// given up on goes on using it after the test.
class HangingListEnv : public ForwardingEnv {
 public:
  HangingListEnv() : ForwardingEnv(Env::Default()) {}
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    ++lists_;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(20), [this] { return released_; });
    }
    return base_->ListDir(path);
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  // How many ListDir calls began.
  int lists() const { return lists_; }

 private:
  std::atomic<int> lists_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
};

// dropk launch read the failure records with no time bound: an out_dir on a
// shared filesystem whose server went with a lost host hung the launcher
// before the relaunch. Each read is given up after its limit.
TEST(FailureRecordTest, ReadsThatNeverEndAreGivenUpAfterTheLimit) {
  const std::filesystem::path out = FreshDir("failure_record_hanging_read");
  ASSERT_TRUE(RecordFailure(out.string(), 0, "rank 0 of 1: lost"));
  HangingListEnv& env = *new HangingListEnv;
  constexpr std::chrono::milliseconds kLimit(200);
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(MarkFailureRecordsWithin(out.string(), kLimit, &env).has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  start = std::chrono::steady_clock::now();
  EXPECT_FALSE(FailureRecordsSinceWithin(out.string(), {}, kLimit, &env).has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // Answered in time, they read what is there.
  env.Release();
  const std::optional<std::vector<std::string>> lines =
      FailureRecordsSinceWithin(out.string(), {}, std::chrono::seconds(10), &env);
  ASSERT_TRUE(lines.has_value());
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_NE(lines->front().find(": rank 0 of 1: lost"), std::string::npos) << lines->front();
  const std::optional<FailureRecordMarks> marks =
      MarkFailureRecordsWithin(out.string(), std::chrono::seconds(10), &env);
  ASSERT_TRUE(marks.has_value());
  EXPECT_EQ(marks->size(), 1u);
  std::filesystem::remove_all(out);
}

// dropk launch polls the failure records every second while mpirun runs;
// on a hung filesystem each poll left one more thread blocked for good. A
// poll while a read is in flight waits on that read instead.
TEST(FailureRecordTest, PollsHoldOneReadInFlightHoweverOftenTheyCome) {
  const std::filesystem::path out = FreshDir("failure_record_poller");
  ASSERT_TRUE(RecordFailure(out.string(), 0, "rank 0 of 1: lost"));
  HangingListEnv& env = *new HangingListEnv;
  FailureRecordPoller poller(out.string(), {}, &env);
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(poller.Poll(std::chrono::milliseconds(20)).has_value());
  }
  EXPECT_EQ(env.lists(), 1);
  env.Release();
  std::optional<std::vector<std::string>> lines = poller.Poll(std::chrono::seconds(10));
  ASSERT_TRUE(lines.has_value());
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_NE(lines->front().find(": rank 0 of 1: lost"), std::string::npos) << lines->front();
  EXPECT_EQ(env.lists(), 1);
  // A finished read is used once: the next poll reads what is there now.
  ASSERT_TRUE(RecordFailure(out.string(), 1, "rank 1 of 2: lost too"));
  lines = poller.Poll(std::chrono::seconds(10));
  ASSERT_TRUE(lines.has_value());
  EXPECT_EQ(lines->size(), 2u);
  EXPECT_EQ(env.lists(), 2);
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace dropk
