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
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config.pb.h"
#include "tokenizer.pb.h"

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

}  // namespace dropk

#endif  // DROPK_TRAINER_CHECKPOINT_H_
