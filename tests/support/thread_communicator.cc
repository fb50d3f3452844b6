#include "support/thread_communicator.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace dropk::test_util {
namespace {

class DoneWork : public Work {
 public:
  explicit DoneWork(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait() override { return status_; }
  bool IsCompleted() override { return true; }

 private:
  absl::Status status_;
};

template <typename T>
void ReduceInto(T* out, const std::vector<std::string>& inputs, size_t offset, size_t count,
                ReduceOp op) {
  for (size_t i = 0; i < count; ++i) {
    T acc{};
    std::memcpy(&acc, inputs[0].data() + (offset + i) * sizeof(T), sizeof(T));
    for (size_t r = 1; r < inputs.size(); ++r) {
      T x;
      std::memcpy(&x, inputs[r].data() + (offset + i) * sizeof(T), sizeof(T));
      acc = op == ReduceOp::kMax ? std::max(acc, x) : static_cast<T>(acc + x);
    }
    if (op == ReduceOp::kAverage) acc = static_cast<T>(acc / static_cast<T>(inputs.size()));
    out[i] = acc;
  }
}

// out[0, count) = op over ranks of elements [offset, offset + count) of each input.
void Reduce(void* out, DataType type, const std::vector<std::string>& inputs, size_t offset,
            size_t count, ReduceOp op) {
  switch (type) {
    case DataType::kFloat32: return ReduceInto(static_cast<float*>(out), inputs, offset, count, op);
    case DataType::kFloat64:
      return ReduceInto(static_cast<double*>(out), inputs, offset, count, op);
    case DataType::kInt32: return ReduceInto(static_cast<int32_t*>(out), inputs, offset, count, op);
    case DataType::kInt64: return ReduceInto(static_cast<int64_t*>(out), inputs, offset, count, op);
    case DataType::kUint8: return ReduceInto(static_cast<uint8_t*>(out), inputs, offset, count, op);
  }
}

absl::Status SameSizes(const char* op, const std::vector<std::string>& deposits) {
  for (size_t r = 1; r < deposits.size(); ++r) {
    if (deposits[r].size() != deposits[0].size()) {
      return absl::InvalidArgumentError(absl::StrCat("thread communicator: ", op, ": rank ", r,
                                                     " gave ", deposits[r].size(),
                                                     " bytes, rank 0 ", deposits[0].size()));
    }
  }
  return absl::OkStatus();
}

class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup* group, int rank) : group_(group), rank_(rank) {}
  int Rank() const override { return rank_; }
  int Size() const override { return group_->size(); }
  std::string BackendName() const override { return "test-threads"; }

