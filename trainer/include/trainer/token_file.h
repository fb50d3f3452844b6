// Token files (train.bin, val.bin): a fixed 32-byte header followed by the
// tokens, memory-mapped by the data loader.
//
//   offset size  field
//   0      8     magic "DROPKTOK"
//   8      4     version (1)
//   12     4     vocab_size (>= 1)
//   16     4     token_width: bytes per token, 1 if vocab_size <= 256,
//                2 if <= 65536, else 4
//   20     4     dataset_id: the same in every token file (and in the
//                tokenizer.pb) of one `dropk data prepare` run, never 0;
//                0 means unknown (files written before ids, or by
//                WriteTokenFile without one)
//   24     8     count: number of tokens
//   32     count * token_width bytes of tokens
//
// Every integer, header and tokens alike, is unsigned little-endian.
#ifndef DROPK_TRAINER_TOKEN_FILE_H_
#define DROPK_TRAINER_TOKEN_FILE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dropk {

inline constexpr char kTokenFileMagic[8] = {'D', 'R', 'O', 'P', 'K', 'T', 'O', 'K'};
inline constexpr uint32_t kTokenFileVersion = 1;
inline constexpr size_t kTokenFileHeaderSize = 32;

// Bytes per token for a vocabulary of `vocab_size` (>= 1): 1, 2 or 4.
int TokenWidthFor(int vocab_size);

// The 32-byte header of a token file of `count` tokens of a vocabulary of
// `vocab_size` (>= 1) stamped with `dataset_id` (0: unknown), for writers
// that stream the tokens themselves.
std::array<uint8_t, kTokenFileHeaderSize> TokenFileHeader(int vocab_size, uint64_t count,
                                                          uint32_t dataset_id = 0);

// Writes `tokens` (each in [0, vocab_size)) as a token file at `path`,
// atomically: written to path + ".tmp", fsynced, then renamed over `path`.
// InvalidArgument for vocab_size < 1 or a token out of range (naming its
// index); I/O errors name the path. Blocks until the data is on disk.
// `dataset_id` goes into the header (0: unknown).
absl::Status WriteTokenFile(const std::string& path, std::span<const int32_t> tokens,
                            int vocab_size, uint32_t dataset_id = 0);

// A read-only, memory-mapped token file. Open validates the whole file, so
// every token a TokenFile hands out is in [0, vocab_size()). Movable, not
// copyable; the mapping lives until destruction. Const methods are safe to
// call from many threads at once.
class TokenFile {
 public:
  // Maps and validates the token file at `path`. Errors name the path and the
  // problem: missing file, shorter than the header, wrong magic, unsupported
  // version, token width not 1/2/4, vocab_size 0, file size that disagrees
  // with count * width, or a token >= vocab_size (naming its index).
  static absl::StatusOr<TokenFile> Open(const std::string& path);

  TokenFile(TokenFile&& other) noexcept;
  TokenFile& operator=(TokenFile&& other) noexcept;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  ~TokenFile();

  const std::string& path() const { return path_; }
  // Number of tokens.
  size_t size() const { return count_; }
  int vocab_size() const { return vocab_size_; }
  // Bytes per token on disk: 1, 2 or 4.
  int token_width() const { return width_; }
  // The header's dataset_id: files of one preparation share it; 0 unknown.
  uint32_t dataset_id() const { return dataset_id_; }

  // Token i. Precondition: i < size().
  int32_t operator[](size_t i) const;
  // The tokens as stored (size() * token_width() bytes, after the header).
  std::span<const uint8_t> token_bytes() const { return {tokens_, count_ * width_}; }
  // The whole file as stored, header and tokens.
  std::span<const uint8_t> file_bytes() const {
    return {static_cast<const uint8_t*>(mapping_), mapping_size_};
  }

  // Copies tokens [offset, offset + n) to out[0, n). Precondition:
  // offset + n <= size() and out holds n values.
  void Read(size_t offset, size_t n, int32_t* out) const;

 private:
  TokenFile() = default;
  void Unmap();

  std::string path_;
  void* mapping_ = nullptr;  // whole file, from mmap; nullptr when moved from
  size_t mapping_size_ = 0;
  const uint8_t* tokens_ = nullptr;  // mapping_ + kTokenFileHeaderSize
  size_t count_ = 0;
  int vocab_size_ = 0;
  int width_ = 0;
  uint32_t dataset_id_ = 0;
};

}  // namespace dropk

#endif  // DROPK_TRAINER_TOKEN_FILE_H_
