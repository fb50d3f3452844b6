// Text <-> token ids. A TextTokenizer wraps the dropk.Tokenizer proto (which
// travels beside prepared data as tokenizer.pb and inside every checkpoint)
// and is always valid: every way to build one validates the proto first.
//
// The class is not called Tokenizer because dropk::Tokenizer is the proto.
#ifndef DROPK_MODEL_TOKENIZER_H_
#define DROPK_MODEL_TOKENIZER_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tokenizer.pb.h"

namespace dropk {

// CHAR: token id i is the Unicode code point proto().code_points(i) (sorted,
// distinct), text is UTF-8. BYTE: token id i is the byte i, vocabulary 256.
// Immutable once built; copyable; safe to share between threads.
class TextTokenizer {
 public:
  // The largest CHAR vocabulary FromProto accepts.
  static constexpr int kMaxCodePoints = 1 << 24;

  // Builds the tokenizer of `kind` for `text`. CHAR: the vocabulary is the
  // distinct code points of the UTF-8 text, sorted; invalid UTF-8 is
  // InvalidArgument naming the byte offset; empty text is InvalidArgument.
  // BYTE: the 256 bytes, whatever the text.
  static absl::StatusOr<TextTokenizer> FromCorpus(Tokenizer::Kind kind,
                                                  std::string_view text);

  // Validates and wraps `proto`: kind is CHAR or BYTE; CHAR has 1..2^24 sorted,
  // distinct, valid code points (<= U+10FFFF, not surrogates); BYTE has none.
  // InvalidArgument naming the field and value otherwise.
  static absl::StatusOr<TextTokenizer> FromProto(const Tokenizer& proto);

  const Tokenizer& proto() const { return proto_; }
  Tokenizer::Kind kind() const { return proto_.kind(); }
  int vocab_size() const;

  // The ids of `text`. CHAR: invalid UTF-8, or a code point outside the
  // vocabulary, is InvalidArgument naming the character and its byte offset.
  // BYTE: never fails.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;

  // The text of `ids`, concatenated. Ids outside [0, vocab_size()) decode to
  // U+FFFD (the replacement character) instead of failing. BYTE output is the
  // raw bytes and need not be valid UTF-8.
  std::string Decode(std::span<const int32_t> ids) const;
  std::string DecodeOne(int32_t id) const;

 private:
  explicit TextTokenizer(Tokenizer proto) : proto_(std::move(proto)) {}

  Tokenizer proto_;
};

}  // namespace dropk

#endif  // DROPK_MODEL_TOKENIZER_H_
