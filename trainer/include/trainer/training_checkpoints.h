// The training loop's side of checkpoints, kept apart from the loop so the
// loop calls a few things: MaybeResume() before the first step,
// TrainingCheckpointer::Poll() and Due()/Save() after a step, StopRequested()
// once per step (SIGTERM/SIGINT: finish the step, save, exit 75), and
// TrainingCheckpointer::Finish() before it returns.
#ifndef DROPK_TRAINER_TRAINING_CHECKPOINTS_H_
#define DROPK_TRAINER_TRAINING_CHECKPOINTS_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/log.h"
#include "checkpoint/async_writer.h"
#include "checkpoint/env.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "comm/communicator.h"
#include "config.pb.h"
#include "model/gpt.h"
#include "tokenizer.pb.h"
#include "trainer/optimizer.h"

namespace dropk {

// Installs SIGTERM, SIGINT, SIGUSR1 and SIGHUP handlers that only set a flag
// (async-signal safe); StopRequested() reads it. A second signal a second
// or more after the first restores the default action, so a second Ctrl-C
// kills at once; one within a second of the first is the same stop (GNU
// timeout sends its one stop to the process and then to its group).
// Ignores SIGPIPE: a closed stdout fails writes instead of killing the run.
// SIGINT and SIGHUP stay ignored when they already were (nohup, a script's
// background job): the run was meant to outlive them.
void InstallStopSignalHandlers();
bool StopRequested();

// The signal StopRequested() noted first (SIGTERM, SIGINT, SIGUSR1 or
// SIGHUP); 0 when none came.
int StopSignal();

// The line rank 0 prints when a run of `world_size` ranks into `out_dir`
// stopped on signal `signo` after `steps` steps (0: before the first, nothing
// saved). A SIGTERM in a job of several ranks need not be a user's: mpirun
// sends one to every rank when another rank fails. The line then says so,
// quoting the last of `failures` (the lines the ranks appended to
// OUT_DIR/failures since the run started) or, with none, pointing there.
std::string StoppedBySignalLine(int signo, int64_t steps, int world_size,
                                const std::string& out_dir,
                                const std::vector<std::string>& failures);

// "dataset id 123, 900 train and 100 val tokens"; an id of 0 (data
// prepared before ids) reads "none".
std::string DescribeData(const DataIdentity& data);

// Where training starts.
struct ResumePoint {
  bool resumed = false;
  std::string dir;  // the checkpoint resumed from
  int64_t step = 0;
  int64_t tokens_seen = 0;
  float last_train_loss = 0;
  std::vector<std::string> skipped;  // the checkpoints passed over first, each with why
};

// InvalidArgument (exit 2) when out_dir or the checkpoint directory lies in
// a checkpoint of some run (checkpoint/reader.h's CheckpointStepDirAround:
// a fine-tune saved inside the checkpoint it started from, say), naming the
// field, that checkpoint and its checkpoints directory: that run's keep_last
// pruning, or its next save of that step, deleted it with everything in it,
// without a word. OK otherwise. Reads the file system; writes nothing.
absl::Status CheckRunDirectoriesOutsideCheckpoints(const TrainConfig& config);

// Resumes per config.resume(): "" starts fresh, unless CheckpointsDirOf(config)
// already holds checkpoints (InvalidArgument naming the directory: the
// user continues that run with "latest" or picks another one), and so does a
// path outside CheckpointsDirOf(config) while it holds checkpoints (saving
// there would mix two runs); "latest" loads the one LATEST names, else the
// newest checkpoint of CheckpointsDirOf(config) that verifies, logging each
// one it skipped and why (no checkpoint at all starts fresh, saying so;
// candidates that all fail refuse), and one warning line naming a newer
// checkpoint than LATEST's that opens, with the flag that resumes it; a path names a checkpoint,
// loaded as it is, or a checkpoints directory or a run directory (its checkpoints/), tried as
// "latest" is (none there refuses). A path that does not exist is NotFound,
// one that is no checkpoint nor holds any InvalidArgument (usage, exit 2),
// each naming it; a checkpoint that fails to verify is FailedPrecondition
// (exit 1), naming what was skipped and why. Parameters, moments
// and AdamW's step are loaded into gpt/optimizer. A config that contradicts
// the checkpoint (CheckResumeConfig, tokenizer) is InvalidArgument naming the
// field; allowed changes are logged. `data` is what data_dir holds now: a
// checkpoint that records other data (another dataset id or token count)
// is InvalidArgument naming both data_dirs and identities, unless
// config.allow_data_change, which logs one warning line instead; one that
// records none (written before the record existed) is not checked. A
// checkpoint written by another number of ranks logs both counts; a global
// batch (ranks x batch_size x gradient_accumulation_steps x block_size) other
// than the checkpoint's run's logs one warning line naming both, and the
// batch_size or gradient_accumulation_steps that keeps the checkpoint's.
// Any resume into a CheckpointsDirOf(config) that holds a checkpoint of a
// newer format (a newer dropk's, which this run's saves would replace or
// delete) is InvalidArgument naming it, before anything is loaded. So is a
// checkpoint it would try that it may not read (a permission problem, not
// a corrupt one: not skipped), naming it, the file and the system's reason,
// and a LATEST it may not read (InvalidArgument naming it, the system's
// reason and how to fix it).
absl::StatusOr<ResumePoint> MaybeResume(const TrainConfig& config, const Tokenizer& tokenizer,
                                        const DataIdentity& data, Gpt& gpt,
                                        AdamWOptimizer& optimizer, int world_size,
                                        std::ostream& log, Env* env = nullptr);

// Saves on schedule: every save_every steps, at the end, and when stopped.
// Compares the config given at resume with the checkpoint's. Fields that
// define the model shape or the randomness (n_layer, n_head, n_embd,
// block_size, seed, dropout_stream) must match: InvalidArgument naming the
// field and both values. Every other difference (max_iters, lr_decay_iters,
// save_every, eval_interval, data_dir, ...) is allowed and described, one
// line each, in *changes (resume, checkpoint_dir, out_dir and
// allow_data_change excepted).
absl::Status CheckResumeConfig(const TrainConfig& checkpoint, const TrainConfig& now,
                               std::vector<std::string>* changes);

// Saves during training, synchronously or (config.async_checkpoints) in the
// background through AsyncCheckpointWriter. Every method is collective:
// every rank calls it at the same point of the loop. Not thread-safe. Each
// committed save logs one line to the `log` given to the call that learns of
// it, with the training pause and the background write time.
class TrainingCheckpointer {
 public:
  // `log` receives each rank's own write failures (null: nowhere); not owned.
  // With async_checkpoints, the staging buffer for num_params is allocated
  // here, before training starts.
  TrainingCheckpointer(const TrainConfig& config, size_t num_params, Communicator* comm,
                       LogSink* log, Env* env = nullptr);

