#include "model/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/cut_for_message.h"
#include "gpt2_bpe.h"

namespace dropk {
namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr int kByteVocab = 256;
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

bool IsValidCodePoint(uint32_t cp) {
  return cp <= kMaxCodePoint && !(cp >= 0xD800 && cp <= 0xDFFF);
}

std::string CodePointName(uint32_t cp) {
  return absl::StrCat("U+", absl::AsciiStrToUpper(absl::StrCat(absl::Hex(cp, absl::kZeroPad4))));
}

// Decodes the UTF-8 sequence starting at text[pos] into *cp and returns its
// length in bytes, or 0 when the bytes there are not valid UTF-8 (truncated,
// bad continuation, overlong, surrogate, or beyond U+10FFFF).
size_t DecodeUtf8(std::string_view text, size_t pos, uint32_t* cp) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[pos + i]); };
  const uint8_t b0 = byte(0);
  size_t len;
  uint32_t value;
  uint32_t min_value;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2, value = b0 & 0x1F, min_value = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, value = b0 & 0x0F, min_value = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, value = b0 & 0x07, min_value = 0x10000;
  } else {
    return 0;
  }
  if (text.size() - pos < len) return 0;
  for (size_t i = 1; i < len; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
    value = (value << 6) | (byte(i) & 0x3F);
  }
  if (value < min_value || !IsValidCodePoint(value)) return 0;
  *cp = value;
  return len;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

absl::Status InvalidUtf8Error(std::string_view text, size_t pos) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid UTF-8 at byte offset ", pos, " (byte 0x",
                   absl::AsciiStrToUpper(
                       absl::StrCat(absl::Hex(static_cast<uint8_t>(text[pos]), absl::kZeroPad2))),
                   ")"));
}

std::string KindName(Tokenizer::Kind kind) {
  const std::string& name = Tokenizer::Kind_Name(kind);
  return name.empty() ? absl::StrCat(static_cast<int>(kind)) : name;
}

}  // namespace

EncodeCache::EncodeCache() : scratch_(std::make_unique<Gpt2BpeScratch>()) {}
EncodeCache::~EncodeCache() = default;

TextTokenizer::TextTokenizer(std::shared_ptr<const Tokenizer> proto,
                             std::shared_ptr<const Gpt2Bpe> bpe)
    : proto_(std::move(proto)), bpe_(std::move(bpe)) {
  if (bpe_ != nullptr) {
    for (int id = 0; id < bpe_->vocab_size(); ++id) {
      max_token_bytes_ = std::max(max_token_bytes_, bpe_->TokenBytes(id).size());
    }
  } else if (proto_->kind() == Tokenizer::CHAR && proto_->code_points_size() > 0) {
    std::string largest;  // code points are sorted: the last is the largest
    AppendUtf8(proto_->code_points(proto_->code_points_size() - 1), &largest);
    max_token_bytes_ = largest.size();
  }
}

absl::StatusOr<TextTokenizer> TextTokenizer::FromCorpus(Tokenizer::Kind kind,
                                                        std::string_view text) {
  auto proto = std::make_shared<Tokenizer>();
  proto->set_kind(kind);
  if (kind == Tokenizer::BYTE) return TextTokenizer(std::move(proto), nullptr);
  if (kind == Tokenizer::GPT2_BPE) {
    return absl::InvalidArgumentError(
        "a GPT2_BPE tokenizer comes from GPT-2's encoder.json and vocab.bpe, not from a corpus");
  }
  if (kind != Tokenizer::CHAR) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer kind ", KindName(kind), " is not CHAR, BYTE or GPT2_BPE"));
  }
  if (text.empty()) {
    return absl::InvalidArgumentError("cannot build a CHAR tokenizer from empty text");
  }
  // One flag per possible code point: 136 KiB, and iterating it yields the
  // vocabulary already sorted.
  std::vector<bool> seen(kMaxCodePoint + 1, false);
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    const size_t len = DecodeUtf8(text, pos, &cp);
    if (len == 0) return InvalidUtf8Error(text, pos);
    seen[cp] = true;
    pos += len;
  }
  for (uint32_t cp = 0; cp <= kMaxCodePoint; ++cp) {
    if (seen[cp]) proto->add_code_points(cp);
  }
  return TextTokenizer(std::move(proto), nullptr);
}

