#include "trainer/token_dataset.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dropk {

bool IsShardName(const std::string& name, const std::string& split) {
  const std::string example = ShardFileName(split, 0);
  if (name.size() != example.size() || !name.starts_with(split + "-") || !name.ends_with(".bin")) {
    return false;
  }
  for (size_t i = split.size() + 1; i < name.size() - 4; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return true;
}

std::string ShardFileName(const std::string& split, int index) {
  return absl::StrFormat("%s-%05d.bin", split, index);
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
    size_t shard_files = 0;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      shard_files += IsShardName(entry.path().filename().string(), split);
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
