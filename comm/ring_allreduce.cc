#include "ring_allreduce.h"

#include <algorithm>
#include <cstdint>

#include "base/check.h"  // after mpi.h: MPI_CHECK

namespace dropk {
namespace {

constexpr int kTag = 0x5249;  // any tag: the communicator carries nothing else

// dst[i] = dst[i] op src[i]. Plain loops that the compiler vectorises; the
// reduction is memory bound.
template <typename T>
void Combine(T* __restrict dst, const T* __restrict src, size_t n, ReduceOp op) {
  if (op == ReduceOp::kMax) {
    for (size_t i = 0; i < n; ++i) dst[i] = dst[i] < src[i] ? src[i] : dst[i];
  } else {
    // Unsigned 8-bit sums wrap around, as MPI_SUM on MPI_UINT8_T does.
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(dst[i] + src[i]);
  }
}

void Combine(void* dst, const void* src, size_t n, DataType type, ReduceOp op) {
  switch (type) {
    case DataType::kFloat32:
      return Combine(static_cast<float*>(dst), static_cast<const float*>(src), n, op);
    case DataType::kFloat64:
      return Combine(static_cast<double*>(dst), static_cast<const double*>(src), n, op);
    case DataType::kInt32:
      return Combine(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), n, op);
    case DataType::kInt64:
      return Combine(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), n, op);
    case DataType::kUint8:
      return Combine(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n, op);
  }
}

template <typename T>
void Divide(T* p, size_t n, int divisor) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] / divisor);
}

}  // namespace

MPI_Datatype MpiType(DataType type) {
  switch (type) {
    case DataType::kFloat32: return MPI_FLOAT;
    case DataType::kFloat64: return MPI_DOUBLE;
    case DataType::kInt32: return MPI_INT32_T;
    case DataType::kInt64: return MPI_INT64_T;
    case DataType::kUint8: return MPI_UINT8_T;
  }
  return MPI_DATATYPE_NULL;
}

void DivideInPlace(const Buffer& b, size_t begin, size_t count, int divisor) {
  switch (b.type) {
    case DataType::kFloat32: {
      // A multiplication by the reciprocal, as before: the same on every rank.
      float* p = static_cast<float*>(b.data) + begin;
      const float inv = 1.0f / divisor;
      for (size_t i = 0; i < count; ++i) p[i] *= inv;
      return;
    }
    case DataType::kFloat64: return Divide(static_cast<double*>(b.data) + begin, count, divisor);
    case DataType::kInt32: return Divide(static_cast<int32_t*>(b.data) + begin, count, divisor);
    case DataType::kInt64: return Divide(static_cast<int64_t*>(b.data) + begin, count, divisor);
    case DataType::kUint8: return Divide(static_cast<uint8_t*>(b.data) + begin, count, divisor);
  }
}

RingAllReducer::RingAllReducer(MPI_Comm comm, int rank, int size)
    : comm_(comm), rank_(rank), size_(size) {}

// Blocks in (almost) equal parts; the first count % size ranks own one more.
size_t RingAllReducer::BlockBegin(int block) const {
  const size_t base = buffer_.count / size_, extra = buffer_.count % size_;
  const size_t b = static_cast<size_t>(block);
  return b * base + std::min(b, extra);
}

size_t RingAllReducer::BlockCount(int block) const {
  return buffer_.count / size_ + (static_cast<size_t>(block) < buffer_.count % size_ ? 1 : 0);
}

// Reduce-scatter step s: rank r passes on block r - s - 1, which it finished
// reducing in step s - 1, and adds its own values to block r - s - 2 as that
// arrives; after size - 1 steps rank r holds block r reduced over every
// rank, and it was reduced nowhere else. All-gather step s: rank r passes on
// block r - s and receives block r - s - 1, finished, into place.
int RingAllReducer::SendBlock() const {
  const int s = Reducing() ? step_ + 1 : step_ - (size_ - 1);
  return ((rank_ - s) % size_ + size_) % size_;
}

int RingAllReducer::ReceiveBlock() const { return (SendBlock() + size_ - 1) % size_; }

