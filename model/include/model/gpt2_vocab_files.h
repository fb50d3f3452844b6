// Reads OpenAI's GPT-2 tokenizer files (encoder.json and vocab.bpe, as in
// data/gpt2/) into the dropk.Tokenizer proto of kind GPT2_BPE, which is what
// travels in tokenizer.pb and checkpoints from then on.
#ifndef DROPK_MODEL_GPT2_VOCAB_FILES_H_
#define DROPK_MODEL_GPT2_VOCAB_FILES_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "tokenizer.pb.h"

namespace dropk {

// `encoder_json` is encoder.json's text: a JSON object from each token, spelt
// in GPT-2's printable byte-to-unicode alphabet, to its id; the ids must be
// exactly 0..n-1. `vocab_bpe` is vocab.bpe's text: a "#version" line, then
// one merge per line, two tokens in the same alphabet separated by a space,
// highest priority first. Tokens that are neither a byte nor the result of a
// merge (GPT-2's <|endoftext|>) become special_ids; one that GPT-2's
// pre-tokenization would leave whole (" gazed") is refused as a merge
// missing from vocab.bpe (a truncated copy). The result passes
// TextTokenizer::FromProto. InvalidArgument naming "encoder.json" or
// "vocab.bpe line N" and the problem otherwise.
absl::StatusOr<Tokenizer> Gpt2TokenizerFromFiles(std::string_view encoder_json,
                                                 std::string_view vocab_bpe);

}  // namespace dropk

#endif  // DROPK_MODEL_GPT2_VOCAB_FILES_H_
