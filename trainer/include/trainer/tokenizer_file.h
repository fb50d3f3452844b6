// tokenizer.pb: the tokenizer that `dropk data prepare` saves beside the
// token files it writes (checkpoints carry theirs in the manifest).
#ifndef DROPK_TRAINER_TOKENIZER_FILE_H_
#define DROPK_TRAINER_TOKENIZER_FILE_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/env.h"
#include "model/tokenizer.h"

namespace dropk {

// The bytes of tokenizer.pb for `tokenizer`: its binary dropk.Tokenizer proto
// with dataset_id set (0: unknown, left out) and one token_files entry per
// `file_checksums` entry (file name -> CRC32C of the file). Internal error if
// it cannot be serialized, naming `path`.
absl::StatusOr<std::string> TokenizerFileBytes(
    const TextTokenizer& tokenizer, uint32_t dataset_id, const std::string& path,
    const std::map<std::string, uint32_t>& file_checksums = {});

// Writes `tokenizer` as a binary dropk.Tokenizer proto to `path` (normally
// <dir>/tokenizer.pb), atomically (ReplaceFileAtomically), with dataset_id
// (see tokenizer.proto) 0. Errors name the path.
absl::Status SaveTokenizer(const TextTokenizer& tokenizer, const std::string& path,
                           Env* env = Env::Default());

// Reads and validates a tokenizer written by SaveTokenizer or `dropk data
// prepare`. A missing file, a file larger than any tokenizer, bytes that are
// not a Tokenizer proto, or an invalid one are errors naming the path. The
// file's dataset_id goes to *dataset_id and its token_files to
// *file_checksums (file name -> CRC32C; empty for data prepared before
// checksums) when those are not null; the returned tokenizer's proto has
// both cleared.
absl::StatusOr<TextTokenizer> LoadTokenizer(
    const std::string& path, Env* env = Env::Default(), uint32_t* dataset_id = nullptr,
    std::map<std::string, uint32_t>* file_checksums = nullptr);

}  // namespace dropk

#endif  // DROPK_TRAINER_TOKENIZER_FILE_H_
