#include "sampler/metrics.h"

#include "absl/strings/str_cat.h"

namespace dropk {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::Render(const std::string& name, const std::string& help, std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " histogram\n");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    absl::StrAppend(out, name, "_bucket{le=\"", bounds_[i], "\"} ", cumulative, "\n");
  }
  cumulative += counts_.back();
  absl::StrAppend(out, name, "_bucket{le=\"+Inf\"} ", cumulative, "\n");
  absl::StrAppend(out, name, "_sum ", sum_, "\n", name, "_count ", count_, "\n");
}

ServiceMetrics::ServiceMetrics()
    : ttft_seconds({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      inter_token_seconds({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}) {}

void ServiceMetrics::CountRequest(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_by_status_[status];
}

void ServiceMetrics::SetReloadRefusal(std::string why) {
  std::lock_guard<std::mutex> lock(mu_);
  reload_refusal_ = std::move(why);
}

std::string ServiceMetrics::ReloadRefusal() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reload_refusal_;
}

std::string ServiceMetrics::Render() const {
  std::string out;
  out += "# HELP dropk_requests_total HTTP responses by status code.\n";
  out += "# TYPE dropk_requests_total counter\n";
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [status, n] : requests_by_status_) {
      absl::StrAppend(&out, "dropk_requests_total{code=\"", status, "\"} ", n, "\n");
    }
  }
  auto scalar = [&out](const char* name, const char* type, const char* help, auto value) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                    value, "\n");
  };
  scalar("dropk_generated_tokens_total", "counter", "Tokens generated.", generated_tokens.load());
  scalar("dropk_cancelled_sequences_total", "counter",
         "Sequences cancelled (client gone or shutdown).", cancelled_sequences.load());
  scalar("dropk_running_batch_size", "gauge", "Sequences in the running decode batch.",
         running_batch.load());
  scalar("dropk_queue_length", "gauge", "Sequences waiting for a batch slot.", queue_length.load());
  scalar("dropk_open_connections", "gauge", "HTTP connections open (at most --max-connections).",
         open_connections.load());
  scalar("dropk_refused_connections_total", "counter",
         "Connections answered 503 because --max-connections were open.",
         refused_connections.load());
  scalar("dropk_checkpoint_step", "gauge", "Training step of the served checkpoint (-1: none).",
         checkpoint_step.load());
  scalar("dropk_reloads_total", "counter", "Checkpoint hot reloads that succeeded.",
         reloads_ok.load());
  scalar("dropk_reload_failures_total", "counter",
         "New checkpoints refused (did not verify or load).", reloads_failed.load());
  scalar("dropk_reload_refused", "gauge",
         "1 while the newest checkpoint is refused (why: /readyz and the log), else 0.",
         ReloadRefusal().empty() ? 0 : 1);
  ttft_seconds.Render("dropk_time_to_first_token_seconds",
                      "Time from request arrival to its first generated token.", &out);
  inter_token_seconds.Render("dropk_inter_token_latency_seconds",
                             "Time between consecutive tokens of a sequence.", &out);
  return out;
}

}  // namespace dropk
