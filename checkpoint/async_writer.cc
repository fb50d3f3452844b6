#include "checkpoint/async_writer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "checkpoint/format.h"
#include "comm/peer_lost.h"
#include "errors.h"

namespace dropk {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Floats of this rank's share of a checkpoint: rank 0 also holds the
// parameters.
size_t StagingFloats(size_t num_params, int rank, int world) {
  const auto [begin, end] = OptimizerSlice(num_params, rank, world);
  return (rank == 0 ? num_params : 0) + 2 * (end - begin);
}

// Copies `bytes` of device memory of `kernels` to host memory. Host memory
// (CPU kernels) is copied by several threads: one core's memcpy does not
// reach the memory bandwidth, and this copy is the whole training pause.
void CopyOut(Kernels* kernels, void* dst, const void* src, size_t bytes) {
  constexpr size_t kMinBytesPerThread = 64u << 20;
  const size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t threads = std::min<size_t>(hw, std::max<size_t>(1, bytes / kMinBytesPerThread));
  if (!checkpoint_internal::HostAddressable(kernels) || threads == 1) {
    kernels->CopyToHost(dst, src, bytes);
    return;
  }
  // Whole 4 KiB pages per thread, the remainder to the last one.
  const size_t per = bytes / threads / 4096 * 4096;
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < threads; ++t) {
    const size_t begin = t * per, n = t + 1 == threads ? bytes - begin : per;
    helpers.emplace_back([=] {
      std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin, n);
    });
  }
  std::memcpy(dst, src, per);
  for (std::thread& h : helpers) h.join();
}

}  // namespace

AsyncCheckpointWriter::AsyncCheckpointWriter(CheckpointWriterOptions options, Communicator* comm)
    : writer_(std::move(options), comm), comm_(comm) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() { JoinWorker(); }

void AsyncCheckpointWriter::Reserve(size_t num_params) {
  const size_t floats = StagingFloats(num_params, comm_->Rank(), comm_->Size());
  // Zero-filled: every page is touched now, not during a save's pause.
  if (staging_.size() != floats) staging_.assign(floats, 0.0f);
}

void AsyncCheckpointWriter::JoinWorker() {
  if (worker_.joinable()) worker_.join();
}

