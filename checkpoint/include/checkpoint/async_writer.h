// Asynchronous checkpoints: the training thread pauses only to copy the
// state into a host staging buffer; writing, fsync, CRC32C and the commit
// run on a background thread, through the same phases and with the same
// guarantees as CheckpointWriter::Save (writer.h; DESIGN invariant 4: a
// checkpoint on disk is complete and verified or invisible).
//
// The communicator is only ever used by the calling (training) thread, as
// Communicator requires: the background thread does file I/O only. The
// collective parts of a save (agreeing on the temporary directory, learning
// that every rank's files are durable, learning whether rank 0 committed)
// happen in Start(), Poll() and Finish(), which every rank calls at the same
// points of its training loop.
#ifndef DROPK_CHECKPOINT_ASYNC_WRITER_H_
#define DROPK_CHECKPOINT_ASYNC_WRITER_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "checkpoint/writer.h"
#include "comm/communicator.h"

namespace dropk {

// One committed asynchronous save, as its log line reports it.
struct AsyncSaveReport {
  int64_t step = 0;
  std::string dir;              // the committed checkpoint directory
  double pause_s = 0;           // training thread: waiting for the previous
                                // save, staging, and the snapshot copy
  double waited_s = 0;          // the part of pause_s spent waiting for the previous save
  double background_s = 0;      // this rank's files written, CRC'd and fsynced,
                                // plus (rank 0) the commit, on the background thread
  uint64_t snapshot_bytes = 0;  // this rank's staging buffer in use
};

// Saves checkpoints in the background, one at a time. Collective like
// CheckpointWriter::Save: every rank calls Start/Poll/Finish at the same
// points with the same state. Not thread-safe: one (training) thread calls
// it.
//
// Host memory: a staging buffer the size of this rank's share of a
// checkpoint (rank 0: parameters and its optimizer slice; other ranks:
// their optimizer slice), allocated by Reserve() or the first Start() and
// kept, so a run holds its checkpoint twice (trainer/memory_budget.h counts
// it).
class AsyncCheckpointWriter {
 public:
  AsyncCheckpointWriter(CheckpointWriterOptions options, Communicator* comm);
  // Joins the background thread (blocking until its I/O ends). Uses no
  // collective: a save not committed by then stays invisible; its temporary
  // directory is removed by a later save's retention.
  ~AsyncCheckpointWriter();
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  // Allocates and touches the staging buffer for a model of num_params now,
  // so the first save's pause does not include page faults. Local.
  void Reserve(size_t num_params);

  // Collective. Finishes the previous save first (Finish()); when that one
  // failed, returns its error and starts nothing. Otherwise stages the save,
  // copies the state into the staging buffer and starts the background
  // write. Returns once the copy is done: the caller may change the live
  // state (params, moments) as soon as it returns.
  absl::Status Start(const CheckpointState& state);

  // Collective, never waits for I/O; call after every training step while
  // pending(). Once every rank's files are durable, rank 0 commits (manifest,
  // rename, LATEST, retention) on the background thread. Errors are only
  // those of the communicator; a failed save is reported by Finish().
  absl::Status Poll();

  // Collective, blocking: waits for the pending save to be committed or to
  // fail. Returns OK (also when nothing is pending), or an error naming the
  // step, the checkpoint directory and the cause; LATEST then still names
  // the previous checkpoint. While a rank still writes or rank 0 commits,
  // the ranks meet in short rounds (one every kFinishRound at most) instead
  // of one collective that waits on a disk: a lost peer is named after the
  // peer timeout however long the writes take.
  absl::Status Finish();

  // See CheckpointWriter::set_peer_timeout: the timeout of every collective
  // here (Poll's, Finish's rounds, staging the next save). Local.
  void set_peer_timeout(std::chrono::milliseconds timeout) { writer_.set_peer_timeout(timeout); }

  // The longest a rank waits for its own background thread between two of
  // Finish's rounds.
  static constexpr std::chrono::milliseconds kFinishRound{50};

  // After Finish (or Start) failed: whether that was the save's own failure
  // (a file that could not be written, a commit that failed), which every
  // rank learnt alike, so collectives work and another save can be tried;
  // false when a collective itself failed. Same on every rank that knows.
  bool failed_alike_on_every_rank() const { return failed_alike_; }

  // See CheckpointWriter::KeepNewestAtOrBefore. Local, any time.
  void KeepNewestAtOrBefore(int64_t steps_done) { writer_.KeepNewestAtOrBefore(steps_done); }

  // See CheckpointWriter::NoteResumedFrom. Local; call before the first Start.
  void NoteResumedFrom(const std::string& dir) { writer_.NoteResumedFrom(dir); }

  // Whether a save was started and not yet finished. Same on every rank.
  bool pending() const { return phase_ != Phase::kIdle; }

  // The report of the last committed save, once: on rank 0 as soon as Poll()
  // sees the commit done, on every rank after Finish(). nullopt otherwise.
  std::optional<AsyncSaveReport> TakeCommitted();

 private:
  // Idle -> kWriting (Start) -> kCommitting (Poll/Finish, once every rank
  // wrote) -> kIdle (Finish).
  enum class Phase { kIdle, kWriting, kCommitting };

  // The collective exchange of Poll: every rank's write outcome and CRCs.
  // Moves to kCommitting (and starts rank 0's commit) once all are written.
  absl::Status Exchange();
  // kCommitting, collective: rounds of rank 0 telling whether its commit
  // thread is done, until it is.
  absl::Status AwaitCommit();
  // Waits up to `limit` for the background thread to set worker_done_;
  // returns whether it did. Local.
  bool WaitForWorker(std::chrono::milliseconds limit) const;
  void JoinWorker();

  CheckpointWriter writer_;
  Communicator* comm_;
  Phase phase_ = Phase::kIdle;
  std::optional<CheckpointWriter::SaveInProgress> save_;
  std::vector<float> staging_;  // rank 0: params, then m and v slices
  std::thread worker_;
  std::atomic<bool> worker_done_{false};
  // Written by the worker before worker_done_ is set, read after.
  absl::Status write_status_;    // this rank's files
  absl::Status publish_status_;  // rank 0: the commit
  double background_s_ = 0;
  int64_t failed_ranks_ = 0;
  bool failed_alike_ = false;                 // see failed_alike_on_every_rank()
  AsyncSaveReport report_;                    // of the save in flight
  bool reported_ = false;                     // report_ already moved to committed_
  std::optional<AsyncSaveReport> committed_;  // committed, not yet taken
};

}  // namespace dropk

#endif  // DROPK_CHECKPOINT_ASYNC_WRITER_H_
