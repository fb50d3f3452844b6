// tokenizer.pb: the tokenizer that `dropk data prepare` saves beside the
// token files it writes (checkpoints carry theirs in the manifest).
#ifndef DROPK_TRAINER_TOKENIZER_FILE_H_
#define DROPK_TRAINER_TOKENIZER_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/env.h"
#include "model/tokenizer.h"

namespace dropk {

// Writes `tokenizer` as a binary dropk.Tokenizer proto to `path` (normally
// <dir>/tokenizer.pb), atomically (ReplaceFileAtomically). Errors name the
// path.
absl::Status SaveTokenizer(const TextTokenizer& tokenizer, const std::string& path,
                           Env* env = Env::Default());

// Reads and validates a tokenizer written by SaveTokenizer. A missing file, a
// file larger than any tokenizer, bytes that are not a Tokenizer proto, or an
// invalid one are errors naming the path.
absl::StatusOr<TextTokenizer> LoadTokenizer(const std::string& path, Env* env = Env::Default());

}  // namespace dropk

#endif  // DROPK_TRAINER_TOKENIZER_FILE_H_
