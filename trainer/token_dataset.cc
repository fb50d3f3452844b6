#include "trainer/token_dataset.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dropk {

std::string ShardFileName(const std::string& split, int index) {
  return absl::StrFormat("%s-%05d.bin", split, index);
}

std::optional<int> ShardIndex(const std::string& name, const std::string& split) {
  const std::string prefix = split + "-";
  constexpr std::string_view kSuffix = ".bin";
  if (!name.starts_with(prefix) || !name.ends_with(kSuffix)) return std::nullopt;
  const std::string_view digits =
      std::string_view(name).substr(prefix.size(), name.size() - prefix.size() - kSuffix.size());
  if (digits.size() < 5 || !std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit)) {
    return std::nullopt;
  }
  int index = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;  // > INT_MAX
  // Only the name ShardFileName writes: "train-000001.bin" is not shard 1.
  if (ShardFileName(split, index) != name) return std::nullopt;
  return index;
}

bool IsShardName(const std::string& name, const std::string& split) {
  return ShardIndex(name, split).has_value();
}

absl::Status MixedPreparationsError(const std::string& a, uint32_t a_id, const std::string& b,
                                    uint32_t b_id) {
  // An id of 0 is a file written before ids existed: still another run.
  const auto id = [](uint32_t v) { return v == 0 ? std::string("none") : absl::StrCat(v); };
  return absl::InvalidArgumentError(
      absl::StrCat("'", a, "' (dataset id ", id(a_id), ") and '", b, "' (dataset id ", id(b_id),
                   ") come from different `dropk data prepare` runs (one was interrupted?); "
                   "run `dropk data prepare` again"));
}

absl::StatusOr<TokenDataset> TokenDataset::Open(const std::string& dir, const std::string& split) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string single = (fs::path(dir) / (split + ".bin")).string();
  const bool has_single = fs::exists(single, ec);
  const bool has_shards = fs::exists(fs::path(dir) / ShardFileName(split, 0), ec);
  if (has_single && has_shards) {
    return absl::FailedPreconditionError(
        absl::StrCat("data directory '", dir, "' holds both ", split, ".bin and ",
                     ShardFileName(split, 0), "; remove one form, or prepare the data again"));
  }
  TokenDataset data;
  std::vector<std::string> paths;
  if (has_shards) {
    data.name_ = (fs::path(dir) / (split + "-*.bin")).string();
    for (int i = 0;; ++i) {
      const fs::path path = fs::path(dir) / ShardFileName(split, i);
      if (!fs::exists(path, ec)) break;
      paths.push_back(path.string());
    }
    // A shard numbered past the first gap would be silently left out.
    // The range-for's increment throws on an error; increment(ec) does not.
    size_t shard_files = 0;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      shard_files += IsShardName(it->path().filename().string(), split);
    }
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot list data directory '", dir, "': ", ec.message()));
    }
    if (shard_files != paths.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat("data directory '", dir, "' has ", shard_files, " ", split, " shards but ",
                       ShardFileName(split, static_cast<int>(paths.size())), " is missing"));
    }
  } else {
    // Also the path of the "missing file" error when neither form exists.
    data.name_ = single;
    paths.push_back(single);
  }
  for (const std::string& path : paths) {
    absl::StatusOr<TokenFile> file = TokenFile::Open(path);
    if (!file.ok()) return file.status();
    if (!data.files_.empty() && file->dataset_id() != data.files_.front().dataset_id()) {
      return MixedPreparationsError(data.files_.front().path(), data.files_.front().dataset_id(),
                                    path, file->dataset_id());
    }
    if (!data.files_.empty() && file->vocab_size() != data.files_.front().vocab_size()) {
      return absl::FailedPreconditionError(
          absl::StrCat("token file '", path, "': vocab_size ", file->vocab_size(), " differs from ",
                       data.files_.front().path(), "'s ", data.files_.front().vocab_size()));
    }
    data.starts_.push_back(data.size_);
    data.size_ += file->size();
    data.files_.push_back(std::move(*file));
  }
  return data;
}

TokenDataset TokenDataset::FromFile(TokenFile file) {
  TokenDataset data;
  data.name_ = file.path();
  data.size_ = file.size();
  data.starts_.push_back(0);
  data.files_.push_back(std::move(file));
  return data;
}

std::vector<std::pair<size_t, size_t>> IdenticalTokenFiles(
    const std::vector<const TokenFile*>& files) {
  // Bytes read at each of three places to sort files into look-alike
  // groups, one pass over the files; only files in one group are compared
  // whole.
  constexpr size_t kProbeBytes = 4096;
  std::map<std::pair<size_t, size_t>, std::vector<size_t>> groups;  // (length, probe hash)
  for (size_t i = 0; i < files.size(); ++i) {
    const std::span<const uint8_t> bytes = files[i]->token_bytes();
    const size_t n = std::min(kProbeBytes, bytes.size());
    std::string probes;
    for (const size_t at : {size_t{0}, (bytes.size() - n) / 2, bytes.size() - n}) {
      probes.append(reinterpret_cast<const char*>(bytes.data()) + at, n);
    }
    groups[{bytes.size(), std::hash<std::string>()(probes)}].push_back(i);
  }
  std::vector<std::pair<size_t, size_t>> identical;
  for (const auto& [key, members] : groups) {
    for (size_t a = 0; a < members.size(); ++a) {
      for (size_t b = a + 1; b < members.size(); ++b) {
        const std::span<const uint8_t> x = files[members[a]]->token_bytes();
        const std::span<const uint8_t> y = files[members[b]]->token_bytes();
        if (std::memcmp(x.data(), y.data(), x.size()) == 0) {
          identical.emplace_back(members[a], members[b]);
        }
      }
    }
  }
  std::sort(identical.begin(), identical.end());
  return identical;
}

int32_t TokenDataset::operator[](size_t i) const {
  const size_t f = std::upper_bound(starts_.begin(), starts_.end(), i) - starts_.begin() - 1;
  return files_[f][i - starts_[f]];
}

void TokenDataset::Read(size_t offset, size_t n, int32_t* out) const {
  size_t f = std::upper_bound(starts_.begin(), starts_.end(), offset) - starts_.begin() - 1;
  while (n > 0) {
    const size_t local = offset - starts_[f];
    const size_t take = std::min(n, files_[f].size() - local);
    files_[f].Read(local, take, out);
    out += take;
    offset += take;
    n -= take;
    ++f;
  }
}

}  // namespace dropk
