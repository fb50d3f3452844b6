#include "trainer/data_checksums.h"

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <set>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoint/crc32c.h"
#include "trainer/prepare_data.h"
#include "trainer/tokenizer_file.h"

namespace dropk {
namespace {

constexpr char kPrepareAgain[] = "run `dropk data prepare` again to write the data anew";

std::string FileName(const TokenFile& file) {
  return std::filesystem::path(file.path()).filename().string();
}

std::string Hex(uint32_t crc) { return absl::StrFormat("%08x", crc); }

// `names` for a one-line message: all of a few, the first of many.
template <typename Names>
std::string FewNames(const Names& names) {
  constexpr size_t kMaxListed = 4;
  if (names.size() <= kMaxListed) return absl::StrJoin(names, ", ");
  std::vector<std::string> first(names.begin(), std::next(names.begin(), kMaxListed));
  return absl::StrCat(absl::StrJoin(first, ", "), " and ", names.size() - kMaxListed, " more");
}

// The CRC32C of all of `file`'s bytes, header and tokens, with *tokens_crc
// extended over its tokens alone on the way: one pass over the file, in
// chunks that are still in cache for the second CRC.
uint32_t FileCrcExtendingTokensCrc(const TokenFile& file, uint32_t* tokens_crc) {
  const std::span<const uint8_t> bytes = file.file_bytes();
  const std::span<const uint8_t> tokens = file.token_bytes();
  const size_t tokens_at = static_cast<size_t>(tokens.data() - bytes.data());
  uint32_t crc = crc32c::Value(bytes.data(), tokens_at);
  constexpr size_t kChunk = size_t{1} << 16;
  for (size_t at = 0; at < tokens.size(); at += kChunk) {
    const size_t n = std::min(kChunk, tokens.size() - at);
    crc = crc32c::Extend(crc, tokens.data() + at, n);
    *tokens_crc = crc32c::Extend(*tokens_crc, tokens.data() + at, n);
  }
  const size_t tokens_end = tokens_at + tokens.size();
  return crc32c::Extend(crc, bytes.data() + tokens_end, bytes.size() - tokens_end);
}

// Checks each of `files` against the CRC32C `record` holds for its name, and
// that the names read are exactly those recorded; extends *tokens_crc over
// their tokens, in order.
absl::Status VerifyFileChecksums(const PreparedDataRecord& record,
                                 const std::vector<const TokenFile*>& files, uint32_t* tokens_crc) {
  std::vector<std::string> recorded_names;  // sorted, as the map is
  for (const auto& [name, crc] : record.file_checksums) recorded_names.push_back(name);
  std::set<std::string> unread(recorded_names.begin(), recorded_names.end());
  for (const TokenFile* file : files) {
    const std::string name = FileName(*file);
    const auto recorded = record.file_checksums.find(name);
    if (recorded == record.file_checksums.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file '", file->path(), "' is not one of the files ",
                       record.tokenizer_path, " records for its preparation (",
                       FewNames(recorded_names), "): a file put there by hand?; ", kPrepareAgain));
    }
    unread.erase(name);
    const uint32_t crc = FileCrcExtendingTokensCrc(*file, tokens_crc);
    if (crc != recorded->second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file '", file->path(), "' does not match its checksum recorded in ",
          record.tokenizer_path, " when it was prepared (CRC32C ", Hex(recorded->second),
          " recorded, ", Hex(crc), " now): it changed since; ", kPrepareAgain));
    }
  }
  if (!unread.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(record.tokenizer_path, " records token file(s) ", FewNames(unread),
                     " of its preparation that are missing (deleted?); ", kPrepareAgain));
  }
  return absl::OkStatus();
}

// Checks all tokens against the dataset id alone (data prepared before
// token_files). The --shard-tokens of the preparation is the size of a
// first shard where a split has several; where neither has, only the
// default is likely, and is assumed.
absl::Status VerifyDatasetId(const PreparedDataRecord& record, const TextTokenizer& tokenizer,
                             const TokenDataset& train, const TokenDataset& val,
                             uint32_t tokens_crc) {
  bool shard_tokens_known = true;
  uint64_t shard_tokens = kDefaultShardTokens;
  if (train.files().size() > 1) {
    shard_tokens = train.files().front().size();
  } else if (val.files().size() > 1) {
    shard_tokens = val.files().front().size();
  } else {
    shard_tokens_known = false;
  }
  absl::StatusOr<std::string> tokenizer_bytes =
      TokenizerFileBytes(tokenizer, 0, record.tokenizer_path);
  if (!tokenizer_bytes.ok()) return tokenizer_bytes.status();
  if (DatasetId(tokens_crc, *tokenizer_bytes, train.size(), shard_tokens) == record.dataset_id) {
    return absl::OkStatus();
  }
  const std::string caveat =
      shard_tokens_known
          ? ""
          : absl::StrCat(" (or it was prepared with a --shard-tokens other than ",
                         kDefaultShardTokens, ", which this tokenizer.pb does not record)");
  return absl::InvalidArgumentError(absl::StrCat(
      "the token files ", train.name(), " and ", val.name(),
      " do not match the dataset id (a checksum of their tokens) recorded in ",
      record.tokenizer_path, " when they were prepared: one changed since", caveat,
      "; this tokenizer.pb, from an older dropk, records no per-file checksum to name it; ",
      kPrepareAgain));
}

}  // namespace

uint32_t DatasetId(uint32_t tokens_crc, const std::string& tokenizer_bytes, uint64_t n_train,
                   uint64_t shard_tokens) {
  uint32_t crc = crc32c::Extend(tokens_crc, tokenizer_bytes.data(), tokenizer_bytes.size());
  for (const uint64_t v : {n_train, shard_tokens}) {
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(v >> (8 * i));
    crc = crc32c::Extend(crc, le, sizeof(le));
  }
  return crc == 0 ? 1 : crc;
}

uint32_t TokensCrc(const TokenDataset& train, const TokenDataset& val) {
  uint32_t crc = 0;
  for (const TokenDataset* split : {&train, &val}) {
    for (const TokenFile& file : split->files()) {
      const std::span<const uint8_t> bytes = file.token_bytes();
      crc = crc32c::Extend(crc, bytes.data(), bytes.size());
    }
  }
  return crc;
}

absl::Status VerifyPreparedData(const PreparedDataRecord& record, const TextTokenizer& tokenizer,
                                const TokenDataset& train, const TokenDataset& val,
                                uint32_t* tokens_crc) {
  *tokens_crc = 0;
  if (!record.file_checksums.empty()) {
    std::vector<const TokenFile*> files;
    for (const TokenDataset* split : {&train, &val}) {
      for (const TokenFile& file : split->files()) files.push_back(&file);
    }
    return VerifyFileChecksums(record, files, tokens_crc);
  }
  *tokens_crc = TokensCrc(train, val);
  if (record.dataset_id == 0) return absl::OkStatus();
  return VerifyDatasetId(record, tokenizer, train, val, *tokens_crc);
}

}  // namespace dropk