uint64_t RingAllReducer::Start(const Buffer& b, ReduceOp op) {
  buffer_ = b;
  op_ = op;
  step_ = 0;
  posted_ = false;
  stall_step_.store(0, std::memory_order_relaxed);
  stall_peer_.store((rank_ + size_ - 1) % size_, std::memory_order_relaxed);
  id_.store(++last_id_, std::memory_order_release);
  if (size_ == 1 || b.count == 0) {
    step_ = 2 * (size_ - 1);  // nothing to do (an average over one rank is the value)
    id_.store(0, std::memory_order_release);
    return last_id_;
  }
  const size_t largest_block = BlockCount(0) * DataTypeSize(b.type);
  // Touched once here (resize zero-fills), then reused: no page faults later.
  if (scratch_.size() < largest_block) scratch_.resize(largest_block);
  return last_id_;
}

std::optional<RingAllReducer::Stall> RingAllReducer::StallOf(uint64_t id) const {
  if (id == 0 || id_.load(std::memory_order_acquire) != id) return std::nullopt;
  const int peer = stall_peer_.load(std::memory_order_relaxed);
  return Stall{stall_step_.load(std::memory_order_relaxed) + 1, 2 * (size_ - 1),
               peer >= 0 ? peer : -1 - peer, peer >= 0};
}

absl::Status RingAllReducer::PostStep() {
  const size_t elem = DataTypeSize(buffer_.type);
  const size_t segment = kSegmentBytes / elem;
  const MPI_Datatype type = MpiType(buffer_.type);
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  char* const data = static_cast<char*>(buffer_.data);
  const size_t send_count = BlockCount(SendBlock()), recv_count = BlockCount(ReceiveBlock());
  char* const send_at = data + BlockBegin(SendBlock()) * elem;
  char* const recv_at = Reducing() ? scratch_.data() : data + BlockBegin(ReceiveBlock()) * elem;
  receives_.resize((recv_count + segment - 1) / segment);
  sends_.resize((send_count + segment - 1) / segment);
  // Messages between two ranks on one communicator and tag arrive in the
  // order sent, so segment k meets receive k.
  for (size_t k = 0; k < receives_.size(); ++k) {
    const size_t n = std::min(segment, recv_count - k * segment);
    MPI_CHECK(MPI_Irecv(recv_at + k * segment * elem, static_cast<int>(n), type, prev, kTag, comm_,
                        &receives_[k]));
  }
  for (size_t k = 0; k < sends_.size(); ++k) {
    const size_t n = std::min(segment, send_count - k * segment);
    MPI_CHECK(MPI_Isend(send_at + k * segment * elem, static_cast<int>(n), type, next, kTag, comm_,
                        &sends_[k]));
  }
  next_receive_ = 0;
  posted_ = true;
  return absl::OkStatus();
}

absl::StatusOr<bool> RingAllReducer::Poll(std::chrono::steady_clock::time_point deadline) {
  const int steps = 2 * (size_ - 1);
  const size_t elem = DataTypeSize(buffer_.type);
  const size_t segment = kSegmentBytes / elem;
  char* const data = static_cast<char*>(buffer_.data);
  while (step_ < steps) {
    if (!posted_) {
      if (absl::Status s = PostStep(); !s.ok()) return s;
    }
    // Segments are taken in order, each reduced as soon as it is in, while
    // the later ones are still on their way.
    while (next_receive_ < receives_.size()) {
      int arrived = 0;
      MPI_CHECK(MPI_Test(&receives_[next_receive_], &arrived, MPI_STATUS_IGNORE));
      if (!arrived) break;
      if (Reducing()) {
        // The block being reduced is never the one being sent in this step,
        // so it may change while the sends are in flight.
        const size_t first = next_receive_ * segment;
        const size_t n = std::min(segment, BlockCount(ReceiveBlock()) - first);
        Combine(data + (BlockBegin(ReceiveBlock()) + first) * elem, scratch_.data() + first * elem,
                n, buffer_.type, op_);
      }
      ++next_receive_;
    }
    if (next_receive_ == receives_.size()) {
      int sent = 0;
      MPI_CHECK(
          MPI_Testall(static_cast<int>(sends_.size()), sends_.data(), &sent, MPI_STATUSES_IGNORE));
      if (sent) {
        if (step_ == size_ - 2 && op_ == ReduceOp::kAverage) {
          DivideInPlace(buffer_, BlockBegin(rank_), BlockCount(rank_), size_);
        }
        ++step_;
        posted_ = false;
        continue;
      }
    }
    // Noted for StallOf: what this step still waits for.
    stall_step_.store(step_, std::memory_order_relaxed);
    stall_peer_.store(
        next_receive_ < receives_.size() ? (rank_ + size_ - 1) % size_ : -1 - (rank_ + 1) % size_,
        std::memory_order_relaxed);
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
  id_.store(0, std::memory_order_release);
  return true;
}

}  // namespace dropk
