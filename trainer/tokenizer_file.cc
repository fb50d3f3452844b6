#include "trainer/tokenizer_file.h"

#include "absl/strings/str_cat.h"

namespace dropk {
namespace {
// The largest valid tokenizer: 2^24 code points of at most 5 bytes each
// (varint plus tag), with room to spare.
constexpr uint64_t kMaxTokenizerBytes = uint64_t{128} << 20;
}  // namespace

absl::StatusOr<std::string> TokenizerFileBytes(
    const TextTokenizer& tokenizer, uint32_t dataset_id, const std::string& path,
    const std::map<std::string, uint32_t>& file_checksums) {
  Tokenizer proto = tokenizer.proto();
  proto.set_dataset_id(dataset_id);
  for (const auto& [name, crc] : file_checksums) {
    Tokenizer::TokenFileChecksum* entry = proto.add_token_files();
    entry->set_name(name);
    entry->set_crc32c(crc);
  }
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("cannot serialize the tokenizer for '", path, "'"));
  }
  return bytes;
}

absl::Status SaveTokenizer(const TextTokenizer& tokenizer, const std::string& path, Env* env) {
  absl::StatusOr<std::string> bytes = TokenizerFileBytes(tokenizer, 0, path);
  if (!bytes.ok()) return bytes.status();
  return ReplaceFileAtomically(env, path, [&bytes](WritableFile& file) {
    return file.Append(bytes->data(), bytes->size());
  });
}

absl::StatusOr<TextTokenizer> LoadTokenizer(const std::string& path, Env* env, uint32_t* dataset_id,
                                            std::map<std::string, uint32_t>* file_checksums) {
  absl::StatusOr<std::string> bytes = ReadSmallFile(env, path, kMaxTokenizerBytes);
  if (!bytes.ok()) return bytes.status();
  Tokenizer proto;
  if (!proto.ParseFromString(*bytes)) {
    return absl::DataLossError(
        absl::StrCat("tokenizer file '", path, "' is not a dropk.Tokenizer binary proto"));
  }
  if (dataset_id != nullptr) *dataset_id = proto.dataset_id();
  if (file_checksums != nullptr) {
    file_checksums->clear();
    for (const Tokenizer::TokenFileChecksum& entry : proto.token_files()) {
      file_checksums->emplace(entry.name(), entry.crc32c());
    }
  }
  proto.clear_dataset_id();
  proto.clear_token_files();
  absl::StatusOr<TextTokenizer> tokenizer = TextTokenizer::FromProto(proto);
  if (!tokenizer.ok()) {
    return absl::DataLossError(
        absl::StrCat("tokenizer file '", path, "': ", tokenizer.status().message()));
  }
  return tokenizer;
}

}  // namespace dropk
