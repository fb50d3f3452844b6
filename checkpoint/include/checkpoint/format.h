// The on-disk format of a dropk checkpoint (DESIGN.md invariants 3 and 4,
// Formats), in the manner of leveldb's log_format.h: the layout, its names
// and the codec of the manifest. The verifying reader is reader.h, the
// writer writer.h.
//
//   CHECKPOINTS/                          checkpoint_dir (default out_dir/checkpoints)
//   |-- LATEST                            "step-00001000\n": the newest complete checkpoint,
//   |                                     replaced atomically (LATEST.tmp, fsync, rename)
//   |-- step-00000500/                    one committed checkpoint (never modified)
//   |-- step-00001000/
//   |   |-- manifest.pb                   CheckpointManifestFile (proto/checkpoint.proto):
//   |   |                                   magic "dropk-checkpoint", format_version,
//   |   |                                   manifest_crc32c, manifest = CheckpointManifest,
//   |   |                                   format_version_crc32c (since 2026-12-02)
//   |   |-- model.data                    rank 0: every model tensor, ParamLayout order,
//   |   |                                   raw little-endian float32, back to back
//   |   |-- optim-rank00000-of-00002.data rank 0's slice of AdamW's m, then of v
//   |   `-- optim-rank00001-of-00002.data rank 1's slice ...
//   `-- step-00001500.tmp-1a2b3c4d/       a save in progress (or crashed): invisible,
//                                         deleted by the next save's retention pass
//
// A CheckpointManifest holds the step, the full config, the tokenizer, the
// identity of the data trained on (DataIdentity; absent in older
// checkpoints, same format version), the data/schedule/dropout position and
// one TensorEntry per run of bytes:
//
//   TensorEntry { name, dtype=FLOAT32, shape, file, offset, length, crc32c, slice_start }
//                 length == product(shape) * 4; [offset, offset+length) lies inside `file`;
//                 no two entries of a file overlap; crc32c covers exactly those bytes.
//
// Since format version 2 the manifest also lists every data file with its
// exact size (DataFileInfo), so bytes appended to or cut from a data file are
// refused even where no entry reads them. Version 1 manifests (no sizes) are
// still read.
//
// Tensor bytes never sit inside a protobuf message (TensorFlow's tensor
// bundle layout): nothing nears protobuf's 2 GiB limit, ranks write their
// files in parallel, and a reader streams each file sequentially.
#ifndef DROPK_CHECKPOINT_FORMAT_H_
#define DROPK_CHECKPOINT_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "checkpoint.pb.h"
#include "config.pb.h"

namespace dropk {

inline constexpr char kCheckpointMagic[] = "dropk-checkpoint";
// 2: the manifest pins every data file's size. Readers accept 1 and 2.
inline constexpr uint32_t kCheckpointFormatVersion = 2;
inline constexpr uint32_t kOldestReadableFormatVersion = 1;
// The newest format version that dropk wrote without format_version_crc32c
// (proto/checkpoint.proto). Fixed for ever: every version above it comes
// with that CRC, so one that does not is a corrupt version field.
inline constexpr uint32_t kLastFormatVersionWithoutItsCrc = 2;
inline constexpr char kManifestFileName[] = "manifest.pb";
inline constexpr char kLatestFileName[] = "LATEST";
inline constexpr char kModelDataFileName[] = "model.data";
// The first 8 bytes of a file `dropk ckpt export --format dropk` writes
// (then a little-endian u64 header length and the header).
inline constexpr char kExportMagic[] = "DROPKEXP";
inline constexpr char kAdamMName[] = "optimizer/adam_m";
inline constexpr char kAdamVName[] = "optimizer/adam_v";
inline constexpr char kModelTensorPrefix[] = "model/";

// A manifest holds a few hundred entries and at most a 2^24-entry CHAR
// vocabulary (64 MiB); anything larger is not a manifest.
inline constexpr uint64_t kMaxManifestBytes = 96u << 20;
// LATEST holds one directory name.
inline constexpr uint64_t kMaxLatestBytes = 4096;

// "step-00001000" for step 1000.
std::string CheckpointDirName(int64_t step);
// step-NNNNNNNN (8 or more digits) -> N; -1 for any other name.
int64_t ParseStepDirName(const std::string& name);
// "optim-rank00003-of-00008.data".
std::string OptimizerDataFileName(int rank, int world_size);
// [begin, end) of the optimizer-state elements that rank `rank` of
// `world_size` writes (an even split of num_params).
std::pair<size_t, size_t> OptimizerSlice(size_t num_params, int rank, int world_size);
// checkpoint_dir, or out_dir/checkpoints when that is empty.
std::string CheckpointsDirOf(const TrainConfig& config);

// Serializes a manifest into manifest.pb bytes (the current format version).
std::string SerializeManifestFile(const CheckpointManifest& manifest);

// Parses the bytes of manifest.pb: magic, format version (against its CRC,
// where recorded), manifest CRC; a version-2 manifest must list its data
// files. Errors are DataLoss naming
// `where` (the checkpoint directory) and manifest.pb.
absl::StatusOr<CheckpointManifest> ParseManifestFile(const std::string& bytes,
                                                     const std::string& where);

// The CRC32C of `version` as 4 little-endian bytes: what manifest.pb's
// format_version_crc32c holds.
uint32_t FormatVersionCrc32c(uint32_t version);

// The format version that manifest.pb's `bytes` declare, when they parse as
// a CheckpointManifestFile with dropk's magic and the version verifies (its
// format_version_crc32c matches, or, without one, it is at most
// kLastFormatVersionWithoutItsCrc); 0 otherwise (nothing else is checked).
// One above kCheckpointFormatVersion means a newer dropk wrote the
// checkpoint: valid there, unreadable here. A version field with a flipped
// bit reads 0, as the corruption it is (ParseManifestFile says so).
uint32_t DeclaredFormatVersion(const std::string& bytes);

}  // namespace dropk

#endif  // DROPK_CHECKPOINT_FORMAT_H_
