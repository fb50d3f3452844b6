// The verifying checkpoint reader (format.h describes the layout). Like
// leveldb's log_reader it trusts nothing: magic, version, the manifest's own
// CRC, every entry's shape x dtype against its length, offsets and data file
// sizes against the files on disk, overlapping entries, and every tensor's
// CRC32C are checked, sizes before anything is allocated from them. Errors
// are DataLoss naming the checkpoint, the file and the tensor at fault,
// except a file or directory the OS will not let this user read (EACCES,
// EPERM): PermissionDenied, with the same naming and the system's reason,
// since that is no corruption and must not be passed over as one.
//
// This header is the contract between the trainer (resumes), the sampling
// service (reads weights, watches LATEST) and `dropk ckpt`. Every function
// taking an Env uses Env::Default() when given null. All functions are
// thread-compatible (no shared state).
#ifndef DROPK_CHECKPOINT_READER_H_
#define DROPK_CHECKPOINT_READER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint.pb.h"
#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "config.pb.h"
#include "model/kernels.h"
#include "model/param_layout.h"
#include "tokenizer.pb.h"

namespace dropk {

// Everything a checkpoint holds, in host memory. Tensors are in
// ParamLayout order (model/param_layout.h).
struct CheckpointData {
  TrainConfig config;   // the full config of the run that wrote it
  Tokenizer tokenizer;  // the vocabulary the model was trained on
  int64_t step = 0;     // optimizer steps completed; the next step to run
  int64_t tokens_seen = 0;
  int32_t world_size = 1;      // ranks of the run that wrote it
  std::vector<float> params;   // model parameters
  std::vector<float> adam_m;   // AdamW first moments (empty when read weights-only)
  std::vector<float> adam_v;   // AdamW second moments (empty when read weights-only)
  int64_t optimizer_step = 0;  // AdamW's t (bias correction)
};

struct ReadCheckpointOptions {
  bool weights_only = false;  // skip the optimizer state (serving, export)
};

// Reads and verifies the checkpoint directory `dir` into host memory (every
// CRC, every size). Errors name the checkpoint, the file and the tensor.
absl::StatusOr<CheckpointData> ReadCheckpoint(const std::string& dir,
                                              const ReadCheckpointOptions& options = {});

// The checkpoint directory that checkpoints_dir/LATEST names, if it verifies;
// otherwise the newest step-* directory that does. Each skipped candidate is
// appended to *skipped (may be null) as "path: reason". NotFound when none
// verifies. With options.weights_only, a candidate verifies when what a
// weights-only read uses does (VerifyCheckpoint).
absl::StatusOr<std::string> FindLatestValidCheckpoint(const std::string& checkpoints_dir,
                                                      std::vector<std::string>* skipped,
                                                      const ReadCheckpointOptions& options = {});

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

// The size in bytes of the data file named `file` (a plain name inside the
// checkpoint), or an error.
using FileSizeFn = std::function<absl::StatusOr<uint64_t>(const std::string& file)>;

// Checks everything a manifest claims without reading tensor data: the model
// shape (from config and tokenizer), every entry's name, dtype, shape, file
// name, length = numel x dtype size, offset + length <= the file's size, no
// overlaps or duplicates, optimizer slices tiling the parameters exactly,
// and (format version 2) every data file's exact size. Errors name `where`,
// the file and the tensor. Sizes are checked before anything is allocated
// from them.
absl::StatusOr<ValidatedManifest> ValidateManifest(const CheckpointManifest& manifest,
                                                   const std::string& where,
                                                   const FileSizeFn& file_size);

// Reads manifest.pb of checkpoint `dir` and validates it against the files
// beside it (no tensor data read). With `weights_only` (serving, sampling,
// export), an optimizer file (optim-*) that is missing counts as the size
// the manifest pins for it: a checkpoint copied without them (twice the
// weights' bytes, never read there) opens; one present is checked as ever.
absl::StatusOr<ValidatedManifest> OpenCheckpoint(const std::string& dir, Env* env = nullptr,
                                                 bool weights_only = false);

// Recomputes every CRC of checkpoint `dir`. OK or DataLoss naming the
// checkpoint, file and tensor. With options.weights_only, only the model
// tensors' CRCs (what a weights-only read uses; serving): the manifest is
// checked whole either way (its own CRC, every entry, every data file's
// size), but the optimizer state's bytes are not read.
absl::Status VerifyCheckpoint(const std::string& dir, Env* env = nullptr,
                              const ReadCheckpointOptions& options = {});

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

// The bytes of the LATEST file at latest_path (at most kMaxLatestBytes),
// through `env` (null: Env::Default()). A LATEST that is a directory, or a
// symbolic link to one (`ln -s step-N LATEST`), is FailedPrecondition
// "PATH: not a regular file but a directory (or a link to one); LATEST must
// be a file holding the checkpoint directory's name ...", with how to
// write one; other errors are ReadSmallFile's. Used by every reader of
// LATEST (dropk-serve, --resume, dropk ckpt), so all say the same.
absl::StatusOr<std::string> ReadLatestFile(const std::string& latest_path, Env* env = nullptr);

// Whether `dir` is a dropk checkpoints directory: its LATEST names a
// step-N directory there, or it holds a step-N checkpoint (with its
// manifest.pb: a first save whose LATEST is not written yet, or lost). Any
// other file named LATEST does not make one. `env` null: Env::Default().
bool IsCheckpointsDir(const std::string& dir, Env* env = nullptr);

// The checkpoint directory of some checkpoints directory that `dir` is or
// lies in, or "" when none: the nearest of `dir` and the directories above
// it named step-N (or step-N.tmp-X, a save in progress) whose parent is a
// checkpoints directory (IsCheckpointsDir). `dir` need not exist; it is
// made absolute and canonical as far as it exists. That run's keep_last
// pruning, or its next save of that step, deletes such a directory with all
// it holds.
std::string CheckpointStepDirAround(const std::string& dir, Env* env = nullptr);

// Candidates for resuming from checkpoints_dir: the one LATEST names first
// (when LATEST is readable), then every step-* directory, newest first,
// with every step-* entry this user may not look at (OpenCheckpoint calls
// it PermissionDenied).
// Problems with LATEST itself, and a directory that exists but cannot be
// listed, are appended to *skipped (may be null).
std::vector<std::string> CheckpointCandidates(const std::string& checkpoints_dir,
                                              std::vector<std::string>* skipped,
                                              Env* env = nullptr);

// The step of the checkpoint checkpoints_dir's LATEST names (nothing is
// opened or verified), -1 when LATEST is missing, cannot be read or names
// no step-N.
int64_t LatestCheckpointStep(const std::string& checkpoints_dir, Env* env = nullptr);

// The newest checkpoint of checkpoints_dir newer than the one its LATEST
// names that opens (OpenCheckpoint: its manifest and file sizes; no CRC is
// read), or "" when there is none or LATEST is missing or names nothing.
// Such a checkpoint is a save cut off between its rename and LATEST's
// update, or a run that went on from an older checkpoint there: what goes
// by LATEST (--resume=latest, dropk ckpt) passes it over.
std::string NewerCheckpointThanLatest(const std::string& checkpoints_dir, Env* env = nullptr);

}  // namespace dropk

#endif  // DROPK_CHECKPOINT_READER_H_
