#include "trainer/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/env.h"

namespace dropk {
namespace {

std::string ErrnoMessage(int err) { return std::generic_category().message(err); }

void StoreLe(uint64_t value, int width, uint8_t* out) {
  for (int i = 0; i < width; ++i) out[i] = static_cast<uint8_t>(value >> (8 * i));
}

uint64_t LoadLe(const uint8_t* in, int width) {
  uint64_t value = 0;
  for (int i = 0; i < width; ++i) value |= static_cast<uint64_t>(in[i]) << (8 * i);
  return value;
}

// Appends the header and the tokens of a token file to `file`. Tokens are
// encoded a chunk at a time so a large corpus needs no second full-size
// buffer.
absl::Status WriteContents(WritableFile& file, std::span<const int32_t> tokens, int vocab_size,
                           int width, uint32_t dataset_id) {
  const std::array<uint8_t, kTokenFileHeaderSize> header =
      TokenFileHeader(vocab_size, tokens.size(), dataset_id);
  if (absl::Status s = file.Append(header.data(), header.size()); !s.ok()) return s;

  constexpr size_t kChunkTokens = 1 << 16;
  std::vector<uint8_t> chunk(kChunkTokens * width);
  for (size_t start = 0; start < tokens.size(); start += kChunkTokens) {
    const size_t n = std::min(kChunkTokens, tokens.size() - start);
    for (size_t i = 0; i < n; ++i) {
      StoreLe(static_cast<uint32_t>(tokens[start + i]), width, &chunk[i * width]);
    }
    if (absl::Status s = file.Append(chunk.data(), n * width); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

std::array<uint8_t, kTokenFileHeaderSize> TokenFileHeader(int vocab_size, uint64_t count,
                                                          uint32_t dataset_id) {
  std::array<uint8_t, kTokenFileHeaderSize> header = {};
  std::memcpy(header.data(), kTokenFileMagic, sizeof(kTokenFileMagic));
  StoreLe(kTokenFileVersion, 4, header.data() + 8);
  StoreLe(static_cast<uint32_t>(vocab_size), 4, header.data() + 12);
  StoreLe(static_cast<uint32_t>(TokenWidthFor(vocab_size)), 4, header.data() + 16);
  StoreLe(dataset_id, 4, header.data() + 20);
  StoreLe(count, 8, header.data() + 24);
  return header;
}

int TokenWidthFor(int vocab_size) {
  if (vocab_size <= 256) return 1;
  if (vocab_size <= 65536) return 2;
  return 4;
}

absl::Status WriteTokenFile(const std::string& path, std::span<const int32_t> tokens,
                            int vocab_size, uint32_t dataset_id) {
  if (vocab_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file '", path, "': vocab_size ", vocab_size, " must be >= 1"));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token file '", path, "': token ", i, " = ",
                                                     tokens[i], " is outside [0, ", vocab_size,
                                                     ")"));
    }
  }
  const int width = TokenWidthFor(vocab_size);
  return ReplaceFileAtomically(Env::Default(), path, [&](WritableFile& file) {
    return WriteContents(file, tokens, vocab_size, width, dataset_id);
  });
}

absl::StatusOr<TokenFile> TokenFile::Open(const std::string& path) {
  const auto corrupt = [&path](const std::string& problem) {
    return absl::DataLossError(absl::StrCat("token file '", path, "': ", problem));
  };
  // O_NONBLOCK: opening a FIFO would wait for a writer, maybe for ever; the
  // fstat below refuses it. A regular file ignores the flag.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    const std::string message =
        absl::StrCat("cannot open token file '", path, "': ", ErrnoMessage(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::UnavailableError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("token file '", path, "' is not a regular file"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kTokenFileHeaderSize) {
    ::close(fd);
    return corrupt(absl::StrCat("file is ", file_size, " bytes, shorter than the ",
                                kTokenFileHeaderSize, "-byte header"));
  }
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_err = errno;
  ::close(fd);  // the mapping keeps the file open
  if (mapping == MAP_FAILED) {
    return absl::UnavailableError(
        absl::StrCat("cannot mmap token file '", path, "': ", ErrnoMessage(mmap_err)));
  }
  TokenFile file;  // owns the mapping from here on, so every return unmaps it
  file.path_ = path;
  file.mapping_ = mapping;
  file.mapping_size_ = file_size;
  const uint8_t* bytes = static_cast<const uint8_t*>(mapping);

  if (std::memcmp(bytes, kTokenFileMagic, sizeof(kTokenFileMagic)) != 0) {
    return corrupt(
        absl::StrCat("bad magic \"",
                     absl::CHexEscape(absl::string_view(reinterpret_cast<const char*>(bytes), 8)),
                     "\", want \"DROPKTOK\" (not a dropk token file)"));
  }
  const uint64_t version = LoadLe(bytes + 8, 4);
  const uint64_t vocab_size = LoadLe(bytes + 12, 4);
  const uint64_t width = LoadLe(bytes + 16, 4);
  const uint64_t count = LoadLe(bytes + 24, 8);
  if (version != kTokenFileVersion) {
    return corrupt(absl::StrCat("unsupported version ", version, " (this build reads version ",
                                kTokenFileVersion, ")"));
  }
  if (width != 1 && width != 2 && width != 4) {
    return corrupt(absl::StrCat("token width ", width, " is not 1, 2 or 4"));
  }
  if (vocab_size == 0) return corrupt("vocab_size is 0");
  if (vocab_size > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
    return corrupt(absl::StrCat("vocab_size ", vocab_size, " exceeds 2^31 - 1"));
  }
  // count comes from the file, so count * width may overflow: compare by
  // division first.
  const uint64_t payload = file_size - kTokenFileHeaderSize;
  if (count > payload / width || count * width != payload) {
    const std::string expected =
        count > (std::numeric_limits<uint64_t>::max() - kTokenFileHeaderSize) / width
            ? "more than 2^64"
            : absl::StrCat(kTokenFileHeaderSize + count * width);
    return corrupt(absl::StrCat("file size is ", file_size, " bytes but the header's count ", count,
                                " of ", width, "-byte tokens needs ", expected, " bytes"));
  }
  file.tokens_ = bytes + kTokenFileHeaderSize;
  file.count_ = count;
  file.vocab_size_ = static_cast<int>(vocab_size);
  file.width_ = static_cast<int>(width);
  file.dataset_id_ = static_cast<uint32_t>(LoadLe(bytes + 20, 4));

  // A width that cannot represent vocab_size or more needs no scan.
  if (width == 4 || vocab_size < (uint64_t{1} << (8 * width))) {
    for (size_t i = 0; i < count; ++i) {
      const uint64_t token = LoadLe(file.tokens_ + i * width, static_cast<int>(width));
      if (token >= vocab_size) {
        return corrupt(absl::StrCat("token ", i, " = ", token, " is >= vocab_size ", vocab_size));
      }
    }
  }
  return file;
}

TokenFile::TokenFile(TokenFile&& other) noexcept { *this = std::move(other); }

TokenFile& TokenFile::operator=(TokenFile&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_size_ = std::exchange(other.mapping_size_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    count_ = std::exchange(other.count_, 0);
    vocab_size_ = std::exchange(other.vocab_size_, 0);
    width_ = std::exchange(other.width_, 0);
    dataset_id_ = std::exchange(other.dataset_id_, 0);
  }
  return *this;
}

TokenFile::~TokenFile() { Unmap(); }

void TokenFile::Unmap() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
  mapping_ = nullptr;
}

int32_t TokenFile::operator[](size_t i) const {
  return static_cast<int32_t>(LoadLe(tokens_ + i * width_, width_));
}

void TokenFile::Read(size_t offset, size_t n, int32_t* out) const {
  // One loop per width so the inner loop has a constant width to unroll.
  const uint8_t* in = tokens_ + offset * width_;
  switch (width_) {
    case 1:
      for (size_t i = 0; i < n; ++i) out[i] = in[i];
      break;
    case 2:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(LoadLe(in + 2 * i, 2));
      break;
    default:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(LoadLe(in + 4 * i, 4));
      break;
  }
}

}  // namespace dropk
