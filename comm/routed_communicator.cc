#include "comm/routed_communicator.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "done_work.h"

namespace dropk {
namespace {

class RoutedCommunicator final : public Communicator {
 public:
  RoutedCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device)
      : host_(std::move(host)), device_(std::move(device)) {
    DROPK_CHECK(host_->Rank() == device_->Rank() && host_->Size() == device_->Size());
  }
  ~RoutedCommunicator() override { device_.reset(); }  // before host_, which bootstrapped it

  int Rank() const override { return host_->Rank(); }
  int Size() const override { return host_->Size(); }
  std::string BackendName() const override {
    return absl::StrCat(device_->BackendName(), "+", host_->BackendName());
  }

  std::unique_ptr<Work> AllReduce(Buffer buffer, ReduceOp op,
                                  const CollectiveOptions& options) override {
    return For(buffer).AllReduce(buffer, op, options);
  }
  std::unique_ptr<Work> Broadcast(Buffer buffer, int root,
                                  const CollectiveOptions& options) override {
    return For(buffer).Broadcast(buffer, root, options);
  }
  std::unique_ptr<Work> AllGather(Buffer input, Buffer output,
                                  const CollectiveOptions& options) override {
    if (input.memory != output.memory) return Mixed("AllGather");
    return For(input).AllGather(input, output, options);
  }
  std::unique_ptr<Work> ReduceScatter(Buffer input, Buffer output, ReduceOp op,
                                      const CollectiveOptions& options) override {
    if (input.memory != output.memory) return Mixed("ReduceScatter");
    return For(input).ReduceScatter(input, output, op, options);
  }
  std::unique_ptr<Work> Barrier(const CollectiveOptions& options) override {
    return host_->Barrier(options);
  }

 private:
  Communicator& For(const Buffer& b) { return b.memory == MemoryKind::kCuda ? *device_ : *host_; }

  std::unique_ptr<Work> Mixed(const char* op) const {
    return std::make_unique<DoneWork>(absl::InvalidArgumentError(absl::StrCat(
        op, " on rank ", Rank(), ": input and output in different memories (host and CUDA)")));
  }

  std::unique_ptr<Communicator> host_;
  std::unique_ptr<Communicator> device_;
};

}  // namespace

std::unique_ptr<Communicator> MakeRoutedCommunicator(std::unique_ptr<Communicator> host,
                                                     std::unique_ptr<Communicator> device) {
  return std::make_unique<RoutedCommunicator>(std::move(host), std::move(device));
}

}  // namespace dropk
