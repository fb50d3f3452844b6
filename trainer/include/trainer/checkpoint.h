// Checkpoints (DESIGN.md invariants 3 and 4, Formats): a directory
// run/checkpoints/step-00001000/ holding manifest.pb (format version, step,
// full config, tokenizer, data and schedule position, one entry per tensor
// with name, dtype, shape, data file, offset, length, CRC32C) beside raw
// data files that the entries point into; LATEST names the newest complete
// checkpoint. Written to a temporary directory, fsynced, renamed, LATEST
// replaced last: a checkpoint on disk is complete and verified or invisible.
//
// This header is the contract between the trainer (writes, resumes), the
// sampling service (reads weights, watches LATEST) and `dropk ckpt`.
#ifndef DROPK_TRAINER_CHECKPOINT_H_
#define DROPK_TRAINER_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint.pb.h"
#include "comm/communicator.h"
#include "config.pb.h"
#include "model/kernels.h"
#include "model/param_layout.h"
#include "tokenizer.pb.h"
#include "trainer/env.h"

namespace dropk {

// Everything a checkpoint holds, in host memory. Tensors are in
// ParamLayout order (model/param_layout.h).
struct CheckpointData {
  TrainConfig config;           // the full config of the run that wrote it
  Tokenizer tokenizer;          // the vocabulary the model was trained on
  int64_t step = 0;             // optimizer steps completed; the next step to run
  int64_t tokens_seen = 0;
  int32_t world_size = 1;       // ranks of the run that wrote it
  std::vector<float> params;    // model parameters
  std::vector<float> adam_m;    // AdamW first moments (empty when read weights-only)
  std::vector<float> adam_v;    // AdamW second moments (empty when read weights-only)
  int64_t optimizer_step = 0;   // AdamW's t (bias correction)
};

struct ReadCheckpointOptions {
  bool weights_only = false;  // skip the optimizer state (serving, export)
};

// Reads and verifies the checkpoint directory `dir` (every CRC, every size;
// trusts nothing). Errors name the checkpoint, the file and the tensor.
absl::StatusOr<CheckpointData> ReadCheckpoint(const std::string& dir,
                                              const ReadCheckpointOptions& options = {});

// The checkpoint directory that checkpoints_dir/LATEST names, if it verifies;
// otherwise the newest step-* directory that does. Each skipped candidate is
// appended to *skipped (may be null) as "path: reason". NotFound when none
// verifies.
absl::StatusOr<std::string> FindLatestValidCheckpoint(const std::string& checkpoints_dir,
                                                      std::vector<std::string>* skipped);

// ---------------------------------------------------------------------------
// Below: the writer, the streaming loader the trainer uses, and the pieces
// `dropk ckpt` and the tests use. Every function takes an Env (null =
// Env::Default()).

inline constexpr char kCheckpointMagic[] = "dropk-checkpoint";
inline constexpr uint32_t kCheckpointFormatVersion = 1;
inline constexpr char kManifestFileName[] = "manifest.pb";
inline constexpr char kLatestFileName[] = "LATEST";
inline constexpr char kModelDataFileName[] = "model.data";
inline constexpr char kAdamMName[] = "optimizer/adam_m";
inline constexpr char kAdamVName[] = "optimizer/adam_v";
inline constexpr char kModelTensorPrefix[] = "model/";

// "step-00001000" for step 1000.
std::string CheckpointDirName(int64_t step);
// "optim-rank00003-of-00008.data".
std::string OptimizerDataFileName(int rank, int world_size);
// [begin, end) of the optimizer-state elements that rank `rank` of
// `world_size` writes (an even split of num_params).
std::pair<size_t, size_t> OptimizerSlice(size_t num_params, int rank, int world_size);
// checkpoint_dir, or out_dir/checkpoints when that is empty.
std::string CheckpointsDirOf(const TrainConfig& config);

// The live training state a save reads: device memory of `kernels`, each
// of num_params floats in ParamLayout order. Nothing is copied up front.
struct CheckpointState {
  const TrainConfig* config = nullptr;
  const Tokenizer* tokenizer = nullptr;
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
  std::string checkpoints_dir;  // created when missing
  int keep_last = 3;            // >= 1
  int keep_every = 0;           // also keep steps that are multiples of this; 0 = none
  size_t buffer_bytes = 8u << 20;  // the one staging buffer, allocated and touched once
  Env* env = nullptr;
};

// Writes checkpoints (DESIGN invariant 4): into step-N.tmp-XXXX, every file
// fsynced, the directory fsynced and renamed to step-N, then LATEST
// replaced atomically (LATEST.tmp, fsync, rename, fsync dir); older
// checkpoints beyond keep_last/keep_every are deleted only after that.
// Data streams from device memory through one bounded buffer. Rank 0 writes
// model.data and the manifest; rank r writes its slice of the optimizer state
// into optim-rankR-of-W.data; rank 0 commits only after every rank reports
// its file durable. Save is collective (every rank calls it, same state);
// not thread-safe.
class CheckpointWriter {
 public:
  CheckpointWriter(CheckpointWriterOptions options, Communicator* comm);