  // Whether a checkpoint is due after `steps_done` steps of max_steps.
  bool Due(int64_t steps_done, int64_t max_steps) const;

  // Saves the state after `steps_done` steps. Synchronous: returns once it
  // is committed. Asynchronous: first waits for the previous save; when
  // that one failed, saves this state in full before returning that
  // failure (naming its step, directory and cause, and whether this step
  // was saved); else returns as soon as the state is copied. `data` is recorded in the
  // manifest (what data_dir holds; see MaybeResume).
  absl::Status Save(const TrainConfig& config, const Tokenizer& tokenizer, const DataIdentity& data,
                    Gpt& gpt, AdamWOptimizer& optimizer, int64_t steps_done, int64_t tokens_seen,
                    float last_train_loss, std::ostream& log);

  // After every step: moves a background save on (never waits for I/O) and
  // logs it once committed. Errors are the communicator's only.
  absl::Status Poll(std::ostream& log);

  // The step collectives' timeout (CommTimeout), for the save collectives
  // that wait only for the other ranks (CheckpointWriter::set_peer_timeout):
  // a peer lost during a save is then named as soon as one lost in a step.
  // Those that wait on rank 0's disk in a synchronous save wait at least
  // comm_timeout_s and 5 minutes. Local; call before Poll, Save and Finish.
  void set_peer_timeout(std::chrono::milliseconds timeout);

  // Before training ends (also after a signal's final save): waits for the
  // background save and returns its failure, if any.
  absl::Status Finish(std::ostream& log);

  // The parameters after `steps_done` steps gave a finite training loss:
  // retention keeps the newest checkpoint at or before that step whatever
  // keep_last says (CheckpointWriter::KeepNewestAtOrBefore). Local.
  void NoteGoodParameters(int64_t steps_done);

  // This run resumed from checkpoint `dir` (ResumePoint::dir): rank 0's
  // first save warns when it was deleted from outside since, as it does for
  // a checkpoint this run committed (CheckpointWriter::NoteResumedFrom).
  // Local; call before the first Save.
  void NoteResumedFrom(const std::string& dir);

  // For the error of a loss that is not finite at step `step`: when a
  // checkpoint was saved after the last step known good, which one to
  // resume from instead of LATEST ("" when none was). Local.
  std::string DivergenceAdvice(const TrainConfig& config, int64_t step) const;

 private:
  void LogCommitted(std::ostream& log);

  int save_every_;
  int64_t last_saved_step_ = -1;
  int64_t good_step_ = -1;                               // NoteGoodParameters' newest
  std::unique_ptr<CheckpointWriter> writer_;             // synchronous saves
  std::unique_ptr<AsyncCheckpointWriter> async_writer_;  // or background ones
};

}  // namespace dropk

#endif  // DROPK_TRAINER_TRAINING_CHECKPOINTS_H_
