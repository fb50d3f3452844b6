// A CompletionListener for tests that keeps what a completion job sends:
// its events as they come, and its result, which Wait blocks for.
#ifndef DROPK_TESTS_SUPPORT_COMPLETION_COLLECTOR_H_
#define DROPK_TESTS_SUPPORT_COMPLETION_COLLECTOR_H_

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "sampler/completions.h"

namespace dropk::testing {

class CompletionCollector final : public CompletionListener {
 public:
  void OnEvent(std::string event) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
  }
  void OnDone(CompletionResult result) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(result);
    done_ = true;
    cv_.notify_all();
  }
  // The job's result, once OnDone has come.
  CompletionResult Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return result_;
  }
  // The events so far, in order.
  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  CompletionResult result_;
  std::vector<std::string> events_;
};

}  // namespace dropk::testing

#endif  // DROPK_TESTS_SUPPORT_COMPLETION_COLLECTOR_H_
