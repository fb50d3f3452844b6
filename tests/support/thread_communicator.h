// Ranks as threads in one process: a complete Communicator for tests, in the
// manner of c10d's fake process group. Every collective of the interface
// works on host buffers of every DataType and ReduceOp; reductions run in
// rank order on every rank, so all ranks receive bitwise-equal results (as
// dropk's MPI backend promises). A collective that some rank never joins
// fails with DeadlineExceeded after its timeout instead of hanging, and
// breaks the group (every later collective fails at once).
//
// Collectives complete before they return; Work::Wait() only reports the
// outcome. Each rank's Communicator is used from one thread, as the
// interface requires.
#ifndef DROPK_TESTS_SUPPORT_THREAD_COMMUNICATOR_H_
#define DROPK_TESTS_SUPPORT_THREAD_COMMUNICATOR_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "comm/communicator.h"

namespace dropk::test_util {

// The shared state of `size` thread ranks. Must outlive their communicators.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size);

  int size() const { return size_; }
  // The communicator of rank `rank` in [0, size).
  std::unique_ptr<dropk::Communicator> CommunicatorOf(int rank);

  // Called by the communicators: rank `rank` deposits `bytes` for operation
  // `op`, waits for every rank, lets `read` copy from all deposits, and waits
  // again so deposits are not overwritten while another rank reads them.
  absl::Status Exchange(const char* op, int rank, const void* data, size_t bytes,
                        std::chrono::milliseconds timeout,
                        const std::function<absl::Status(const std::vector<std::string>&)>& read);

 private:
  absl::Status Arrive(const char* op, int rank, std::chrono::milliseconds timeout);

  const int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool broken_ = false;
  std::vector<std::string> deposits_;
};

// Runs body(comm) for every rank of a fresh group of `size` thread ranks,
// one thread each, and returns when all have finished.
void RunRanks(int size, const std::function<void(Communicator& comm)>& body);

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_THREAD_COMMUNICATOR_H_
