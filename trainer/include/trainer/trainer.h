// The training loop of dropk-train: data, model, data-parallel gradient
// synchronisation, AdamW, schedule, evaluation, metrics, and a sample at the
// end.
#ifndef DROPK_TRAINER_TRAINER_H_
#define DROPK_TRAINER_TRAINER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/device_error.h"
#include "checkpoint/env.h"
#include "comm/communicator.h"
#include "config.pb.h"
#include "model/kernels.h"
#include "model/tokenizer.h"
#include "trainer/token_dataset.h"

namespace dropk {

// The prepared data of a run: what `dropk data prepare` wrote into data_dir.
struct TrainingData {
  TextTokenizer tokenizer;
  TokenDataset train;
  TokenDataset val;
  uint32_t tokens_crc = 0;  // TokensCrc(train, val), computed as the data is verified
};

// Opens data_dir/tokenizer.pb and the train and val splits, each train.bin
// or shards train-00000.bin, ... (see TokenDataset::Open), and checks they
// agree (same vocabulary size, and the same dataset id: files of two
// preparations are refused, InvalidArgument), then checks every file against
// the checksums tokenizer.pb recorded when they were prepared
// (VerifyPreparedData: InvalidArgument naming a file that changed since).
// Reads all the data once. Errors name the file at fault.
absl::StatusOr<TrainingData> LoadTrainingData(const std::string& data_dir);

// What a finished run reports (the same on every rank).
struct TrainSummary {
  int64_t steps = 0;
  float last_train_loss = 0;      // of the last step trained, mean over ranks and micro-batches
  std::optional<float> val_loss;  // last evaluation
  std::optional<float> eval_train_loss;  // last evaluation
  double elapsed_s = 0;
  double tokens_per_s = 0;          // training tokens (all ranks) over training time
  std::string sample;               // decoded text, empty when sample_tokens is 0
  std::vector<float> final_params;  // the parameters after the last step, ParamLayout order
  bool stopped_by_signal = false;   // SIGTERM/SIGINT: saved a checkpoint at `steps` and stopped
  std::string resumed_from;         // the checkpoint resumed from, empty for a fresh start
  // Resumed at step max_iters: no step, evaluation, metrics row or sample
  // ran (steps is max_iters, final_params the checkpoint's).
  bool nothing_to_train = false;
};

// Seams of RunTraining for tests; a default-constructed one is production.
struct TrainingSeams {
  // Builds the run's kernels; empty means MakeKernels. A test wraps the CPU
  // kernels in ones that fail like a GPU mid-run (DeviceError).
  std::function<absl::StatusOr<std::unique_ptr<Kernels>>(Device, const KernelOptions&)>
      make_kernels = nullptr;
  // What --resume reads checkpoints through; null means Env::Default(). A
  // test fails one rank's reads, as a read error on one host does.
  Env* checkpoint_env = nullptr;
};

// Runs the job described by config (validated by the caller with
// ValidateTrainConfig) as one rank of comm: every rank of comm must call it
// with the same config. Rank 0 writes progress lines to `log` and metrics to
// out_dir/metrics.jsonl; other ranks write nothing. Errors (data, output
// directory, a collective that failed or timed out, ranks whose parameters
// diverged) name what is wrong (a timeout under a configured comm_timeout_s
// names it); a bad config value that needs the data (block_size) is
// InvalidArgument.
//
// A failure of the device mid-run (a DeviceError from the kernels: an
// illegal address, an Xid, a lost GPU) ends the run at once and returns
// Internal (exit code 1) "the GPU failed: <op>: <error>; checkpoints saved
// so far are intact, resume with --resume=latest". Nothing is read from the
// device after it (its state is suspect). A background save started before
// it (its data already copied to the host) is committed when the run has
// one rank, else left invisible, as Finish is collective; the run
// directories' locks are released before this returns. It never waits on
// other ranks: the caller ends the job (dropk-train: AbortJob).
absl::StatusOr<TrainSummary> RunTraining(const TrainConfig& config, Communicator& comm,
                                         std::ostream& log, const TrainingSeams& seams = {});

// The status RunTraining returns for a DeviceError (above).
absl::Status DeviceFailureStatus(const DeviceError& error);

// Threads for this rank: num_threads when set, else the node's cores shared
// among the ranks on this node (at least 1).
int ThreadsPerRank(int num_threads, int local_ranks);

}  // namespace dropk

#endif  // DROPK_TRAINER_TRAINER_H_
