// The checkpoint writer (format.h describes the layout; DESIGN invariant 4:
// a checkpoint on disk is complete and verified or invisible).
#ifndef DROPK_CHECKPOINT_WRITER_H_
#define DROPK_CHECKPOINT_WRITER_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/log.h"
#include "checkpoint.pb.h"
#include "checkpoint/env.h"
#include "comm/communicator.h"
#include "config.pb.h"
#include "model/kernels.h"
#include "tokenizer.pb.h"

namespace dropk {

// The live training state a save reads: device memory of `kernels`, each
// of num_params floats in ParamLayout order. Nothing is copied up front.
struct CheckpointState {
  const TrainConfig* config = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const DataIdentity* data = nullptr;  // the data trained on; null: not recorded
  int64_t step = 0;  // optimizer steps completed
  int64_t tokens_seen = 0;
  int64_t optimizer_step = 0;
  float last_train_loss = 0;
  Kernels* kernels = nullptr;
  const float* params = nullptr;
  const float* adam_m = nullptr;
  const float* adam_v = nullptr;
  size_t num_params = 0;
};

struct CheckpointWriterOptions {
  std::string checkpoints_dir;     // created when missing
  int keep_last = 3;               // >= 1
  int keep_every = 0;              // also keep steps that are multiples of this; 0 = none
  size_t buffer_bytes = 8u << 20;  // the one staging buffer, allocated and touched once
  Env* env = nullptr;              // null: Env::Default()
  // Where a rank's own write failure and retention problems are logged
  // (every rank logs its own; null: nowhere). Not owned.
  LogSink* log = nullptr;
  // How long a synchronous save's collectives wait for the other ranks
  // where they wait on another rank's disk (every rank's files durable,
  // rank 0's commit): a large model on a slow disk needs more than the
  // communicator's default. Also the default of set_peer_timeout().
  std::chrono::milliseconds collective_timeout{std::chrono::minutes(5)};
};

// Writes checkpoints: into step-N.tmp-XXXX, every file fsynced, the
// directory fsynced and renamed to step-N, then LATEST replaced atomically
// (LATEST.tmp, fsync, rename, fsync dir); older checkpoints beyond
// keep_last/keep_every are deleted only after that. Data streams from device
// memory through one bounded buffer. Rank 0 writes model.data and the
// manifest; rank r writes its slice of the optimizer state into
// optim-rankR-of-W.data; rank 0 commits only after every rank reports its
// file durable. Save is collective (every rank calls it, same state); not
// thread-safe.
class CheckpointWriter {
 public:
  CheckpointWriter(CheckpointWriterOptions options, Communicator* comm);

  // Returns the committed checkpoint directory. On error nothing visible
  // changes: LATEST still names the previous checkpoint. An error is never
  // NotFound or InvalidArgument (a save fails mid-run: a failure of the
  // run, not of its command line, base/exit_codes.h), and a lost peer's
  // collective keeps its mark (comm/peer_lost.h); another rank's failure
  // is Aborted.
  absl::StatusOr<std::string> Save(const CheckpointState& state);

  // Tells retention that the parameters after `steps_done` steps are known
  // good (a training loss computed from them was finite): the newest
  // checkpoint at or before that step is kept beside keep_last's, so a run
  // that diverges right after a save (each later checkpoint holding the
  // diverged parameters) still has one to resume from. Thread-safe (the
  // asynchronous writer's retention runs on its own thread).
  void KeepNewestAtOrBefore(int64_t steps_done) { known_good_step_.store(steps_done); }

  // Tells the writer that this run resumed from checkpoint `dir`. When `dir`
  // is a checkpoint of checkpoints_dir (its parent is that directory), it
  // counts as the checkpoint this writer committed last until the writer
  // commits one, so a deletion from outside before the first save is named
  // too (WarnIfLastCommittedIsGone). Local; call before the first Save.
  void NoteResumedFrom(const std::string& dir);

  // How long a collective waits for the other ranks where none of them waits
  // on a disk (agreeing on the temporary directory; the asynchronous
  // writer's exchanges): the training loop passes its step collectives'
  // timeout, so a peer lost during a save is named as soon as one lost
  // during a step. Default: options.collective_timeout. Local.
  void set_peer_timeout(std::chrono::milliseconds timeout) { peer_timeout_ = timeout; }

 private:
  // AsyncCheckpointWriter (async_writer.h) runs the same phases, Write and
  // Publish on its own thread, over a snapshot of the state.
  friend class AsyncCheckpointWriter;