absl::StatusOr<TextTokenizer> TextTokenizer::FromProto(const Tokenizer& proto) {
  const int n = proto.code_points_size();
  if (proto.kind() != Tokenizer::GPT2_BPE &&
      (proto.vocab_size() != 0 || proto.merges_size() != 0 || proto.special_ids_size() != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Tokenizer.vocab, merges and special_ids are for kind GPT2_BPE; kind ",
                     KindName(proto.kind()), " has ", proto.vocab_size(), ", ", proto.merges_size(),
                     " and ", proto.special_ids_size()));
  }
  switch (proto.kind()) {
    case Tokenizer::BYTE:
      if (n != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("Tokenizer.code_points has ", n, " entries for kind BYTE; want none"));
      }
      return TextTokenizer(std::make_shared<Tokenizer>(proto), nullptr);
    case Tokenizer::GPT2_BPE: {
      absl::StatusOr<std::unique_ptr<const Gpt2Bpe>> bpe = Gpt2Bpe::Build(proto);
      if (!bpe.ok()) return bpe.status();
      return TextTokenizer(std::make_shared<Tokenizer>(proto), std::move(*bpe));
    }
    case Tokenizer::CHAR: break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("Tokenizer.kind is ", KindName(proto.kind()),
                                                     "; want CHAR, BYTE or GPT2_BPE"));
  }
  if (n < 1 || n > kMaxCodePoints) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Tokenizer.code_points has ", n, " entries for kind CHAR; want 1..", kMaxCodePoints));
  }
  for (int i = 0; i < n; ++i) {
    const uint32_t cp = proto.code_points(i);
    if (!IsValidCodePoint(cp)) {
      return absl::InvalidArgumentError(absl::StrCat("Tokenizer.code_points[", i,
                                                     "] = ", CodePointName(cp),
                                                     " is not a valid Unicode scalar value"));
    }
    if (i > 0 && cp <= proto.code_points(i - 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Tokenizer.code_points[", i, "] = ", CodePointName(cp), " is not greater than [", i - 1,
          "] = ", CodePointName(proto.code_points(i - 1)),
          "; code points must be sorted and distinct"));
    }
  }
  return TextTokenizer(std::make_shared<Tokenizer>(proto), nullptr);
}

int TextTokenizer::vocab_size() const {
  switch (proto_->kind()) {
    case Tokenizer::BYTE: return kByteVocab;
    case Tokenizer::GPT2_BPE: return bpe_->vocab_size();
    default: return proto_->code_points_size();
  }
}

absl::StatusOr<std::vector<int32_t>> TextTokenizer::Encode(std::string_view text,
                                                           EncodeCache* cache) const {
  std::vector<int32_t> ids;
  if (bpe_ != nullptr) {
    ids.reserve(text.size() / 3);  // English averages over 4 bytes per token
    absl::Status status =
        bpe_->Encode(text, cache == nullptr ? nullptr : cache->scratch_.get(), &ids);
    if (!status.ok()) return status;
    return ids;
  }
  if (proto_->kind() == Tokenizer::BYTE) {
    ids.reserve(text.size());
    for (const char c : text) ids.push_back(static_cast<uint8_t>(c));
    return ids;
  }
  ids.reserve(text.size());  // an upper bound: at least one byte per token
  const auto& vocab = proto_->code_points();
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    const size_t len = DecodeUtf8(text, pos, &cp);
    if (len == 0) return InvalidUtf8Error(text, pos);
    const auto it = std::lower_bound(vocab.begin(), vocab.end(), cp);
    if (it == vocab.end() || *it != cp) {
      // The user's character, escaped where it would not print as itself.
      const std::string quoted =
          cp == 0x20 ? std::string()
                     : absl::StrCat("'", EscapeForMessage(text.substr(pos, len)), "' ");
      return absl::InvalidArgumentError(
          absl::StrCat("character ", quoted, "(", CodePointName(cp), ") at byte offset ", pos,
                       " is not in the tokenizer's vocabulary of ", vocab.size(), " characters"));
    }
    ids.push_back(static_cast<int32_t>(it - vocab.begin()));
    pos += len;
  }
  return ids;
}

std::string TextTokenizer::DecodeOne(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::string(kReplacement);
  if (bpe_ != nullptr) return bpe_->TokenBytes(id);
  if (proto_->kind() == Tokenizer::BYTE) return std::string(1, static_cast<char>(id));
  std::string out;
  AppendUtf8(proto_->code_points(id), &out);
  return out;
}

std::string TextTokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  const bool byte = proto_->kind() == Tokenizer::BYTE;
  const int vocab = vocab_size();
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab) {
      out.append(kReplacement);
    } else if (bpe_ != nullptr) {
      out.append(bpe_->TokenBytes(id));
    } else if (byte) {
      out.push_back(static_cast<char>(id));
    } else {
      AppendUtf8(proto_->code_points(id), &out);
    }
  }
  return out;
}

}  // namespace dropk
