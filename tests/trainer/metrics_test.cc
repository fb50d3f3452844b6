// metrics.jsonl: where rank 0 logs progress.
#include "trainer/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>

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
    absl::StatusOr<MetricsLog> log = resume ? MetricsLog::OpenForResume(fifo.path(), 5)
                                            : MetricsLog::Create(fifo.path());
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5))
        << "open blocked (resume " << resume << ")";
    ASSERT_FALSE(log.ok());
    EXPECT_THAT(std::string(log.status().message()),
                AllOf(HasSubstr(fifo.path()), HasSubstr("not a regular file")));
  }
}

}  // namespace
}  // namespace dropk
