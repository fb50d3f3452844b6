// `dropk data prepare`: turns one text file into a prepared-data directory
// that the trainer reads: train.bin and val.bin (token files, see
// token_file.h) and tokenizer.pb (the dropk.Tokenizer binary proto).
#ifndef DROPK_TRAINER_PREPARE_DATA_H_
#define DROPK_TRAINER_PREPARE_DATA_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "tokenizer.pb.h"

namespace dropk {

// File names inside a prepared-data directory.
inline constexpr char kTrainTokensFile[] = "train.bin";
inline constexpr char kValTokensFile[] = "val.bin";
inline constexpr char kTokenizerFile[] = "tokenizer.pb";

// What to prepare and where.
struct PrepareOptions {
  Tokenizer::Kind kind = Tokenizer::CHAR;
  std::string input_path;  // UTF-8 text (any bytes for BYTE)
  std::string out_dir;     // created with its parents if missing
  // The last val_fraction of the tokens become val.bin; must be in (0, 1).
  double val_fraction = 0.1;
};

// What PrepareData wrote.
struct PrepareSummary {
  int vocab_size = 0;
  size_t train_tokens = 0;
  size_t val_tokens = 0;
};

// Reads options.input_path, builds the tokenizer from the whole text, encodes
// it, and splits the tokens contiguously: the first
// floor(n * (1 - val_fraction)) go to train.bin, the rest to val.bin (as
// nanoGPT's prepare.py: train = data[:int(n*0.9)]). Writes train.bin, val.bin
// and tokenizer.pb into options.out_dir, each atomically. Errors (naming the
// path or option): missing or unreadable input, empty input, invalid UTF-8
// for CHAR, val_fraction outside (0, 1), a split that leaves train or val
// empty, an out_dir that cannot be created or written. Blocks; reads the
// whole input into memory.
absl::StatusOr<PrepareSummary> PrepareData(const PrepareOptions& options);

}  // namespace dropk

#endif  // DROPK_TRAINER_PREPARE_DATA_H_
