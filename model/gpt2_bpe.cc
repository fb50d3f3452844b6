#include "gpt2_bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace dropk {
namespace {

// GPT-2's pre-tokenization pattern (encoder.py), with \s written as
// \p{White_Space}. Unicode categories come from PCRE2's tables rather than
// hand-written ones: \p{L} and \p{N} cover thousands of ranges that change
// with every Unicode version, and PCRE2's JIT runs the pattern at a few
// hundred MB/s, which no hand-written matcher of ours would beat by enough to
// be worth the risk of getting a category wrong.
constexpr char kPattern[] =
    R"('(?:s|t|re|ve|m|ll|d)| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+)"
    R"(|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+)";

constexpr int kMaxVocab = 1 << 24;
constexpr size_t kMaxTokenBytes = 4096;

std::atomic<uint64_t> next_serial{1};

}  // namespace

struct Gpt2Bpe::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

Gpt2Bpe::~Gpt2Bpe() = default;

absl::StatusOr<std::unique_ptr<const Gpt2Bpe>> Gpt2Bpe::Build(const Tokenizer& proto) {
  std::unique_ptr<Gpt2Bpe> bpe(new Gpt2Bpe());
  bpe->serial_ = next_serial.fetch_add(1);
  const int n = proto.vocab_size();
  if (n < 256 || n > kMaxVocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Tokenizer.vocab has ", n, " entries for kind GPT2_BPE; want 256..", kMaxVocab));
  }
  if (proto.code_points_size() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Tokenizer.code_points has ",
                                                   proto.code_points_size(),
                                                   " entries for kind GPT2_BPE; want none"));
  }
  absl::flat_hash_map<std::string_view, int32_t> ids;
  ids.reserve(n);
  bpe->vocab_.assign(proto.vocab().begin(), proto.vocab().end());
  std::fill(std::begin(bpe->byte_token_), std::end(bpe->byte_token_), -1);
  for (int i = 0; i < n; ++i) {
    const std::string& token = bpe->vocab_[i];
    if (token.empty() || token.size() > kMaxTokenBytes) {
      return absl::InvalidArgumentError(absl::StrCat("Tokenizer.vocab[", i, "] is ", token.size(),
                                                     " bytes; want 1..", kMaxTokenBytes));
    }
    const auto [it, inserted] = ids.emplace(token, i);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("Tokenizer.vocab[", i, "] = \"", absl::CHexEscape(token),
                       "\" repeats Tokenizer.vocab[", it->second, "]"));
    }
    if (token.size() == 1) bpe->byte_token_[static_cast<uint8_t>(token[0])] = i;
  }
  for (int b = 0; b < 256; ++b) {
    if (bpe->byte_token_[b] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("Tokenizer.vocab has no token for the byte 0x",
                                                     absl::Hex(b, absl::kZeroPad2),
                                                     "; a byte-level BPE needs all 256"));
    }
  }
  std::vector<bool> special(n, false);
  for (int i = 0; i < proto.special_ids_size(); ++i) {
    const uint32_t id = proto.special_ids(i);
    if (id >= static_cast<uint32_t>(n) || bpe->vocab_[id].size() == 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("Tokenizer.special_ids[", i, "] = ", id,
                       " is not a multi-byte token of the vocabulary of ", n));
    }
    special[id] = true;
  }
  // A merge may only join tokens that exist before it: single bytes or the
  // result of an earlier merge. The heap in MergePiece relies on it (a merge
  // never creates a pair that should have been merged earlier).
  std::vector<bool> reachable(n, false);
  for (int b = 0; b < 256; ++b) reachable[bpe->byte_token_[b]] = true;
  bpe->merges_.reserve(proto.merges_size());
  for (int r = 0; r < proto.merges_size(); ++r) {
    const uint32_t left = proto.merges(r).left(), right = proto.merges(r).right();
    const auto where = [&] {
      return absl::StrCat("Tokenizer.merges[", r, "] (", left, ", ", right, ")");
    };
    if (left >= static_cast<uint32_t>(n) || right >= static_cast<uint32_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), " names a token outside the vocabulary of ", n));
    }
    if (!reachable[left] || !reachable[right]) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), " joins token ", reachable[left] ? right : left,
                       ", which is neither a byte nor made by an earlier merge"));
    }
    const std::string joined = bpe->vocab_[left] + bpe->vocab_[right];
    const auto it = ids.find(joined);
    if (it == ids.end() || special[it->second]) {
      return absl::InvalidArgumentError(absl::StrCat(where(), " makes \"", absl::CHexEscape(joined),
                                                     "\", which is not an ordinary token"));
    }
    const bool inserted = bpe->merges_.emplace(PairKey(left, right), Merge{r, it->second}).second;
    if (!inserted) return absl::InvalidArgumentError(absl::StrCat(where(), " repeats a merge"));
    reachable[it->second] = true;
  }

  int error = 0;
  PCRE2_SIZE error_offset = 0;
  bpe->regex_ = std::make_unique<Regex>();
  bpe->regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error,
                                    &error_offset, nullptr);
  // The pattern is a constant: failing to compile it is a bug (or a PCRE2
  // older than 10.40, which lacks \p{White_Space}), not a user's error.
  DROPK_CHECK(bpe->regex_->code != nullptr)
      << "PCRE2 error " << error << " at offset " << error_offset << " compiling GPT-2's pattern";
  // Without JIT (a platform PCRE2 has none for) matching is slower but right.
  pcre2_jit_compile(bpe->regex_->code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<const Gpt2Bpe>(std::move(bpe));
}

