// dropk-train's stop signals: the first asks for a save and a stop; a
// second one a second or more later kills at once; one within a second of
// the first is the same stop (GNU timeout sends its stop to the process and
// then to its group, microseconds apart).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include <gtest/gtest.h>

#include "trainer/training_checkpoints.h"

namespace dropk {
namespace {

TEST(StopSignalDeathTest, ASecondSignalWithinASecondIsTheSameStop) {
  EXPECT_EXIT(
      {
        InstallStopSignalHandlers();
        raise(SIGUSR1);
        raise(SIGTERM);
        // Still here, stopping; the first signal is the one named.
        std::exit(StopRequested() && StopSignal() == SIGUSR1 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(StopSignalDeathTest, ASecondSignalASecondLaterKillsAtOnce) {
  EXPECT_EXIT(
      {
        InstallStopSignalHandlers();
        raise(SIGTERM);
        std::this_thread::sleep_for(std::chrono::milliseconds(1100));
        raise(SIGTERM);
        std::exit(0);  // not reached
      },
      ::testing::KilledBySignal(SIGTERM), "");
}

}  // namespace
}  // namespace dropk