bool AsyncCheckpointWriter::WaitForWorker(std::chrono::milliseconds limit) const {
  const Clock::time_point until = Clock::now() + limit;
  while (!worker_done_.load(std::memory_order_acquire)) {
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

absl::Status AsyncCheckpointWriter::Start(const CheckpointState& state) {
  const Clock::time_point start = Clock::now();
  if (absl::Status s = Finish(); !s.ok()) return s;
  const double waited_s = SecondsSince(start);
  Reserve(state.num_params);
  absl::StatusOr<CheckpointWriter::SaveInProgress> save = writer_.Stage(state);
  if (!save.ok()) return save.status();
  save_ = *std::move(save);

  // The snapshot: from here on the live state may change.
  const int rank = comm_->Rank();
  const auto [begin, end] = OptimizerSlice(state.num_params, rank, comm_->Size());
  const size_t slice = end - begin;
  float* params = staging_.data();
  float* m = params + (rank == 0 ? state.num_params : 0);
  float* v = m + slice;
  if (rank == 0) CopyOut(state.kernels, params, state.params, state.num_params * sizeof(float));
  CopyOut(state.kernels, m, state.adam_m + begin, slice * sizeof(float));
  CopyOut(state.kernels, v, state.adam_v + begin, slice * sizeof(float));

  report_ = AsyncSaveReport{.step = state.step,
                            .dir = save_->final_dir,
                            .pause_s = SecondsSince(start),
                            .waited_s = waited_s,
                            .snapshot_bytes = staging_.size() * sizeof(float)};
  reported_ = false;
  failed_ranks_ = 0;
  background_s_ = 0;
  publish_status_ = absl::OkStatus();
  worker_done_.store(false);
  phase_ = Phase::kWriting;
  worker_ = std::thread([this, params, m, v] {
    const Clock::time_point began = Clock::now();
    const CheckpointWriter::WriteSources sources{nullptr, params, m, v};
    write_status_ = writer_.Write(sources, *save_);
    if (!write_status_.ok()) {
      writer_.log_->Write(
          absl::StrCat("dropk checkpoint: rank ", comm_->Rank(), ": ", write_status_.message()));
    }
    background_s_ = SecondsSince(began);
    worker_done_.store(true, std::memory_order_release);
  });
  return absl::OkStatus();
}

absl::Status AsyncCheckpointWriter::Poll() {
  if (phase_ != Phase::kWriting) return absl::OkStatus();
  return Exchange();
}

absl::Status AsyncCheckpointWriter::Exchange() {
  const int rank = comm_->Rank(), world = comm_->Size();
  // 0: still writing; 1: written and fsynced; 2: failed. The CRCs are
  // valid once written, and travel to rank 0 for the manifest.
  int64_t mine[3] = {0, 0, 0};
  if (worker_done_.load(std::memory_order_acquire)) {
    mine[0] = write_status_.ok() ? 1 : 2;
    mine[1] = save_->slices[2 * rank].crc32c();
    mine[2] = save_->slices[2 * rank + 1].crc32c();
  }
  std::vector<int64_t> all(3 * world);
  absl::Status gathered = comm_
                              ->AllGather(HostBuffer(mine, 3), HostBuffer(all.data(), all.size()),
                                          writer_.PeerTimeout())
                              ->Wait();
  if (!gathered.ok()) {
    return WithContext(gathered, absl::StrCat("checkpoint of step ", save_->step, ": allgather"));
  }
  std::vector<uint32_t> crcs;
  int64_t failed = 0;
  for (int r = 0; r < world; ++r) {
    if (all[3 * r] == 0) return absl::OkStatus();  // some rank still writes
    failed += all[3 * r] == 2;
    crcs.push_back(static_cast<uint32_t>(all[3 * r + 1]));
    crcs.push_back(static_cast<uint32_t>(all[3 * r + 2]));
  }
  JoinWorker();  // done already: this only reaps the thread
  failed_ranks_ = failed;
  phase_ = Phase::kCommitting;
  if (rank != 0) return absl::OkStatus();
  worker_done_.store(false);
  worker_ = std::thread([this, crcs = std::move(crcs)] {
    const Clock::time_point began = Clock::now();
    publish_status_ = writer_.CompleteOrDiscard(*save_, failed_ranks_, crcs);
    if (failed_ranks_ == 0 && publish_status_.ok()) writer_.RetainAfterCommit(save_->step);
    background_s_ += SecondsSince(began);
    worker_done_.store(true, std::memory_order_release);
  });
  return absl::OkStatus();
}

absl::Status AsyncCheckpointWriter::Finish() {
  failed_alike_ = false;
  if (phase_ == Phase::kIdle) return absl::OkStatus();
  // Rounds, none of which waits on a disk: each rank waits for its own
  // files a while, then all exchange (Exchange moves to kCommitting once
  // every rank's are durable), then they wait for rank 0's commit alike.
  absl::Status met;
  while (met.ok() && phase_ == Phase::kWriting) {
    WaitForWorker(kFinishRound);
    met = Exchange();
  }
  if (met.ok()) met = AwaitCommit();
  JoinWorker();  // done already, unless a collective failed: local I/O only
  phase_ = Phase::kIdle;
  if (!met.ok()) return met;
  bool agreed = false;
  absl::StatusOr<std::string> outcome = writer_.AgreeOnOutcome(
      write_status_, failed_ranks_, publish_status_, *save_, writer_.PeerTimeout(), &agreed);
  if (!outcome.ok()) {
    failed_alike_ = agreed;
    return WithContext(outcome.status(),
                       absl::StrCat("background save of step ", save_->step, " failed"));
  }
  if (!reported_) {  // not yet reported early by rank 0
    report_.background_s = background_s_;
    committed_ = report_;
    reported_ = true;
  }
  return absl::OkStatus();
}

absl::Status AsyncCheckpointWriter::AwaitCommit() {
  for (;;) {
    int64_t done = comm_->Rank() != 0 || WaitForWorker(kFinishRound) ? 1 : 0;
    absl::Status s = comm_->Broadcast(HostBuffer(&done, 1), 0, writer_.PeerTimeout())->Wait();
    if (!s.ok()) {
      return WithContext(s, absl::StrCat("checkpoint of step ", save_->step,
                                         ": waiting for rank 0's commit: broadcast"));
    }
    if (done != 0) return absl::OkStatus();
  }
}

std::optional<AsyncSaveReport> AsyncCheckpointWriter::TakeCommitted() {
  // Rank 0 knows of its commit before the others: report it at once.
  if (phase_ == Phase::kCommitting && comm_->Rank() == 0 && !reported_ &&
      worker_done_.load(std::memory_order_acquire) && failed_ranks_ == 0 && publish_status_.ok()) {
    report_.background_s = background_s_;
    committed_ = report_;
    reported_ = true;
  }
  std::optional<AsyncSaveReport> taken = std::move(committed_);
  committed_.reset();
  return taken;
}

}  // namespace dropk