absl::Status Gpt2Bpe::Encode(std::string_view text, Gpt2BpeScratch* scratch,
                             std::vector<int32_t>* ids) const {
  Gpt2BpeScratch local;
  if (scratch == nullptr) scratch = &local;
  scratch->BindTo(this);
  auto* match_data = static_cast<pcre2_match_data*>(scratch->match_data_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(regex_->code, subject, text.size(), pos, 0, match_data, nullptr);
    size_t start = text.size(), end = text.size();
    if (rc > 0) {
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
      start = ovector[0];
      end = ovector[1];
    } else if (rc != PCRE2_ERROR_NOMATCH) {
      // "No match" means the rest is invalid UTF-8. Anything else is PCRE2
      // giving up (a match or memory limit), which text can provoke.
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      return absl::ResourceExhaustedError(
          absl::StrCat("GPT-2 pre-tokenization failed at byte offset ", pos, ": ",
                       reinterpret_cast<const char*>(message)));
    }
    // Every valid character matches some alternative, so what the regex
    // skipped is invalid UTF-8: one piece of raw bytes.
    if (start > pos) EncodePiece(text.substr(pos, start - pos), scratch, ids);
    if (end > start) EncodePiece(text.substr(start, end - start), scratch, ids);
    DROPK_CHECK(end > pos || start == text.size());
    pos = end;
  }
  return absl::OkStatus();
}

bool Gpt2Bpe::IsOnePiece(std::string_view text) const {
  pcre2_match_data* match_data = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  DROPK_CHECK(match_data != nullptr) << "PCRE2 could not allocate match data";
  const int rc = pcre2_match(regex_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                             0, PCRE2_ANCHORED, match_data, nullptr);
  const bool whole = rc > 0 && pcre2_get_ovector_pointer(match_data)[1] == text.size();
  pcre2_match_data_free(match_data);
  return whole;
}

void Gpt2Bpe::EncodePiece(std::string_view piece, Gpt2BpeScratch* scratch,
                          std::vector<int32_t>* ids) const {
  if (piece.size() == 1) {
    ids->push_back(byte_token_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  // Debian's absl::string_view is its own type, not std::string_view.
  const absl::string_view key(piece.data(), piece.size());
  if (const auto it = scratch->cache_.find(key); it != scratch->cache_.end()) {
    const auto* first = scratch->arena_.data() + it->second.offset;
    ids->insert(ids->end(), first, first + it->second.count);
    return;
  }
  const size_t before = ids->size();
  MergePiece(piece, scratch, ids);
  if (scratch->cache_.size() >= Gpt2BpeScratch::kMaxCachedPieces) {
    scratch->cache_.clear();
    scratch->arena_.clear();
  }
  const auto count = static_cast<uint32_t>(ids->size() - before);
  scratch->cache_.emplace(
      key, Gpt2BpeScratch::CachedIds{static_cast<uint32_t>(scratch->arena_.size()), count});
  scratch->arena_.insert(scratch->arena_.end(), ids->begin() + before, ids->end());
}

void Gpt2Bpe::MergePiece(std::string_view piece, Gpt2BpeScratch* scratch,
                         std::vector<int32_t>* ids) const {
  // The piece as a linked list of tokens (one per byte at first) and a
  // min-heap of (rank << 32 | position) over the mergeable adjacent pairs.
  // Popping in (rank, position) order merges the best pair first and equal
  // pairs left to right, as encoder.py's loop does, in O(n log n) even for a
  // megabyte of spaces. Entries whose pair has changed since are skipped.
  const int n = static_cast<int>(piece.size());
  std::vector<int32_t>& id = scratch->id_;
  std::vector<int32_t>& next = scratch->next_;
  std::vector<int32_t>& prev = scratch->prev_;
  std::vector<uint64_t>& heap = scratch->heap_;
  id.resize(n);
  next.resize(n);
  prev.resize(n);
  heap.clear();
  const auto push_pair = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    const auto it = merges_.find(PairKey(id[pos], id[next[pos]]));
    if (it == merges_.end()) return;
    heap.push_back((static_cast<uint64_t>(it->second.rank) << 32) | static_cast<uint32_t>(pos));
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int i = 0; i < n; ++i) {
    id[i] = byte_token_[static_cast<uint8_t>(piece[i])];
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const uint64_t top = heap.back();
    heap.pop_back();
    const auto rank = static_cast<int32_t>(top >> 32);
    const auto pos = static_cast<int32_t>(top & 0xFFFFFFFFu);
    if (id[pos] < 0 || next[pos] < 0) continue;  // merged away, or now last
    const auto it = merges_.find(PairKey(id[pos], id[next[pos]]));
    if (it == merges_.end() || it->second.rank != rank) continue;  // the pair changed
    const int32_t right = next[pos];
    id[pos] = it->second.merged;
    id[right] = -1;
    next[pos] = next[right];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    push_pair(prev[pos]);
    push_pair(pos);
  }
  for (int i = 0; i >= 0; i = next[i]) ids->push_back(id[i]);
}

Gpt2BpeScratch::Gpt2BpeScratch() = default;

Gpt2BpeScratch::~Gpt2BpeScratch() {
  pcre2_match_data_free(static_cast<pcre2_match_data*>(match_data_));
}

void Gpt2BpeScratch::BindTo(const Gpt2Bpe* bpe) {
  if (owner_ == bpe->serial_) return;
  pcre2_match_data_free(static_cast<pcre2_match_data*>(match_data_));
  match_data_ = pcre2_match_data_create_from_pattern(bpe->regex_->code, nullptr);
  DROPK_CHECK(match_data_ != nullptr) << "out of memory for PCRE2 match data";
  cache_.clear();
  arena_.clear();
  owner_ = bpe->serial_;
}

}  // namespace dropk
