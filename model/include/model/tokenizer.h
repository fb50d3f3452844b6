// Text <-> token ids. A TextTokenizer wraps the dropk.Tokenizer proto (which
// travels beside prepared data as tokenizer.pb and inside every checkpoint)
// and is always valid: every way to build one validates the proto first.
//
// The class is not called Tokenizer because dropk::Tokenizer is the proto.
#ifndef DROPK_MODEL_TOKENIZER_H_
#define DROPK_MODEL_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tokenizer.pb.h"

namespace dropk {

class Gpt2Bpe;
class Gpt2BpeScratch;

// Per-thread state that makes repeated GPT2_BPE encoding fast (a bounded
// cache of encoded pieces and the regex's match buffers). Optional: Encode
// works without one. Not thread-safe: one per thread. Holds at most a few
// tens of MiB.
class EncodeCache {
 public:
  EncodeCache();
  ~EncodeCache();
  EncodeCache(const EncodeCache&) = delete;
  EncodeCache& operator=(const EncodeCache&) = delete;

 private:
  friend class TextTokenizer;
  std::unique_ptr<Gpt2BpeScratch> scratch_;
};

// CHAR: token id i is the Unicode code point proto().code_points(i) (sorted,
// distinct), text is UTF-8. BYTE: token id i is the byte i, vocabulary 256.
// GPT2_BPE: OpenAI's GPT-2 byte-level BPE (token id i is the byte string
// proto().vocab(i)); the ids are those of OpenAI's encoder for any text, and
// any byte string encodes (invalid UTF-8 as raw bytes) and decodes back.
// Immutable once built; cheap to copy (the tables are shared); safe to share
// between threads.
class TextTokenizer {
 public:
  // The largest CHAR vocabulary FromProto accepts.
  static constexpr int kMaxCodePoints = 1 << 24;

  // Builds the tokenizer of `kind` for `text`. CHAR: the vocabulary is the
  // distinct code points of the UTF-8 text, sorted; invalid UTF-8 is
  // InvalidArgument naming the byte offset; empty text is InvalidArgument.
  // BYTE: the 256 bytes, whatever the text. GPT2_BPE is InvalidArgument: it
  // comes from OpenAI's files (Gpt2TokenizerFromFiles), not from a corpus.
  static absl::StatusOr<TextTokenizer> FromCorpus(Tokenizer::Kind kind, std::string_view text);

  // Validates and wraps `proto`: kind is CHAR, BYTE or GPT2_BPE; CHAR has
  // 1..2^24 sorted, distinct, valid code points (<= U+10FFFF, not
  // surrogates); BYTE has none; GPT2_BPE has a vocabulary of distinct
  // non-empty byte strings holding all 256 single bytes, merges that each
  // join two existing tokens into a vocabulary token, and special ids inside
  // the vocabulary. InvalidArgument naming the field and value otherwise.
  static absl::StatusOr<TextTokenizer> FromProto(const Tokenizer& proto);

  const Tokenizer& proto() const { return *proto_; }
  Tokenizer::Kind kind() const { return proto_->kind(); }
  int vocab_size() const;
  // The most bytes of text one token stands for (CHAR: the UTF-8 length of
  // its largest code point; BYTE: 1; GPT2_BPE: its longest vocabulary
  // entry, 128 for GPT-2's). A text of n bytes encodes to at least
  // n / max_token_bytes() tokens, which bounds a prompt's length before the
  // work of encoding it.
  size_t max_token_bytes() const { return max_token_bytes_; }

  // The ids of `text`. CHAR: invalid UTF-8, or a code point outside the
  // vocabulary, is InvalidArgument naming the character and its byte offset
  // (quoted by EscapeForMessage, base/cut_for_message.h: '\u202e' (U+202E)).
  // BYTE: never fails. GPT2_BPE: fails only if PCRE2 hits a resource limit
  // (ResourceExhausted), which no text short of pathological does. `cache` (optional, this thread's
  // own) speeds up GPT2_BPE; the ids do not depend on it.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              EncodeCache* cache = nullptr) const;

  // The text of `ids`, concatenated. Ids outside [0, vocab_size()) decode to
  // U+FFFD (the replacement character) instead of failing. BYTE output is the
  // raw bytes and need not be valid UTF-8, nor need one GPT2_BPE token's
  // bytes (a token may end inside a character). A GPT2_BPE special id decodes
  // to its text ("<|endoftext|>").
  std::string Decode(std::span<const int32_t> ids) const;
  std::string DecodeOne(int32_t id) const;

 private:
  TextTokenizer(std::shared_ptr<const Tokenizer> proto, std::shared_ptr<const Gpt2Bpe> bpe);

  std::shared_ptr<const Tokenizer> proto_;  // never null
  std::shared_ptr<const Gpt2Bpe> bpe_;      // GPT2_BPE only
  size_t max_token_bytes_ = 1;
};

}  // namespace dropk

#endif  // DROPK_MODEL_TOKENIZER_H_
