// Sizes a CPU thread team to the cores this process is actually given.
//
// Why: the CPU kernels split every parallel region statically over a team of
// one thread per core, and every region ends in a barrier. Beside one busy
// process the OS time-slices one team thread with it, so each region waits a
// scheduler slice for that thread while the other spins at the barrier:
// throughput fell to 0.15x (issue 9). One thread fewer than the team is then
// faster than the whole team. The governor watches the run delay of this
// process's threads (time spent runnable but not running, from
// /proc/self/task/*/schedstat): while it is a sizeable share of the wall
// time, another process holds cores we asked for, so the team shrinks by
// one; from time to time it probes one thread more and keeps it when that
// leaves the run delay low (kContendedTime below). The kernels' results do not depend on the team
// size, so resizing between steps changes timing only.
//
// Not thread-safe: one driving thread calls Update.
#ifndef DROPK_MODEL_THREAD_GOVERNOR_H_
#define DROPK_MODEL_THREAD_GOVERNOR_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

namespace dropk {

// The summed run delay (ns) of this process's threads, from
// /proc/self/task/*/schedstat, or nullopt when /proc offers none.
std::optional<uint64_t> ProcessRunDelayNs();

// Where a ThreadGovernor reads time and run delay; tests substitute their own.
struct ThreadGovernorSources {
  std::function<std::chrono::steady_clock::time_point()> now = [] {
    return std::chrono::steady_clock::now();
  };
  // The summed run delay (ns) of this process's threads, nullopt if unknown.
  std::function<std::optional<uint64_t>()> run_delay_ns = &ProcessRunDelayNs;
};

class ThreadGovernor {
 public:
  using Clock = std::chrono::steady_clock;
  using Sources = ThreadGovernorSources;

  // Teams of 1..max_threads, starting at max_threads. When no run delay can
  // be read (no /proc schedstat) the governor keeps max_threads.
  explicit ThreadGovernor(int max_threads, Sources sources = Sources());

  // Call between units of work (a training step, a decode step) from the
  // thread that starts the parallel regions; cheap (a clock read) except
  // once per window, when it reads the threads' schedstat. Returns the team
  // size for the next unit.
  int Update();

  int threads() const { return threads_; }

  // Wall time of one measurement window: long against a scheduler slice
  // (a few ms), short against the seconds a load lasts.
  static constexpr std::chrono::milliseconds kWindow{100};
  // Average cores' worth of waiting above which a window counts as
  // contended.
  static constexpr double kContendedCores = 0.25;
  // Wall time contended without a break that shrinks the team; also how
  // long a probe of one thread more runs before it is kept (when its latest
  // window was not contended). One contended window used to shrink it: on a
  // 2-core VM, short bursts of other processes (a process listing, a kernel
  // thread) made single windows contended often enough that a training run
  // on an otherwise idle machine spent most of its steps on one thread (the
  // recipe: ~21,000 tokens/s against ~37,000 with both; 2026-11-30). A
  // window closes at the first Update after kWindow, so with units longer
  // than kContendedTime one contended unit shrinks the team, as before.
  // Each thread shed takes kContendedTime of contention.
  static constexpr std::chrono::milliseconds kContendedTime{300};
  // How long a reduced team runs before trying one thread more; doubled
  // after each failed try (and after a kept one undone within
  // kLongestProbe), up to kLongestProbe.
  static constexpr std::chrono::milliseconds kFirstProbe{1000};
  static constexpr std::chrono::milliseconds kLongestProbe{16000};

 private:
  Sources sources_;
  const int max_threads_;
  int threads_;
  bool enabled_;
  bool probing_ = false;  // the current window runs one thread more, on trial
  Clock::duration contended_time_{};  // contended wall time without a break, up to now
  Clock::duration probe_time_{};      // wall time the current probe has run
  Clock::time_point kept_at_{};       // when a probe was last kept
  Clock::time_point window_start_;
  uint64_t delay_at_window_start_ = 0;
  Clock::time_point next_probe_;
  Clock::duration probe_interval_ = kFirstProbe;
};

}  // namespace dropk

#endif  // DROPK_MODEL_THREAD_GOVERNOR_H_
