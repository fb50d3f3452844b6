#include "trainer/tokenizer_file.h"

#include "absl/strings/str_cat.h"

namespace dropk {
namespace {
// The largest valid tokenizer: 2^24 code points of at most 5 bytes each
// (varint plus tag), with room to spare.
constexpr uint64_t kMaxTokenizerBytes = uint64_t{128} << 20;
}  // namespace

absl::Status SaveTokenizer(const TextTokenizer& tokenizer, const std::string& path, Env* env) {
  std::string bytes;
  if (!tokenizer.proto().SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("cannot serialize the tokenizer for '", path, "'"));
  }
  return ReplaceFileAtomically(
      env, path, [&bytes](WritableFile& file) { return file.Append(bytes.data(), bytes.size()); });
}

absl::StatusOr<TextTokenizer> LoadTokenizer(const std::string& path, Env* env) {
  absl::StatusOr<std::string> bytes = ReadSmallFile(env, path, kMaxTokenizerBytes);
  if (!bytes.ok()) return bytes.status();
  Tokenizer proto;
  if (!proto.ParseFromString(*bytes)) {
    return absl::DataLossError(
        absl::StrCat("tokenizer file '", path, "' is not a dropk.Tokenizer binary proto"));
  }
  absl::StatusOr<TextTokenizer> tokenizer = TextTokenizer::FromProto(proto);
  if (!tokenizer.ok()) {
    return absl::DataLossError(
        absl::StrCat("tokenizer file '", path, "': ", tokenizer.status().message()));
  }
  return tokenizer;
}

}  // namespace dropk
