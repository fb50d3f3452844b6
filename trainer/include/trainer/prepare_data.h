// `dropk data prepare`: turns text files into a prepared-data directory that
// the trainer reads: the train and val splits as token files (see
// token_file.h; train.bin, or shards train-00000.bin, ... when a split has
// more than shard_tokens tokens) and tokenizer.pb (the dropk.Tokenizer
// binary proto).
//
// Inputs are streamed: memory stays bounded (a few chunks per thread, the
// per-thread BPE caches, I/O buffers) however large the corpus, and the
// tokens are spooled to a temporary file in out_dir before being split.
#ifndef DROPK_TRAINER_PREPARE_DATA_H_
#define DROPK_TRAINER_PREPARE_DATA_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer.pb.h"

namespace dropk {

class Env;  // checkpoint/env.h

// File names inside a prepared-data directory (single-file splits).
inline constexpr char kTrainTokensFile[] = "train.bin";
inline constexpr char kValTokensFile[] = "val.bin";
inline constexpr char kTokenizerFile[] = "tokenizer.pb";

// The most encoding threads PrepareData starts: every one is started at once
// (one OpenMP team), and past the process limit (about 50,000 here) thread
// creation fails inside OpenMP, which aborts or crashes the process.
inline constexpr int kMaxPrepareThreads = 1024;

// The fewest tokens a shard may hold (--shard-tokens). The trainer reads a
// split's shards as one sequence, so a training window may span shards and
// no shard needs a window's tokens; but every rank memory-maps every shard,
// and a mapping costs a 4 KiB page and one of the process's maps (65,530 by
// default on Linux) however few tokens it holds: 4096 one-byte tokens fill
// a page. --shard-tokens 1 wrote a file per token.
inline constexpr uint64_t kMinShardTokens = 4096;
// The most tokens per token file unless --shard-tokens says otherwise.
inline constexpr uint64_t kDefaultShardTokens = 100'000'000;
// The most token files a split may have. Every training rank maps every
// shard of both splits, and Linux allows a process 65,530 maps by default
// (vm.max_map_count), its libraries, thread stacks and large allocations
// included: 2 x 10,000 leaves room. A corpus of 4 x 10^9 tokens cut into
// shards of 4096 would have made about a million files, and a trainer that
// failed to map them.
inline constexpr uint64_t kMaxShardsPerSplit = 10'000;
// Why --shard-tokens has its minimum, for its error and help: "must be a
// whole number >= 4096 (every training rank memory-maps each shard, ...)".
std::string ShardTokensRule();

// What to prepare and where.
struct PrepareOptions {
  Tokenizer::Kind kind = Tokenizer::CHAR;
  // Text files, or directories whose regular files (recursively, sorted by
  // path) are read, prepared data found there (token files, tokenizer.pb
  // beside them) left out. Files are tokenized one after another and their
  // tokens concatenated; UTF-8 for CHAR, any bytes for BYTE and GPT2_BPE.
  std::vector<std::string> inputs;
  std::string out_dir;  // created with its parents if missing
  // GPT2_BPE only: the directory of GPT-2's encoder.json and vocab.bpe.
  std::string gpt2_dir = "data/gpt2";
  // The last val_fraction of the tokens become the val split; in (0, 1).
  double val_fraction = 0.1;
  // Encoding threads; 0 means every core; at most kMaxPrepareThreads. The
  // output does not depend on it.
  int threads = 0;
  // The most tokens per token file; a larger split is written as shards.
  // At least kMinShardTokens.
  uint64_t shard_tokens = kDefaultShardTokens;
  // Text is encoded in chunks of about this many bytes (cut where the
  // tokenization cannot change, see prepare_data.cc), in parallel.
  size_t chunk_bytes = 1 << 20;
  // The file system of out_dir (not owned); null: Env::Default(). Tests pass
  // one that injects faults.
  Env* env = nullptr;
};

// What PrepareData wrote.
struct PrepareSummary {
  int vocab_size = 0;
  size_t train_tokens = 0;
  size_t val_tokens = 0;
  int train_files = 0;  // 1 (train.bin) or the number of shards
  int val_files = 0;
  uint64_t input_bytes = 0;
};

// Builds the tokenizer (CHAR: from the distinct characters of all inputs, a
// first pass; BYTE: the 256 bytes; GPT2_BPE: from gpt2_dir's files), encodes
// the inputs in parallel, and splits the tokens contiguously: the first
// floor(n * (1 - val_fraction)) go to train, the rest to val (as nanoGPT's
// prepare.py: train = data[:int(n*0.9)]). The tokens equal those of encoding
// each input whole. Writes the splits and tokenizer.pb into out_dir: every
// file first as <name>.tmp, and only when all are written renamed over the
// earlier preparation's, whose token files the new one does not replace are
// then removed. So a failure while writing (a full disk) leaves the earlier
// data set whole, and its temporaries are removed (a killed preparation's,
// by the next one). Every token file and tokenizer.pb carry the same dataset
// id (token_file.h, derived from the content), so files of two preparations
// mixed by a kill between the renames are refused by the trainer; and
// tokenizer.pb records each token file's CRC32C (tokenizer.proto's
// token_files), so the trainer refuses a file changed since, naming it.
// Errors (naming the path or option): missing or unreadable input, a
// directory without files, empty input, invalid UTF-8 for CHAR, missing or
// bad GPT-2 files, val_fraction outside (0, 1), a named input that is a
// token file, a split that leaves train or val empty, shard_tokens below
// kMinShardTokens or so small that a split would have more than
// kMaxShardsPerSplit files (found after encoding, before anything is
// written; InvalidArgument naming --shard-tokens), chunk_bytes of 0, an out_dir that cannot be
// created or written, an out_dir another preparation is writing (FailedPrecondition: it holds a
// flock on out_dir/.dropk-prepare.lock). Blocks.
absl::StatusOr<PrepareSummary> PrepareData(const PrepareOptions& options);

}  // namespace dropk

#endif  // DROPK_TRAINER_PREPARE_DATA_H_