  // The options of the collectives that wait on another rank's disk
  // (options_.collective_timeout), and of those that wait only for the
  // other ranks to arrive (set_peer_timeout).
  CollectiveOptions Timeout() const { return {.timeout = options_.collective_timeout}; }
  CollectiveOptions PeerTimeout() const { return {.timeout = peer_timeout_}; }

  // One save between its three phases.
  struct SaveInProgress {
    int64_t step = 0;
    std::string tmp;                    // step-N.tmp-XXXXXXXX, created by rank 0
    std::string final_dir;              // step-N
    CheckpointManifest manifest;        // header fields; rank 0: model entries
    std::vector<size_t> model_offsets;  // rank 0: per model entry, in floats into the parameters
    std::vector<TensorEntry> slices;    // optimizer slices, m and v of each rank
  };
  // Where Write reads the bytes from: the live state (device memory of
  // `kernels`) or a host snapshot (kernels null). m_slice and v_slice hold
  // this rank's OptimizerSlice only.
  struct WriteSources {
    Kernels* kernels = nullptr;
    const float* params = nullptr;  // rank 0: all num_params
    const float* m_slice = nullptr;
    const float* v_slice = nullptr;
  };

  // Stage (collective): checks the state, agrees on the temporary directory
  // (rank 0 creates it) and lays out every entry of the manifest.
  absl::StatusOr<SaveInProgress> Stage(const CheckpointState& state);
  // Write (local, touches no communicator): this rank's data files,
  // fsynced; fills their offsets and CRCs.
  absl::Status Write(const WriteSources& sources, SaveInProgress& save);
  // Commit (collective): gathers every rank's outcome and slice CRCs; rank 0
  // completes the manifest and publishes the checkpoint when all succeeded.
  // Returns the committed directory, or the error (the temporary directory
  // removed).
  absl::StatusOr<std::string> Commit(const absl::Status& local, SaveInProgress& save);

  // Commit's parts. CompleteOrDiscard (rank 0, local): with no rank failed,
  // adds every slice with its CRC (`crcs`: m and v of each rank) to the
  // manifest and publishes; otherwise, or when publishing fails, removes the
  // temporary directory. Returns the publish status (OK when failed_ranks).
  absl::Status CompleteOrDiscard(SaveInProgress& save, int64_t failed_ranks,
                                 const std::vector<uint32_t>& crcs);
  // AgreeOnOutcome (collective): rank 0 tells every rank whether it
  // committed; returns the directory, or an error naming the checkpoint and
  // the cause (this rank's own failure first). *agreed (when given): whether
  // that exchange completed, so every rank knows the outcome. `options`:
  // Timeout() when rank 0 may still be committing, PeerTimeout() when every
  // rank knows it is done.
  absl::StatusOr<std::string> AgreeOnOutcome(const absl::Status& local, int64_t failed_ranks,
                                             const absl::Status& publish_status,
                                             SaveInProgress& save, const CollectiveOptions& options,
                                             bool* agreed = nullptr);

  // Rank 0: manifest, fsync, rename into place, LATEST.
  absl::Status Publish(const std::string& tmp, const std::string& final_dir,
                       const CheckpointManifest& manifest);
  absl::Status WriteRun(const std::string& path, const std::vector<TensorEntry*>& entries,
                        const std::vector<const float*>& sources, Kernels* kernels);
  absl::Status ApplyRetention(int64_t newest_step);
  // Rank 0, after a commit: retention, whose failure is only logged.
  void RetainAfterCommit(int64_t newest_step);
  // Rank 0, before saving `step`: one stat of the checkpoint this writer
  // committed last (before its first commit: the one NoteResumedFrom
  // named); when it is gone (the directory or the checkpoint deleted from
  // outside), logs one warning line naming checkpoints_dir, it and `step`,
  // as the save goes on and recreates what is missing. The next commit
  // replaces it, so one deletion warns once.
  void WarnIfLastCommittedIsGone(int64_t step);

  CheckpointWriterOptions options_;
  std::atomic<int64_t> known_good_step_{-1};  // see KeepNewestAtOrBefore
  // Rank 0: the step of the checkpoint this writer committed last; -1 none.
  // Set on the asynchronous writer's thread, read on the caller's.
  std::atomic<int64_t> last_committed_step_{-1};
  // The name of the checkpoint of checkpoints_dir this run resumed from
  // (NoteResumedFrom); "" none. Set before the first save, then only read.
  std::string resumed_from_;
  std::chrono::milliseconds peer_timeout_;    // see set_peer_timeout
  Communicator* comm_;
  Env* env_;
  LogSink* log_;
  std::vector<char> buffer_;
};

}  // namespace dropk

#endif  // DROPK_CHECKPOINT_WRITER_H_
