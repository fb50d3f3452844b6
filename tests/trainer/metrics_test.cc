// metrics.jsonl: where rank 0 logs progress.
#include "trainer/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "support/fifo.h"
#include "support/temp_dir.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// A FIFO at OUT_DIR/metrics.jsonl: the stream's open waited for a reader,
// and dropk-train hung before its first step (SIGTERM did not end it).
TEST(MetricsLogTest, AFifoIsRefusedWithoutBlocking) {
  test_util::ScopedTempDir dir("metrics");
  test_util::FifoWithUnblocker fifo(dir.Path("metrics.jsonl"), std::chrono::seconds(10));
  for (bool resume : {false, true}) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<MetricsLog> log = resume ? MetricsLog::OpenForResume(fifo.path(), 5, -1, std::cerr)
                                            : MetricsLog::Create(fifo.path(), std::cerr);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5))
        << "open blocked (resume " << resume << ")";
    ASSERT_FALSE(log.ok());
    EXPECT_THAT(std::string(log.status().message()),
                AllOf(HasSubstr(fifo.path()), HasSubstr("not a regular file")));
  }
}

// A fresh run in an out_dir that an earlier run used (with another
// checkpoint_dir, or with no checkpoint saved) truncated its metrics.jsonl:
// the earlier run's metrics were lost without a word. They are kept beside
// it, and the line says where.
TEST(MetricsLogTest, AFreshLogKeepsTheEarlierRunsLog) {
  test_util::ScopedTempDir dir("metrics");
  const std::string path = dir.Path("metrics.jsonl");
  std::ofstream(path) << R"({"step":0,"lr":0.001})"
                      << "\n";
  std::ostringstream said;
  absl::StatusOr<MetricsLog> log = MetricsLog::Create(path, said);
  ASSERT_TRUE(log.ok()) << log.status();
  MetricsRow row;
  row.lr = 0.5f;
  ASSERT_TRUE(log->Append(row).ok());
  std::vector<std::string> kept;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().filename() != "metrics.jsonl") kept.push_back(entry.path().string());
  }
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_THAT(kept[0],
              ::testing::MatchesRegex(".*/metrics\\.earlier-run-[0-9]{8}T[0-9]{6}Z\\.jsonl"));
  std::ifstream earlier(kept[0]);
  std::string line;
  std::getline(earlier, line);
  EXPECT_EQ(line, R"({"step":0,"lr":0.001})");
  EXPECT_EQ(said.str(),
            "dropk-train: " + path + " held an earlier run's metrics; kept as " + kept[0] + "\n");
  // An empty log holds nothing to keep.
  std::ofstream(path, std::ios::trunc).flush();
  std::ostringstream quiet;
  ASSERT_TRUE(MetricsLog::Create(path, quiet).ok());
  EXPECT_EQ(quiet.str(), "");
}

// A whole line of metrics.jsonl that is not a row (a torn last line is one
// a crash cut short) was dropped on resume without a word, the log
// rewritten without it. The log is kept as it was first, and a line says so.
TEST(MetricsLogTest, ResumingALogWithLinesThatAreNotRowsKeepsItAsItWas) {
  test_util::ScopedTempDir dir("metrics");
  const std::string path = dir.Path("metrics.jsonl");
  const std::string before =
      "{\"step\":1,\"lr\":0.1}\nnot a row\n{\"step\":2,\"lr\":0.2}\n{\"step\":7,\"lr\":0.7}\n"
      "{\"step\":3,";
  std::ofstream(path) << before;
  std::ostringstream said;
  absl::StatusOr<MetricsLog> log = MetricsLog::OpenForResume(path, 5, /*latest_step=*/5, said);
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<std::string> kept;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().filename() != "metrics.jsonl") kept.push_back(entry.path().string());
  }
  ASSERT_EQ(kept.size(), 1u) << said.str();
  EXPECT_THAT(kept[0],
              ::testing::MatchesRegex(".*/metrics\\.before-resume-[0-9]{8}T[0-9]{6}Z\\.jsonl"));
  std::ifstream kept_file(kept[0]);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(kept_file), {}), before);
  std::ifstream now(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(now), {}),
            "{\"step\":1,\"lr\":0.1}\n{\"step\":2,\"lr\":0.2}\n");
  EXPECT_EQ(said.str(), "dropk-train: " + path +
                            " line 2 is not a metrics row (1 such line(s)); the log as it was is "
                            "kept as " +
                            kept[0] + "\n");
  // Only a torn last line: rewritten without it, quietly, as before.
  std::filesystem::remove(kept[0]);
  std::ofstream(path, std::ios::trunc) << "{\"step\":1}\n{\"step\":2";
  std::ostringstream quiet;
  ASSERT_TRUE(MetricsLog::OpenForResume(path, 5, /*latest_step=*/5, quiet).ok());
  EXPECT_EQ(quiet.str(), "");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

// Going back to an older checkpoint (step 20 of a run whose LATEST is 50)
// dropped the later course's rows 20..50 without a word; the resumed run
// does not write them again. The log is kept as it was, and a line says so.
// Resuming at the newest checkpoint (a crash's replay) drops its rows past
// it quietly: they are written again, the same.
TEST(MetricsLogTest, GoingBackToAnOlderCheckpointKeepsTheLogAsItWas) {
  test_util::ScopedTempDir dir("metrics");
  const std::string path = dir.Path("metrics.jsonl");
  std::string before;
  for (int step = 0; step <= 50; step += 10) before += absl::StrCat("{\"step\":", step, "}\n");
  std::ofstream(path) << before;
  std::ostringstream said;
  ASSERT_TRUE(MetricsLog::OpenForResume(path, 20, /*latest_step=*/50, said).ok());
  std::vector<std::string> kept;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().filename() != "metrics.jsonl") kept.push_back(entry.path().string());
  }
  ASSERT_EQ(kept.size(), 1u) << said.str();
  std::ifstream kept_file(kept[0]);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(kept_file), {}), before);
  std::ifstream now(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(now), {}), "{\"step\":0}\n{\"step\":10}\n");
  EXPECT_EQ(said.str(), "dropk-train: resuming at step 20, before the checkpoint LATEST names (step 50): " +
                            path + " keeps its rows before step 20; the log as it was (4 row(s) "
                            "from step 20 on) is kept as " + kept[0] + "\n");

  std::filesystem::remove(kept[0]);
  std::ofstream(path, std::ios::trunc) << before;
  std::ostringstream quiet;
  ASSERT_TRUE(MetricsLog::OpenForResume(path, 40, /*latest_step=*/40, quiet).ok());
  EXPECT_EQ(quiet.str(), "");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

// The kept log's name says what it is and when that run last wrote, and
// never takes a name in use.
TEST(MetricsLogTest, KeptEarlierLogNamesAreDatedAndFree) {
  const std::time_t last_write = 1796084456;  // 2026-12-01 00:20:56 UTC
  static std::set<std::string> taken;
  taken.clear();
  const auto is_taken = [](const std::string& p) { return taken.count(p) > 0; };
  EXPECT_EQ(KeptEarlierLogPath("run/metrics.jsonl", last_write, is_taken),
            "run/metrics.earlier-run-20261201T002056Z.jsonl");
  taken = {"run/metrics.earlier-run-20261201T002056Z.jsonl",
           "run/metrics.earlier-run-20261201T002056Z-2.jsonl"};
  EXPECT_EQ(KeptEarlierLogPath("run/metrics.jsonl", last_write, is_taken),
            "run/metrics.earlier-run-20261201T002056Z-3.jsonl");
}

}  // namespace
}  // namespace dropk
