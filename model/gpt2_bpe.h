// GPT-2's byte-level BPE: the encoding engine behind TextTokenizer's
// GPT2_BPE kind. Private to model/.
//
// Encoding is two steps, as in OpenAI's encoder.py:
//  1. Pre-tokenization cuts the text into pieces with GPT-2's regex
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     run by PCRE2 (JIT) in UTF + UCP mode, with \s spelled
//     \p{White_Space} (the set Python's `regex` module and tiktoken use;
//     PCRE2's own UCP \s leaves out U+0085).
//  2. Each piece starts as its bytes, one token each, and the adjacent pair
//     with the highest-priority merge is joined until none is left.
// Bytes that are not valid UTF-8 match nothing in the regex; each run of them
// becomes a piece of its own, so every byte string encodes and decodes back.
#ifndef DROPK_MODEL_GPT2_BPE_H_
#define DROPK_MODEL_GPT2_BPE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "tokenizer.pb.h"

namespace dropk {

class Gpt2BpeScratch;

// The immutable tables of one GPT2_BPE tokenizer. Safe to share between
// threads; each thread brings its own Gpt2BpeScratch to Encode.
class Gpt2Bpe {
 public:
  // Validates the GPT2_BPE fields of `proto` (vocab, merges, special_ids) and
  // builds the tables. InvalidArgument naming the field, index and value.
  static absl::StatusOr<std::unique_ptr<const Gpt2Bpe>> Build(const Tokenizer& proto);
  ~Gpt2Bpe();

  int vocab_size() const { return static_cast<int>(vocab_.size()); }
  const std::string& TokenBytes(int32_t id) const { return vocab_[id]; }

  // Appends the ids of `text` (any bytes) to *ids. `scratch` may be null (a
  // temporary one is used: correct, but without a warm merge cache). Fails
  // only if PCRE2 does (a resource limit), with ResourceExhausted naming the
  // byte offset.
  absl::Status Encode(std::string_view text, Gpt2BpeScratch* scratch,
                      std::vector<int32_t>* ids) const;

  // Whether pre-tokenization leaves `text` whole: one match of GPT-2's
  // regex spans all of it (" gazed" does; "<|endoftext|>" is three pieces,
  // and invalid UTF-8 matches nothing). Such a piece is what BPE merges
  // make tokens of.
  bool IsOnePiece(std::string_view text) const;

 private:
  struct Merge {
    int32_t rank;    // index in Tokenizer.merges: lower merges first
    int32_t merged;  // the id of the joined token
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  Gpt2Bpe() = default;

  // The ids of one pre-tokenized piece, by BPE merges.
  void MergePiece(std::string_view piece, Gpt2BpeScratch* scratch, std::vector<int32_t>* ids) const;
  // Through the scratch's cache.
  void EncodePiece(std::string_view piece, Gpt2BpeScratch* scratch,
                   std::vector<int32_t>* ids) const;

  std::vector<std::string> vocab_;
  int32_t byte_token_[256] = {};
  absl::flat_hash_map<uint64_t, Merge> merges_;
  struct Regex;
  std::unique_ptr<Regex> regex_;  // the compiled pre-tokenization pattern
  uint64_t serial_ = 0;           // unique per Gpt2Bpe: what a scratch is bound to

  friend class Gpt2BpeScratch;
};

// Per-thread working state of Gpt2Bpe::Encode: PCRE2 match data, merge
// buffers and a cache of encoded pieces (bounded: cleared when full). Not
// thread-safe; use one per thread. Tied to no particular Gpt2Bpe until first
// use, then to that one (a second Gpt2Bpe resets it).
class Gpt2BpeScratch {
 public:
  Gpt2BpeScratch();
  ~Gpt2BpeScratch();
  Gpt2BpeScratch(const Gpt2BpeScratch&) = delete;
  Gpt2BpeScratch& operator=(const Gpt2BpeScratch&) = delete;

 private:
  friend class Gpt2Bpe;
  // The most cached pieces; the cache is dropped whole when it fills, which
  // bounds memory at a few tens of MiB however large the corpus.
  static constexpr size_t kMaxCachedPieces = 1 << 18;
  struct CachedIds {
    uint32_t offset;  // into arena_
    uint32_t count;
  };

  void BindTo(const Gpt2Bpe* bpe);

  uint64_t owner_ = 0;          // Gpt2Bpe::serial_ of the tables the cache holds ids of
  void* match_data_ = nullptr;  // pcre2_match_data_8*
  absl::flat_hash_map<std::string, CachedIds> cache_;
  std::vector<int32_t> arena_;
  // MergePiece's linked list and heap, kept to avoid allocating per piece.
  std::vector<int32_t> id_, next_, prev_;
  std::vector<uint64_t> heap_;
};

}  // namespace dropk

#endif  // DROPK_MODEL_GPT2_BPE_H_
