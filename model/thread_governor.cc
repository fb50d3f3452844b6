#include "model/thread_governor.h"

#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

namespace dropk {

ThreadGovernor::ThreadGovernor(int max_threads, Sources sources)
    : sources_(std::move(sources)), max_threads_(std::max(1, max_threads)), threads_(max_threads_) {
  const std::optional<uint64_t> delay = sources_.run_delay_ns();
  enabled_ = max_threads_ > 1 && delay.has_value();
  window_start_ = sources_.now();
  delay_at_window_start_ = delay.value_or(0);
  next_probe_ = window_start_;
  kept_at_ = window_start_ - kLongestProbe;  // no probe kept yet
}

std::optional<uint64_t> ProcessRunDelayNs() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return std::nullopt;
  uint64_t total = 0;
  bool any = false;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    const std::string path = std::string("/proc/self/task/") + entry->d_name + "/schedstat";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) continue;  // the thread has just exited
    unsigned long long on_cpu = 0, waiting = 0;
    if (std::fscanf(f, "%llu %llu", &on_cpu, &waiting) == 2) {
      total += waiting;
      any = true;
    }
    std::fclose(f);
  }
  closedir(dir);
  if (!any) return std::nullopt;
  return total;
}

int ThreadGovernor::Update() {
  if (!enabled_) return threads_;
  const Clock::time_point now = sources_.now();
  const Clock::duration elapsed = now - window_start_;
  if (elapsed < kWindow) return threads_;
  const std::optional<uint64_t> delay = sources_.run_delay_ns();
  if (!delay) return threads_;
  // A thread that exited takes its delay with it: never count below zero.
  const uint64_t waited = *delay > delay_at_window_start_ ? *delay - delay_at_window_start_ : 0;
  const double waiting_cores =
      static_cast<double>(waited) /
      static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
  window_start_ = now;
  delay_at_window_start_ = *delay;
  // A burst shorter than kContendedTime (a short job, a kernel thread) is
  // no reason to shrink. Time, not windows, counts: a window lasts a whole
  // step, so a long step's single window already averages bursts away.
  contended_time_ =
      waiting_cores > kContendedCores ? contended_time_ + elapsed : Clock::duration::zero();
  if (probing_) probe_time_ += elapsed;

  if (contended_time_ >= kContendedTime && threads_ > 1) {
    --threads_;
    contended_time_ = Clock::duration::zero();
    // A failed probe, or a kept one undone this soon, means the load is
    // still there: probe less often. A load that comes after a settled
    // spell starts the back-off afresh.
    const bool load_stayed = probing_ || now - kept_at_ < kLongestProbe;
    probe_interval_ =
        load_stayed ? std::min<Clock::duration>(2 * probe_interval_, kLongestProbe) : kFirstProbe;
    probing_ = false;
    next_probe_ = now + probe_interval_;
  } else if (probing_ && probe_time_ >= kContendedTime &&
             contended_time_ == Clock::duration::zero()) {
    // The extra thread ran kContendedTime and its latest window waited
    // little: keep it, and try the next one at once.
    probing_ = false;
    kept_at_ = now;
    next_probe_ = now;
  } else if (!probing_ && threads_ < max_threads_ && now >= next_probe_) {
    ++threads_;
    probing_ = true;
    probe_time_ = Clock::duration::zero();
    contended_time_ = Clock::duration::zero();
  }
  return threads_;
}

}  // namespace dropk
