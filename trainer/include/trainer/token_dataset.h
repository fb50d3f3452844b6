// One split (train or val) of a prepared data set: a single token file
// (<dir>/train.bin) or shards (<dir>/train-00000.bin, train-00001.bin, ...)
// read as one sequence of tokens, the shards' tokens back to back. So a data
// set gives the same batches whether it is one file or many.
#ifndef DROPK_TRAINER_TOKEN_DATASET_H_
#define DROPK_TRAINER_TOKEN_DATASET_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/token_file.h"

namespace dropk {

// The name of shard `index` (>= 0) of `split`: the index in at least five
// digits ("train-00003.bin", "train-99999.bin", "train-100000.bin").
std::string ShardFileName(const std::string& split, int index);
// The index of shard name `name` of `split`: the inverse of ShardFileName,
// so nullopt for any name it does not write ("train-0001.bin",
// "train-000001.bin", "val-00001.bin" for split "train").
std::optional<int> ShardIndex(const std::string& name, const std::string& split);
// Whether `name` is a shard name of `split` (ShardIndex has a value).
bool IsShardName(const std::string& name, const std::string& split);

// The error for prepared-data files of two different preparations (dataset
// ids `a_id` of file `a`, `b_id` of file `b`): InvalidArgument, one line
// naming both and saying to run `dropk data prepare` again.
absl::Status MixedPreparationsError(const std::string& a, uint32_t a_id, const std::string& b,
                                    uint32_t b_id);

// Memory-mapped token files read as one sequence. Movable, not copyable;
// const methods are safe from many threads.
class TokenDataset {
 public:
  // Opens <dir>/<split>.bin, or else the shards <dir>/<split>-00000.bin,
  // -00001.bin, ... (numbered from 0 without a gap). Errors name the
  // directory or file: neither form present, both present, a gap in the
  // numbering, an invalid file (see TokenFile::Open), shards that disagree on
  // vocab_size, shards from different preparations (dataset ids that differ:
  // InvalidArgument naming two of them and saying to prepare again).
  static absl::StatusOr<TokenDataset> Open(const std::string& dir, const std::string& split);
  // A data set of one file.
  static TokenDataset FromFile(TokenFile file);

  // Total tokens, over every file.
  size_t size() const { return size_; }
  int vocab_size() const { return files_.front().vocab_size(); }
  // The files' common dataset id (see token_file.h; 0: unknown).
  uint32_t dataset_id() const { return files_.front().dataset_id(); }
  // The files, in order.
  const std::vector<TokenFile>& files() const { return files_; }
  // A name for messages: the single file's path, or "<dir>/<split>-*.bin".
  const std::string& name() const { return name_; }

  // Token i. Precondition: i < size().
  int32_t operator[](size_t i) const;
  // Copies tokens [offset, offset + n) to out[0, n), across file boundaries.
  // Precondition: offset + n <= size() and out holds n values.
  void Read(size_t offset, size_t n, int32_t* out) const;

 private:
  TokenDataset() = default;

  std::vector<TokenFile> files_;  // never empty
  std::vector<size_t> starts_;    // starts_[i]: index of files_[i]'s first token
  size_t size_ = 0;
  std::string name_;
};

// Pairs (i, j), i < j, of files[i] and files[j] that hold the same tokens,
// in order: a shard copied by hand (into its own split or the other one)
// passes every other check, same preparation and dataset id, and is
// trained on twice, or evaluated on as held-out data. Cheap: one pass reads
// 12 KiB of each file (its first, middle and last 4 KiB) to group look-
// alikes by length and those bytes; only files of one group are compared
// whole.
std::vector<std::pair<size_t, size_t>> IdenticalTokenFiles(
    const std::vector<const TokenFile*>& files);

}  // namespace dropk

#endif  // DROPK_TRAINER_TOKEN_DATASET_H_
