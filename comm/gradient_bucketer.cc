#include "comm/gradient_bucketer.h"

#include <algorithm>

namespace dropk {

std::vector<Bucket> PlanBuckets(const std::vector<size_t>& tensor_offsets, size_t total,
                                size_t cap_bytes, size_t element_bytes) {
  std::vector<Bucket> buckets;
  const size_t cap = std::max<size_t>(1, cap_bytes / element_bytes);
  size_t end = total;
  // Walk tensors from the last to the first. A tensor joins the open bucket
  // while that stays within the cap; a tensor larger than the cap is cut
  // into cap-sized pieces from its end (bus bandwidth falls for very large
  // messages, see bench/allreduce_bench).
  for (size_t i = tensor_offsets.size(); i-- > 0;) {
    const size_t begin = tensor_offsets[i];
    if (begin >= end) continue;  // empty tensor
    if (!buckets.empty() && buckets.back().end - begin <= cap) {
      buckets.back().begin = begin;  // the tensor joins the open bucket
    } else {
      for (size_t piece_end = end; piece_end > begin;) {
        const size_t piece_begin = piece_end - std::min(cap, piece_end - begin);
        buckets.push_back({piece_begin, piece_end});
        piece_end = piece_begin;
      }
    }
    end = begin;
  }
  return buckets;
}

GradientBucketer::GradientBucketer(Communicator* comm, float* grads, size_t count,
                                   MemoryKind memory, std::vector<Bucket> buckets, bool overlap,
                                   CollectiveOptions options)
    : comm_(comm),
      grads_(grads),
      count_(count),
      memory_(memory),
      buckets_(std::move(buckets)),
      overlap_(overlap),
      options_(options),
      ready_from_(count) {
  pending_.reserve(buckets_.size());
}

void GradientBucketer::Launch(size_t index, void* ready_event) {
  const Bucket& b = buckets_[index];
  CollectiveOptions options = options_;
  options.ready_event = ready_event;
  pending_.push_back(
      comm_->AllReduce({grads_ + b.begin, b.end - b.begin, DataType::kFloat32, memory_},
                       ReduceOp::kAverage, options));
}

void* GradientBucketer::DeviceEventOf(DeviceEvent* ready) const {
  // GPU gradients: the collective orders itself after the event on the device
  // (its stream waits on it, or its staging copy does), so backward goes on
  // without the host waiting. Host gradients need the host to wait.
  if (memory_ != MemoryKind::kCuda || ready == nullptr) return nullptr;
  return ready->native_handle();
}

void GradientBucketer::OnGradsReady(size_t begin, size_t end, DeviceEvent* ready) {
  // Backward reports contiguous ranges from the end towards the start.
  if (end >= ready_from_ && begin < ready_from_) ready_from_ = begin;
  if (ready_from_ == 0) backward_done_ = std::chrono::steady_clock::now();
  if (ready != nullptr) last_ready_ = ready;
  if (!overlap_) return;
  // Each event marks everything enqueued before it, so the newest one covers
  // every bucket that becomes complete now.
  void* device_event = DeviceEventOf(ready);
  bool waited = false;
  while (next_ < buckets_.size() && buckets_[next_].begin >= ready_from_) {
    if (!waited && ready != nullptr && device_event == nullptr) ready->HostWait();
    waited = true;
    Launch(next_++, device_event);
  }
}

absl::Status GradientBucketer::Wait() {
  // Exposed time runs from the end of backward (the last gradients final),
  // not from this call: on a busy machine the caller may get the CPU back
  // only some time after backward, while communication runs.
  const auto wait_start = std::chrono::steady_clock::now();
  const auto exposed_from = ready_from_ == 0 ? backward_done_ : wait_start;
  void* device_event = DeviceEventOf(last_ready_);
  if (next_ < buckets_.size() && last_ready_ != nullptr && device_event == nullptr) {
    last_ready_->HostWait();
  }
  while (next_ < buckets_.size()) Launch(next_++, device_event);
  absl::Status first_error;
  double busy = 0.0;
  for (auto& work : pending_) {
    absl::Status s = work->Wait();
    if (!s.ok() && first_error.ok()) first_error = s;
    busy += work->RunSeconds();
  }
  const auto now = std::chrono::steady_clock::now();
  timing_.exposed_s = std::chrono::duration<double>(now - exposed_from).count();
  timing_.comm_s = busy;
  timing_.buckets = static_cast<int>(pending_.size());
  pending_.clear();
  next_ = 0;
  ready_from_ = count_;
  last_ready_ = nullptr;
  return first_error;
}

}  // namespace dropk
