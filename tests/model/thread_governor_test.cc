// The thread governor shrinks the team while the process waits for CPU
// (another process holds cores), probes one thread more from time to time,
// backs off after failed probes and returns to the full team when the load
// goes. Time and run delay are simulated; one test reads the real /proc.
#include "model/thread_governor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>

namespace dropk {
namespace {

using std::chrono::milliseconds;
using Clock = ThreadGovernor::Clock;

// A simulated process: its clock advances only when told, and its threads
// accumulate run delay at `waiting_cores` (cores' worth of waiting) per
// unit of wall time while their team is larger than the cores they are given.
class SimulatedLoad {
 public:
  ThreadGovernor::Sources Sources() {
    return {[this] { return now_; }, [this] { return std::optional<uint64_t>(delay_ns_); }};
  }
  // Advances wall time by d; threads of a team larger than `free_cores` wait.
  void Run(milliseconds d, int team, int free_cores) {
    now_ += d;
    if (team > free_cores) {
      delay_ns_ += static_cast<uint64_t>(0.6 * std::chrono::nanoseconds(d).count());
    }
  }

 private:
  Clock::time_point now_{};
  uint64_t delay_ns_ = 0;
};

// Runs units of `unit` wall time, calling Update before each like the
// trainer does, for `total`; returns the team at the end.
int RunFor(ThreadGovernor& g, SimulatedLoad& load, milliseconds total, int free_cores,
           milliseconds unit = milliseconds(30)) {
  for (milliseconds t(0); t < total; t += unit) load.Run(unit, g.Update(), free_cores);
  return g.Update();
}

TEST(ThreadGovernorTest, KeepsTheFullTeamOnAQuietMachine) {
  SimulatedLoad load;
  ThreadGovernor g(2, load.Sources());
  EXPECT_EQ(RunFor(g, load, milliseconds(5000), /*free_cores=*/2), 2);
}

TEST(ThreadGovernorTest, ShrinksWhileAnotherProcessHoldsACore) {
  SimulatedLoad load;
  ThreadGovernor g(2, load.Sources());
  // After 300 ms of contention (kContendedTime, and one window more for
  // the window edges) the team shrinks.
  EXPECT_EQ(RunFor(g, load, milliseconds(300) + ThreadGovernor::kWindow + milliseconds(30), 1), 1);
}

// A step longer than the contended time is one window: one contended step
// shrinks the team, as one contended window always did. (Counting three
// windows, that is three steps, let a 600 ms step run three times at a
// fraction of its speed first.)
TEST(ThreadGovernorTest, OneLongContendedStepShrinks) {
  SimulatedLoad load;
  ThreadGovernor g(2, load.Sources());
  EXPECT_EQ(RunFor(g, load, milliseconds(700), /*free_cores=*/1, /*unit=*/milliseconds(600)), 1);
}

// A burst of another process shorter than 300 ms (a process listing, a
// kernel thread), even every half second, keeps the full team: before, one
// contended window shrank it, and bursts like these kept a training run on
// one of two cores most of the time.
TEST(ThreadGovernorTest, ShortBurstsKeepTheFullTeam) {
  SimulatedLoad load;
  ThreadGovernor g(2, load.Sources());
  const milliseconds unit(10);
  int smallest = 2;
  for (milliseconds t(0); t < milliseconds(20000); t += unit) {
    const int team = g.Update();
    smallest = std::min(smallest, team);
    // Every 500 ms, 150 ms (one and a half windows) with a core taken.
    const bool burst = t.count() % 500 < 150;
    load.Run(unit, team, burst ? 1 : 2);
  }
  EXPECT_EQ(smallest, 2);
}

// A co-tenant busy in most 100 ms slots, idle in some (a fixed pseudo-random
// pattern, 80% busy): a probe kept in an idle moment and undone soon after
// counts as failed, so probes still back off rather than come every second
// or so all along.
TEST(ThreadGovernorTest, ProbesBackOffUnderAnIntermittentLoad) {
  SimulatedLoad load;
  ThreadGovernor g(2, load.Sources());
  const milliseconds unit(20);
  uint32_t state = 12345;
  bool busy = true;
  int probes = 0, last = g.Update();
  for (milliseconds t(0); t < milliseconds(60000); t += unit) {
    if (t.count() % 100 == 0) {
      state = state * 1664525u + 1013904223u;
      busy = (state >> 8) % 10 < 8;
    }
    const int team = g.Update();
    if (team > last) ++probes;
    last = team;
    load.Run(unit, team, busy ? 1 : 2);
  }
  EXPECT_LE(probes, 12);
}

TEST(ThreadGovernorTest, ProbesLessOftenWhileTheLoadStays) {
  SimulatedLoad load;
  ThreadGovernor g(2, load.Sources());
  int probes = 0;
  int last = g.Update();
  const milliseconds unit(30);
  for (milliseconds t(0); t < milliseconds(60000); t += unit) {
    const int team = g.Update();
    if (team > last) ++probes;
    last = team;
    load.Run(unit, team, /*free_cores=*/1);
  }
  // Probes after 1, 2, 4, 8, 16, 16, 16 ... s: a handful in a minute, not
  // one a second; and each is short, so the team is 1 nearly all the time.
  EXPECT_GE(probes, 3);
  EXPECT_LE(probes, 8);
  EXPECT_EQ(last, 1);
}

TEST(ThreadGovernorTest, ReturnsToTheFullTeamWhenTheLoadGoes) {
  SimulatedLoad load;
  ThreadGovernor g(4, load.Sources());
  // Three busy processes on four cores leave one free core.
  EXPECT_EQ(RunFor(g, load, milliseconds(3000), /*free_cores=*/1), 1);
  // Once they stop, probes succeed one after another.
  EXPECT_EQ(RunFor(g, load, milliseconds(40000), /*free_cores=*/4), 4);
}

TEST(ThreadGovernorTest, WithoutRunDelayKeepsTheFullTeam) {
  Clock::time_point now{};
  ThreadGovernor g(2, {[&] { return now; }, [] { return std::optional<uint64_t>(); }});
  for (int i = 0; i < 100; ++i) {
    now += milliseconds(50);
    EXPECT_EQ(g.Update(), 2);
  }
}

TEST(ThreadGovernorTest, ReadsThisProcesssRunDelay) {
  // Linux offers /proc/self/task/*/schedstat (CONFIG_SCHED_INFO); where it
  // does not, the governor is off and this test has nothing to check.
  const std::optional<uint64_t> delay = ProcessRunDelayNs();
  if (!delay) GTEST_SKIP() << "no /proc/self/task/*/schedstat here";
  const std::optional<uint64_t> later = ProcessRunDelayNs();
  ASSERT_TRUE(later.has_value());
  EXPECT_GE(*later, *delay);
}

}  // namespace
}  // namespace dropk
