#include "stream_entries.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "checkpoint/crc32c.h"
#include "errors.h"

namespace dropk::checkpoint_internal {
namespace {

// One of the two buffers handed between the reader thread and the checker.
struct Slot {
  std::vector<char> data;
  char* ptr = nullptr;  // data.data(), or the destination itself
  size_t n = 0;
  int entry = -1;
  uint64_t done = 0;  // bytes of the entry before this chunk
  absl::Status status;
  bool full = false;
  bool last = false;  // no chunk follows
};

// The entries to stream, in file then offset order (one sequential pass per
// file).
std::vector<int> ReadOrder(const ValidatedManifest& vm, bool weights_only) {
  const auto& entries = vm.manifest.tensors();
  std::vector<int> order;
  for (int i = 0; i < entries.size(); ++i) {
    if (!weights_only || vm.target[i] == kTargetParams) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    if (entries[a].file() != entries[b].file()) return entries[a].file() < entries[b].file();
    return entries[a].offset() < entries[b].offset();
  });
  return order;
}

// The two slots and their hand-over. The producer (reader thread) fills
// slots alternately; the consumer empties them in the same order.
class SlotPipe {
 public:
  explicit SlotPipe(size_t buffer_bytes) {
    for (Slot& slot : slots_) slot.data = MakeBuffer(buffer_bytes);
  }

  // Producer: the next empty slot, or null once cancelled.
  Slot* Acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return cancel_ || !slots_[produce_].full; });
    if (cancel_) return nullptr;
    Slot* slot = &slots_[produce_];
    produce_ ^= 1;
    return slot;
  }
  void Publish(Slot& slot) {
    std::lock_guard<std::mutex> lock(mu_);
    slot.full = true;
    cv_.notify_all();
  }
  // Consumer: waits for the next full slot.
  Slot& Next() {
    Slot& slot = slots_[consume_];
    consume_ ^= 1;
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return slot.full; });
    return slot;
  }
  void Release(Slot& slot) {
    std::lock_guard<std::mutex> lock(mu_);
    slot.full = false;
    cv_.notify_all();
  }
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_ = true;
    cv_.notify_all();
  }

 private:
  Slot slots_[2];
  int produce_ = 0, consume_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool cancel_ = false;
};

// The reader thread's loop: every chunk of every entry in `order`, then a
// last (empty) slot. Stops at the first read error (published in its slot)
// or when cancelled.
void ProduceChunks(const std::string& dir, const ValidatedManifest& vm, Env* env,
                   const std::vector<int>& order, const DirectFn& direct, SlotPipe& pipe) {
  const auto& entries = vm.manifest.tensors();
  for (int i : order) {
    const TensorEntry& e = entries[i];
    const std::string path = PathJoin(dir, e.file());
    for (uint64_t done = 0; done < e.length() || (done == 0 && e.length() == 0);) {
      Slot* slot = pipe.Acquire();
      if (slot == nullptr) return;
      slot->n = static_cast<size_t>(std::min<uint64_t>(slot->data.size(), e.length() - done));
      slot->entry = i;
      slot->done = done;
      slot->last = false;
      slot->ptr =
          direct ? direct(vm.target[i], vm.element_offset[i] + done / kFloatBytes) : nullptr;
      if (slot->ptr == nullptr) slot->ptr = slot->data.data();
      slot->status = slot->n == 0 ? absl::OkStatus()
                                  : env->ReadFileRange(path, e.offset() + done, slot->n, slot->ptr);
      const bool failed = !slot->status.ok();
      pipe.Publish(*slot);
      if (failed) return;
      done += slot->n;
      if (e.length() == 0) break;
    }
  }
  if (Slot* slot = pipe.Acquire()) {
    slot->n = 0;
    slot->entry = -1;
    slot->last = true;
    slot->status = absl::OkStatus();
    pipe.Publish(*slot);
  }
}

// The checking side: extends each entry's CRC over its chunks, hands staged
// chunks to the sink, and compares the CRC at each entry's end.
absl::Status ConsumeChunks(const std::string& dir, const ValidatedManifest& vm,
                           const ChunkSink& sink, SlotPipe& pipe) {
  const auto& entries = vm.manifest.tensors();
  uint32_t crc = 0;
  for (;;) {
    Slot& slot = pipe.Next();
    if (slot.last) return absl::OkStatus();
    const TensorEntry& e = entries[slot.entry];
    if (!slot.status.ok()) {
      return CheckpointReadError(dir, e.file(), e.name(), slot.status);
    }
    if (slot.done == 0) crc = 0;
    crc = crc32c::Extend(crc, slot.ptr, slot.n);
    if (sink && slot.n > 0 && slot.ptr == slot.data.data()) {
      sink(vm.target[slot.entry], vm.element_offset[slot.entry] + slot.done / kFloatBytes,
           slot.data.data(), slot.n);
    }
    if (slot.done + slot.n == e.length() && crc != e.crc32c()) {
      return CheckpointError(dir, e.file(), e.name(),
                             absl::StrFormat("CRC32C mismatch: manifest says 0x%08x, the %d bytes "
                                             "at offset %d give 0x%08x",
                                             e.crc32c(), e.length(), e.offset(), crc));
    }
    pipe.Release(slot);
  }
}

}  // namespace

absl::Status StreamEntries(const std::string& dir, const ValidatedManifest& vm, Env* env,
                           size_t buffer_bytes, bool weights_only, const ChunkSink& sink,
                           const DirectFn& direct) {
  const std::vector<int> order = ReadOrder(vm, weights_only);
  SlotPipe pipe(buffer_bytes);
  std::thread reader([&] { ProduceChunks(dir, vm, env, order, direct, pipe); });
  absl::Status result = ConsumeChunks(dir, vm, sink, pipe);
  pipe.Cancel();
  reader.join();
  return result;
}

}  // namespace dropk::checkpoint_internal
