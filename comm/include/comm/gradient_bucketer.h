// Gradient synchronisation in buckets, overlapped with backward, in the
// shape of c10d's Reducer and llm.c's zero.cuh.
//
// The gradients are one contiguous buffer whose tensors backward finishes
// from the end of the buffer towards its start. Buckets are contiguous runs
// of whole tensors, cut from the end, each at most `cap_bytes` (a tensor
// larger than the cap is cut into cap-sized pieces). As backward reports that a
// range of gradients is final, every bucket lying wholly inside the final
// part starts its allreduce (average over ranks) at once, on the
// communicator's own thread, while backward goes on with earlier layers.
// Wait() then waits once, before the optimizer. With overlap off, all
// buckets start in Wait(), in the same order.
#ifndef DROPK_COMM_GRADIENT_BUCKETER_H_
#define DROPK_COMM_GRADIENT_BUCKETER_H_

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "base/device_event.h"
#include "comm/communicator.h"

namespace dropk {

// 4 MiB, measured: Open MPI's allreduce between ranks of one machine reaches
// its highest bus bandwidth (about 5 GB/s) from 1 to 4 MiB and falls above
// 16 MiB (0.3-3 GB/s; bench/allreduce_bench), and smaller buckets start
// earlier in backward. (c10d's 25 MiB default is tuned for NCCL.)
constexpr size_t kDefaultBucketCapBytes = size_t{4} << 20;

// A bucket: elements [begin, end) of the gradient buffer.
struct Bucket {
  size_t begin = 0;
  size_t end = 0;
  bool operator==(const Bucket&) const = default;
};

// Cuts [0, total) into buckets given tensor boundaries (sorted offsets of
// every tensor's first element, starting with 0). Buckets are returned in
// launch order: the last elements of the buffer first.
std::vector<Bucket> PlanBuckets(const std::vector<size_t>& tensor_offsets, size_t total,
                                size_t cap_bytes, size_t element_bytes);

// Timing of one synchronised step, in seconds.
struct SyncTiming {
  double exposed_s = 0;  // from the end of backward until every bucket completed
  double comm_s = 0;     // time the collectives ran (on the communication thread)
  int buckets = 0;
};

class GradientBucketer {
 public:
  // grads (float32, count elements, `memory` kind) must outlive the
  // bucketer; comm must outlive it.
  GradientBucketer(Communicator* comm, float* grads, size_t count, MemoryKind memory,
                   std::vector<Bucket> buckets, bool overlap, CollectiveOptions options = {});

  // Called (through Gpt::Backward's GradsReadyFn) when the work that makes
  // gradients [begin, end) final has been enqueued; `ready` (may be null when
  // the gradients are already readable, e.g. in tests) was recorded after it.
  // Starts every bucket that is now complete, in plan order, ordered after
  // `ready` so an allreduce never reads gradients that are only queued: for
  // host gradients by waiting on it here (DeviceEvent::HostWait; a no-op on
  // the CPU); for CUDA gradients on the device, by passing its native handle
  // as CollectiveOptions::ready_event, so backward is not held up. Keeps the
  // last event for Wait(); it must stay valid until then.
  void OnGradsReady(size_t begin, size_t end, DeviceEvent* ready = nullptr);

  // Starts any bucket not yet started, waits for all, and resets for the next
  // step. Returns the first error (naming operation and rank).
  absl::Status Wait();

  // Options (the timeout) of the buckets launched from now on.
  void set_options(const CollectiveOptions& options) { options_ = options; }

  const std::vector<Bucket>& buckets() const { return buckets_; }
  const SyncTiming& last_timing() const { return timing_; }

 private:
  void Launch(size_t index, void* ready_event);
  // ready's cudaEvent_t when the gradients are CUDA memory, else nullptr.
  void* DeviceEventOf(DeviceEvent* ready) const;

  Communicator* comm_;
  float* grads_;
  size_t count_;
  MemoryKind memory_;
  std::vector<Bucket> buckets_;
  bool overlap_;
  CollectiveOptions options_;
  size_t next_ = 0;    // next bucket to launch
  size_t ready_from_;  // gradients [ready_from_, count_) are final
  std::chrono::steady_clock::time_point backward_done_;  // when ready_from_ reached 0
  DeviceEvent* last_ready_ = nullptr;                    // the newest readiness event of this step
  std::vector<std::unique_ptr<Work>> pending_;
  SyncTiming timing_;
};

}  // namespace dropk

#endif  // DROPK_COMM_GRADIENT_BUCKETER_H_