  std::unique_ptr<Work> AllReduce(Buffer buffer, ReduceOp op,
                                  const CollectiveOptions& options) override {
    return Run("AllReduce", {buffer}, buffer, options, [&](const std::vector<std::string>& all) {
      if (absl::Status s = SameSizes("AllReduce", all); !s.ok()) return s;
      Reduce(buffer.data, buffer.type, all, 0, buffer.count, op);
      return absl::OkStatus();
    });
  }
  std::unique_ptr<Work> Broadcast(Buffer buffer, int root,
                                  const CollectiveOptions& options) override {
    if (root < 0 || root >= Size()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("Broadcast: root ", root)));
    }
    return Run("Broadcast", {buffer}, buffer, options, [&](const std::vector<std::string>& all) {
      if (absl::Status s = SameSizes("Broadcast", all); !s.ok()) return s;
      std::memcpy(buffer.data, all[root].data(), buffer.bytes());
      return absl::OkStatus();
    });
  }
  std::unique_ptr<Work> AllGather(Buffer input, Buffer output,
                                  const CollectiveOptions& options) override {
    if (output.bytes() != input.bytes() * Size()) {
      return Fail(absl::InvalidArgumentError("AllGather: output must hold Size() inputs"));
    }
    return Run("AllGather", {input, output}, input, options,
               [&](const std::vector<std::string>& all) {
                 if (absl::Status s = SameSizes("AllGather", all); !s.ok()) return s;
                 for (int r = 0; r < Size(); ++r) {
                   std::memcpy(static_cast<char*>(output.data) + r * input.bytes(), all[r].data(),
                               input.bytes());
                 }
                 return absl::OkStatus();
               });
  }
  std::unique_ptr<Work> ReduceScatter(Buffer input, Buffer output, ReduceOp op,
                                      const CollectiveOptions& options) override {
    if (input.bytes() != output.bytes() * Size() || input.type != output.type) {
      return Fail(absl::InvalidArgumentError(
          "ReduceScatter: input must hold Size() outputs of the same type"));
    }
    return Run("ReduceScatter", {input, output}, input, options,
               [&](const std::vector<std::string>& all) {
                 if (absl::Status s = SameSizes("ReduceScatter", all); !s.ok()) return s;
                 Reduce(output.data, output.type, all, rank_ * output.count, output.count, op);
                 return absl::OkStatus();
               });
  }
  std::unique_ptr<Work> Barrier(const CollectiveOptions& options) override {
    return Run("Barrier", {}, Buffer{}, options,
               [](const std::vector<std::string>&) { return absl::OkStatus(); });
  }

 private:
  static std::unique_ptr<Work> Fail(absl::Status s) {
    return std::make_unique<DoneWork>(
        absl::Status(s.code(), absl::StrCat("thread communicator: ", s.message())));
  }

  std::unique_ptr<Work> Run(
      const char* op, std::vector<Buffer> buffers, Buffer deposit, const CollectiveOptions& options,
      const std::function<absl::Status(const std::vector<std::string>&)>& read) {
    for (const Buffer& b : buffers) {
      if (b.memory != MemoryKind::kHost) {
        return Fail(absl::UnimplementedError(absl::StrCat(op, ": only host buffers")));
      }
    }
    return std::make_unique<DoneWork>(
        group_->Exchange(op, rank_, deposit.data, deposit.bytes(), options.timeout, read));
  }

  ThreadGroup* group_;
  int rank_;
};

}  // namespace

ThreadGroup::ThreadGroup(int size) : size_(size), deposits_(size) {}

std::unique_ptr<dropk::Communicator> ThreadGroup::CommunicatorOf(int rank) {
  return std::make_unique<ThreadCommunicator>(this, rank);
}

absl::Status ThreadGroup::Arrive(const char* op, int rank, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto broken = [&] {
    return absl::AbortedError(absl::StrCat("thread communicator: rank ", rank, ": ", op,
                                           ": the group broke after an earlier timeout"));
  };
  if (broken_) return broken();
  const uint64_t generation = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return absl::OkStatus();
  }
  if (!cv_.wait_for(lock, timeout, [&] { return generation_ != generation || broken_; })) {
    broken_ = true;
    cv_.notify_all();
    return absl::DeadlineExceededError(absl::StrCat("thread communicator: rank ", rank, ": ", op,
                                                    " did not complete within ", timeout.count(),
                                                    " ms (a rank never joined)"));
  }
  if (generation_ == generation) return broken();
  return absl::OkStatus();
}

absl::Status ThreadGroup::Exchange(
    const char* op, int rank, const void* data, size_t bytes, std::chrono::milliseconds timeout,
    const std::function<absl::Status(const std::vector<std::string>&)>& read) {
  deposits_[rank].assign(static_cast<const char*>(data), bytes);
  if (absl::Status s = Arrive(op, rank, timeout); !s.ok()) return s;
  absl::Status result = read(deposits_);
  if (absl::Status s = Arrive(op, rank, timeout); !s.ok()) return s;
  return result;
}

void RunRanks(int size, const std::function<void(dropk::Communicator& comm)>& body) {
  ThreadGroup group(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&group, &body, r] {
      std::unique_ptr<dropk::Communicator> comm = group.CommunicatorOf(r);
      body(*comm);
    });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace dropk::test_util
