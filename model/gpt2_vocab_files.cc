#include "model/gpt2_vocab_files.h"

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/json_for_message.h"
#include "gpt2_bpe.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves,
// the other 68 bytes for the code points 256, 257, ... in byte order, so
// every token is a printable string. Returns code point -> byte, -1 where a
// code point stands for no byte.
std::array<int, 512> UnicodeToByte() {
  std::array<int, 512> to_byte;
  to_byte.fill(-1);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    to_byte[printable ? b : 256 + extra++] = b;
  }
  return to_byte;
}

// The raw bytes that `spelt` (UTF-8 in the byte-to-unicode alphabet) stands
// for; false when a character is outside the alphabet.
bool ToBytes(std::string_view spelt, const std::array<int, 512>& to_byte, std::string* out) {
  out->clear();
  for (size_t i = 0; i < spelt.size();) {
    const auto c = static_cast<uint8_t>(spelt[i]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < spelt.size()) {
      cp = ((c & 0x1Fu) << 6) | (static_cast<uint8_t>(spelt[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      return false;  // the alphabet ends at U+0143: two bytes at most
    }
    if (cp >= to_byte.size() || to_byte[cp] < 0) return false;
    out->push_back(static_cast<char>(to_byte[cp]));
  }
  return !out->empty();
}

// A token no merge makes is taken for a special token (GPT-2's
// <|endoftext|>, which pre-tokenization cuts into "<|", "endoftext" and
// "|>", so it never comes out of text). One that pre-tokenization leaves
// whole (" gazed") is ordinary text whose merge is missing: a vocab.bpe cut
// at a line boundary (a partial copy) gave such tokens by the thousand, and
// its data other ids than OpenAI's, in silence. `spelling` is each token as
// encoder.json writes it. Tables that do not build are left to
// TextTokenizer::FromProto to name.
absl::Status CheckSpecialTokens(const Tokenizer& proto, const std::vector<std::string>& spelling) {
  absl::StatusOr<std::unique_ptr<const Gpt2Bpe>> bpe = Gpt2Bpe::Build(proto);
  if (!bpe.ok()) return absl::OkStatus();
  std::vector<uint32_t> ordinary;
  for (const uint32_t id : proto.special_ids()) {
    if ((*bpe)->IsOnePiece(proto.vocab(static_cast<int>(id)))) ordinary.push_back(id);
  }
  if (ordinary.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "vocab.bpe: no merge makes encoder.json's token \"",
      absl::Utf8SafeCHexEscape(spelling[ordinary[0]]), "\" (id ", ordinary[0], ")",
      ordinary.size() > 1 ? absl::StrCat(" nor ", ordinary.size() - 1, " more like it") : "",
      ", though it is a piece of ordinary text that only a merge can make; vocab.bpe holds ",
      proto.merges_size(), " merges: is it truncated?"));
}

}  // namespace

absl::StatusOr<Tokenizer> Gpt2TokenizerFromFiles(std::string_view encoder_json,
                                                 std::string_view vocab_bpe) {
  const std::array<int, 512> to_byte = UnicodeToByte();
  const nlohmann::json encoder = nlohmann::json::parse(encoder_json, nullptr, false);
  if (encoder.is_discarded() || !encoder.is_object() || encoder.empty()) {
    return absl::InvalidArgumentError("encoder.json is not a non-empty JSON object");
  }
  const size_t n = encoder.size();
  std::vector<std::string> vocab(n);
  std::vector<std::string> spelling(n);  // as encoder.json writes it, for messages
  std::vector<bool> filled(n, false);
  std::string bytes;
  for (const auto& [spelt, id_json] : encoder.items()) {
    if (!id_json.is_number_unsigned() || id_json.get<uint64_t>() >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("encoder.json: the id of \"", absl::CHexEscape(spelt), "\" is ",
                       JsonForMessage(id_json, 80), "; want 0..", n - 1));
    }
    const auto id = id_json.get<size_t>();
    if (filled[id]) {
      return absl::InvalidArgumentError(
          absl::StrCat("encoder.json: id ", id, " is given to two tokens"));
    }
    if (!ToBytes(spelt, to_byte, &bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("encoder.json: token \"", absl::CHexEscape(spelt),
                       "\" is not spelt in GPT-2's byte-to-unicode alphabet"));
    }
    vocab[id] = bytes;
    spelling[id] = spelt;
    filled[id] = true;
  }
  absl::flat_hash_map<std::string_view, uint32_t> ids;
  for (size_t i = 0; i < n; ++i) ids.emplace(vocab[i], static_cast<uint32_t>(i));

  Tokenizer proto;
  proto.set_kind(Tokenizer::GPT2_BPE);
  std::vector<bool> made(n, false);
  int line_number = 0;
  for (size_t begin = 0; begin < vocab_bpe.size();) {
    size_t end = vocab_bpe.find('\n', begin);
    if (end == std::string_view::npos) end = vocab_bpe.size();
    std::string_view line = vocab_bpe.substr(begin, end - begin);
    begin = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // "#version: 0.2" on line 1 (later lines may start with '#': "# #" is a
    // merge), and the empty line after the final newline.
    if (line.empty() || (line_number == 1 && line.starts_with("#version"))) continue;
    const size_t space = line.find(' ');
    const std::string_view parts[2] = {line.substr(0, space), space == std::string_view::npos
                                                                  ? std::string_view()
                                                                  : line.substr(space + 1)};
    const auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vocab.bpe line ", line_number, " \"", absl::CHexEscape(std::string(line)), "\": ", why));
    };
    if (space == std::string_view::npos || parts[1].find(' ') != std::string_view::npos) {
      return bad("want two tokens separated by one space");
    }
    uint32_t pair[2];
    std::string joined;
    for (int k = 0; k < 2; ++k) {
      if (!ToBytes(parts[k], to_byte, &bytes)) {
        return bad("a token is not spelt in GPT-2's byte-to-unicode alphabet");
      }
      const auto it = ids.find(bytes);
      if (it == ids.end()) return bad(absl::StrCat("token ", k + 1, " is not in encoder.json"));
      pair[k] = it->second;
      joined += bytes;
    }
    const auto it = ids.find(joined);
    if (it == ids.end()) return bad("the joined token is not in encoder.json");
    made[it->second] = true;
    Tokenizer::Merge* merge = proto.add_merges();
    merge->set_left(pair[0]);
    merge->set_right(pair[1]);
  }
  for (size_t i = 0; i < n; ++i) {
    proto.add_vocab(vocab[i]);
    if (vocab[i].size() > 1 && !made[i]) proto.add_special_ids(static_cast<uint32_t>(i));
  }
  if (absl::Status s = CheckSpecialTokens(proto, spelling); !s.ok()) return s;
  return proto;
}

}  // namespace dropk
