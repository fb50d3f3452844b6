// A model the sampling service can serve: shape, tokenizer, weights and where
// they came from. Snapshots are immutable once built and shared between the
// loader, the scheduler and the requests pinned to them.
#ifndef DROPK_SAMPLER_MODEL_SNAPSHOT_H_
#define DROPK_SAMPLER_MODEL_SNAPSHOT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/param_layout.h"
#include "model/tokenizer.h"

namespace dropk {

struct ModelSnapshot {
  GptConfig config;
  TextTokenizer tokenizer;
  std::vector<float> params;  // ParamLayout order
  int64_t step = 0;           // training step of the checkpoint
  std::string id;             // model name in the API, e.g. "dropk-step-00001000"
  std::string path;           // checkpoint directory ("" when made in-process)
};

// Checks that config, tokenizer and params agree (vocab, parameter count,
// finite values) and builds the snapshot. InvalidArgument naming what
// disagrees.
absl::StatusOr<std::shared_ptr<const ModelSnapshot>> MakeSnapshot(const GptConfig& config,
                                                                  TextTokenizer tokenizer,
                                                                  std::vector<float> params,
                                                                  int64_t step, std::string id,
                                                                  std::string path);

// Reads and verifies one checkpoint directory (weights only) into a snapshot.
absl::StatusOr<std::shared_ptr<const ModelSnapshot>> LoadCheckpointSnapshot(
    const std::string& checkpoint_dir);

// The checkpoint directory the service should serve from checkpoints_dir:
// what LATEST names if it verifies, else the newest that does (verified as
// served: the manifest and the weights' CRCs, not the optimizer state's,
// which a resume checks and serving never reads). Skipped
// candidates go to *skipped as "path: reason". When there is none, the
// error says whether checkpoints_dir is missing (NotFound), is itself one
// checkpoint, or is a run directory holding checkpoints/.
absl::StatusOr<std::string> FindServableCheckpoint(const std::string& checkpoints_dir,
                                                   std::vector<std::string>* skipped);

// RUN/checkpoints when `path` is a training run's directory (a directory
// without LATEST or manifest.pb that holds a checkpoints/ directory), which
// stands for its checkpoints directory; nullopt otherwise.
std::optional<std::string> RunDirectoryCheckpoints(const std::string& path);

// Where `checkpoints_dir`, given for a directory of checkpoints, is not one
// but something a user may name instead, the path that would work: "RUN
// looks like a run directory; give its checkpoints directory,
// RUN/checkpoints" (it holds checkpoints/ and no LATEST), or "STEP is itself
// a checkpoint; give the run's checkpoints directory that holds it, RUN"
// (it holds manifest.pb and no LATEST), or "PATH is not a directory; give
// the run's checkpoints directory[, DIR]" (a file; DIR when it is DIR's
// LATEST). "" otherwise, a path that does not exist included. Never throws.
std::string CheckpointsDirHint(const std::string& checkpoints_dir);

// The checkpoint a command's `flag` (--checkpoint) names with `path`: path
// itself when it is one checkpoint (holds manifest.pb and no LATEST), else
// FindServableCheckpoint of path/checkpoints when path is a run directory
// (holds no LATEST but a checkpoints/ directory), else
// FindServableCheckpoint(path). A result other than `path` is one the
// command picked (LATEST's, else the newest that verifies), which it names
// with its step. Every error names the flag: "--checkpoint PATH: does not
// exist", "--checkpoint: no valid checkpoint in PATH ...". A path the OS
// cannot look at (a symlink loop, a name too long, no
// permission) is an error naming the flag, the path and the OS's reason
// (base/path_status.h); never throws. Newer checkpoints passed over on the
// way (LATEST's, corrupt, say) go to *skipped as "path: reason" when
// `skipped` is not null.
absl::StatusOr<std::string> ResolveCheckpointFlag(const std::string& path, const std::string& flag,
                                                  std::vector<std::string>* skipped = nullptr);

// What a command says on stderr when ResolveCheckpointFlag picked
// `checkpoint_dir`, at training step `step`, from a directory the user
// named: "using step N (DIR)", without its program's prefix, and "; skipped:
// PATH: REASON; ..." for the newer ones it passed over (`skipped`): a
// corrupt LATEST was passed over without a word, as dropk-serve says it.
std::string PickedCheckpointLine(int64_t step, const std::string& checkpoint_dir,
                                 const std::vector<std::string>& skipped = {});

}  // namespace dropk

#endif  // DROPK_SAMPLER_MODEL_SNAPSHOT_H_
