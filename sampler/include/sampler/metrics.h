// Service metrics in Prometheus text format (exposition format 0.0.4).
// Thread-safe: counters and gauges are atomics, histograms take a mutex.
#ifndef DROPK_SAMPLER_METRICS_H_
#define DROPK_SAMPLER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace dropk {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Appends the _bucket, _sum and _count lines of `name`.
  void Render(const std::string& name, const std::string& help, std::string* out) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // bounds_.size() + 1 (the +Inf bucket)
  double sum_ = 0;
  uint64_t count_ = 0;
};

class ServiceMetrics {
 public:
  ServiceMetrics();

  void CountRequest(int status);  // one per HTTP response, by status code
  std::atomic<uint64_t> generated_tokens{0};
  std::atomic<int64_t> running_batch{0};  // sequences in the running batch
  std::atomic<int64_t> queue_length{0};   // sequences waiting for a slot
  std::atomic<int64_t> checkpoint_step{-1};
  std::atomic<uint64_t> reloads_ok{0};
  std::atomic<uint64_t> reloads_failed{0};
  std::atomic<uint64_t> cancelled_sequences{0};
  std::atomic<int64_t> open_connections{0};       // HTTP connections being served
  std::atomic<uint64_t> refused_connections{0};   // turned away past --max-connections
  Histogram ttft_seconds;
  Histogram inter_token_seconds;

  // Why the newest checkpoint was refused, while it stays refused (the
  // model served is older, or there is none); "" when none is. Set by the
  // checkpoint watcher, shown by /readyz and as the dropk_reload_refused
  // gauge: a refusal was in the log and a counter alone, and a readiness
  // probe saw "ready" on an old model for good.
  void SetReloadRefusal(std::string why);
  std::string ReloadRefusal() const;

  std::string Render() const;

 private:
  mutable std::mutex mu_;
  std::map<int, uint64_t> requests_by_status_;
  std::string reload_refusal_;
};

}  // namespace dropk

#endif  // DROPK_SAMPLER_METRICS_H_