  // Returns the committed checkpoint directory. On error nothing visible
  // changes: LATEST still names the previous checkpoint.
  absl::StatusOr<std::string> Save(const CheckpointState& state);

 private:
  absl::Status WriteRun(const std::string& path, const std::vector<TensorEntry*>& entries,
                        const std::vector<const float*>& sources, Kernels* kernels);
  absl::Status Commit(const std::string& tmp, const std::string& final_dir,
                      const CheckpointManifest& manifest);
  absl::Status ApplyRetention(int64_t newest_step);

  CheckpointWriterOptions options_;
  Communicator* comm_;
  Env* env_;
  std::vector<char> buffer_;
};

// A manifest that passed ValidateManifest: its entries are consistent with
// the config, the tokenizer and the data files' sizes, so reading them can
// allocate exactly what they say.
struct ValidatedManifest {
  CheckpointManifest manifest;
  GptConfig shape;
  size_t num_params = 0;
  // Per entry of manifest.tensors(): which flat tensor (0 params, 1 adam_m,
  // 2 adam_v) and the element where this entry starts in it.
  std::vector<int> target;
  std::vector<size_t> element_offset;
};

// Parses the bytes of manifest.pb: magic, format version, manifest CRC.
// Errors name `where` (the manifest's path).
absl::StatusOr<CheckpointManifest> ParseManifestFile(const std::string& bytes,
                                                     const std::string& where);
// Serializes a manifest into manifest.pb bytes.
std::string SerializeManifestFile(const CheckpointManifest& manifest);

// Checks everything a manifest claims without reading tensor data: the model
// shape (from config and tokenizer), every entry's name, dtype, shape, file
// name, length = numel x dtype size, offset + length <= the file's size, no
// duplicates, optimizer slices tiling the parameters exactly. file_size
// returns the size of a data file named by an entry (or an error). Errors
// name `where`, the file and the tensor. Sizes are checked before anything is
// allocated from them.
absl::StatusOr<ValidatedManifest> ValidateManifest(
    const CheckpointManifest& manifest, const std::string& where,
    const std::function<absl::StatusOr<uint64_t>(const std::string& file)>& file_size);

// Reads manifest.pb of checkpoint `dir` and validates it against the files
// beside it (no tensor data read).
absl::StatusOr<ValidatedManifest> OpenCheckpoint(const std::string& dir, Env* env = nullptr);

// Recomputes every CRC of checkpoint `dir`. OK or DataLoss naming the
// checkpoint, file and tensor.
absl::Status VerifyCheckpoint(const std::string& dir, Env* env = nullptr);

// Where a load puts the tensors: device memory of `kernels` (num_params
// floats each, ParamLayout order). adam_m/adam_v may be null to skip them.
struct CheckpointLoadTarget {
  Kernels* kernels = nullptr;
  float* params = nullptr;
  float* adam_m = nullptr;
  float* adam_v = nullptr;
  size_t num_params = 0;
};

// Streams checkpoint `dir` into `target` through a buffer of buffer_bytes,
// checking every CRC. On error the target holds partial data (the caller
// loads another checkpoint or stops). Returns the manifest (no entries
// trimmed).
absl::StatusOr<CheckpointManifest> LoadCheckpointInto(const std::string& dir,
                                                      const CheckpointLoadTarget& target,
                                                      Env* env = nullptr,
                                                      size_t buffer_bytes = 8u << 20);

// Candidates for resuming from checkpoints_dir: the one LATEST names first
// (when LATEST is readable), then every step-* directory, newest first.
// Problems with LATEST itself are appended to *skipped (may be null).
std::vector<std::string> CheckpointCandidates(const std::string& checkpoints_dir,
                                              std::vector<std::string>* skipped,
                                              Env* env = nullptr);

// Compares the config given at resume with the checkpoint's. Fields that
// define the model shape or the randomness (n_layer, n_head, n_embd,
// block_size, seed, dropout_stream) must match: InvalidArgument naming the
// field and both values. Every other difference (max_iters, lr_decay_iters,
// save_every, eval_interval, data_dir, ...) is allowed and described, one
// line each, in *changes (resume, checkpoint_dir and out_dir excepted).
absl::Status CheckResumeConfig(const TrainConfig& checkpoint, const TrainConfig& now,
                               std::vector<std::string>* changes);

}  // namespace dropk

#endif  // DROPK_TRAINER_CHECKPOINT_H_
