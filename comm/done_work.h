// A Work that is complete when made: a collective that finished at once
// (single-process) or failed before it started. Private to comm/.
#ifndef DROPK_COMM_DONE_WORK_H_
#define DROPK_COMM_DONE_WORK_H_

#include <utility>

#include "absl/status/status.h"
#include "comm/communicator.h"

namespace dropk {

class DoneWork final : public Work {
 public:
  explicit DoneWork(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait() override { return status_; }
  bool IsCompleted() override { return true; }

 private:
  absl::Status status_;
};

}  // namespace dropk

#endif  // DROPK_COMM_DONE_WORK_H_
