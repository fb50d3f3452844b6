// A FIFO where a file is expected, for tests that dropk never blocks on one:
// opening a FIFO waits for its other end, and a test of "does not block"
// must fail by time, not hang the test binary.
#ifndef DROPK_TESTS_SUPPORT_FIFO_H_
#define DROPK_TESTS_SUPPORT_FIFO_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace dropk::test_util {

// Makes a FIFO at `path`. If the test is still running `unblock_after` later
// (an open of the FIFO blocked), a helper thread opens both of its ends once,
// which releases any open waiting on it. Not copyable; joins on destruction.
class FifoWithUnblocker {
 public:
  FifoWithUnblocker(std::string path, std::chrono::seconds unblock_after)
      : path_(std::move(path)) {
    if (::mkfifo(path_.c_str(), 0644) != 0) ADD_FAILURE() << "mkfifo " << path_ << " failed";
    thread_ = std::thread([this, unblock_after] {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, unblock_after, [this] { return done_; })) return;
      // O_RDWR never blocks on a FIFO and counts as a reader and a writer.
      const int fd = ::open(path_.c_str(), O_RDWR | O_NONBLOCK);
      if (fd >= 0) ::close(fd);
    });
  }
  ~FifoWithUnblocker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  FifoWithUnblocker(const FifoWithUnblocker&) = delete;
  FifoWithUnblocker& operator=(const FifoWithUnblocker&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_FIFO_H_
