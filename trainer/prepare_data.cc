#include "trainer/prepare_data.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/cut_for_message.h"
#include "base/number_text.h"
#include "base/path_status.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/env.h"
#include "model/gpt2_vocab_files.h"
#include "model/tokenizer.h"
#include "model/utf8.h"
#include "trainer/data_checksums.h"
#include "trainer/run_directory_lock.h"
#include "trainer/token_dataset.h"
#include "trainer/token_file.h"
#include "trainer/tokenizer_file.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

// A chunk may grow to this many times chunk_bytes while looking for a place
// to cut it (see FindCut).
constexpr size_t kMaxChunkGrowth = 8;
// Bytes copied at a time from the token spool into the split files.
constexpr size_t kCopyBytes = 4 << 20;
constexpr char kSpoolFile[] = ".prepare-tokens.tmp";
// The largest encoder.json / vocab.bpe accepted (GPT-2's are 1 MB and 0.5 MB).
constexpr uint64_t kMaxGpt2FileBytes = 64 << 20;

// Whether `path` is a file this preparation writes into `out_dir` (token
// files, the tokenizer, their temporaries, the spool). Preparing a directory
// into itself a second time read the first run's train.bin and val.bin as
// corpus text (silently, for byte and gpt2).
bool IsPrepareOutput(const fs::path& path, const fs::path& out_dir) {
  std::error_code ec;
  const fs::path parent = fs::weakly_canonical(fs::absolute(path, ec).parent_path(), ec);
  if (ec || parent != fs::weakly_canonical(fs::absolute(out_dir, ec), ec) || ec) return false;
  std::string name = path.filename().string();
  if (name == kSpoolFile || name == kPrepareLock.file_name) return true;
  if (name.ends_with(".tmp")) name.resize(name.size() - 4);  // ReplaceFileAtomically's
  return name == kTokenizerFile || name == kTrainTokensFile || name == kValTokensFile ||
         IsShardName(name, "train") || IsShardName(name, "val");
}

// Whether the file at `path` begins with a token file's magic (DROPKTOK);
// false when it is shorter or cannot be read.
bool StartsWithTokenFileMagic(Env* env, const std::string& path) {
  char magic[sizeof(kTokenFileMagic)] = {};
  return env->ReadFileRange(path, 0, sizeof(magic), magic).ok() &&
         std::equal(magic, magic + sizeof(magic), kTokenFileMagic);
}

// Whether `path` is prepared data rather than text: a token file (by its
// magic, whatever its name), the tokenizer.pb beside one, or the lock file
// of a preparation or a training run (which names its holder). A corpus
// directory holding an earlier preparation in a subdirectory was read whole,
// its token files as text (silently for byte and gpt2).
bool IsPreparedData(const fs::path& path) {
  if (path.filename() == kPrepareLock.file_name || path.filename() == kTrainingLock.file_name) {
    return true;
  }
  if (StartsWithTokenFileMagic(Env::Default(), path.string())) return true;
  if (path.filename() != kTokenizerFile) return false;
  std::error_code ec;
  for (const std::string& name : {std::string(kTrainTokensFile), std::string(kValTokensFile),
                                  ShardFileName("train", 0), ShardFileName("val", 0)}) {
    if (fs::exists(path.parent_path() / name, ec)) return true;
  }
  return false;
}

// What a file that is neither a regular file nor a directory is, for a
// message: "a FIFO (named pipe)", "a character device", ... A FIFO read
// "is not a regular file or a directory" alone, saying what it is not.
std::string SpecialFileKind(fs::file_type type) {
  switch (type) {
    case fs::file_type::fifo: return "a FIFO (named pipe)";
    case fs::file_type::character: return "a character device";
    case fs::file_type::block: return "a block device";
    case fs::file_type::socket: return "a socket";
    default: return "a special file";
  }
}

// The regular files of `inputs`: files as given, directories walked
// recursively, their files sorted by path. Outputs of a preparation into
// `out_dir`, and prepared data anywhere (IsPreparedData), found in a
// directory are left out; named, they are refused.
absl::StatusOr<std::vector<std::string>> ExpandInputs(const std::vector<std::string>& inputs,
                                                      const std::string& out_dir) {
  if (inputs.empty()) return absl::InvalidArgumentError("no input files given");
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    // A symbolic link loop or a directory that may not be searched is the
    // user's to fix (exit 2; it was 1, as for a failing disk).
    absl::StatusOr<fs::file_status> looked_up =
        PathStatus(input, absl::StrCat("cannot access input '", input, "'"));
    if (!looked_up.ok()) return looked_up.status();
    const fs::file_status status = *looked_up;
    std::error_code ec;
    if (!fs::exists(status)) {
      return absl::NotFoundError(absl::StrCat("input file '", input, "' does not exist"));
    }
    if (fs::is_regular_file(status)) {
      if (IsPrepareOutput(input, out_dir)) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", input, "' is a file this preparation writes (--out ", out_dir,
                         "); name the text files, or another --out"));
      }
      if (IsPreparedData(input)) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", input, "' is prepared data (a token file or its tokenizer), "
                         "not text; name the text files"));
      }
      files.push_back(input);
      continue;
    }
    if (!fs::is_directory(status)) {
      return absl::InvalidArgumentError(absl::StrCat("input '", input, "' is ",
                                                     SpecialFileKind(status.type()),
                                                     ", not a regular file or a directory"));
    }
    std::vector<std::string> found;
    size_t prepared = 0;  // regular files left out as prepared data
    // The entry last seen: when stepping past it fails, it is usually the
    // subdirectory that could not be opened, and the error names it.
    fs::path last;
    for (auto it = fs::recursive_directory_iterator(input, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      last = it->path();
      if (!it->is_regular_file(ec)) continue;
      if (IsPrepareOutput(it->path(), out_dir) || IsPreparedData(it->path())) {
        ++prepared;
      } else {
        found.push_back(it->path().string());
      }
    }
    if (ec) {
      std::error_code ignored;
      const std::string where =
          !last.empty() && fs::is_directory(last, ignored)
              ? absl::StrCat("directory '", last.string(), "' (in input directory '", input, "')")
              : absl::StrCat("input directory '", input, "'");
      return absl::UnavailableError(absl::StrCat("cannot list ", where, ": ", ec.message()));
    }
    // A directory of prepared data alone read "holds no regular files",
    // though it held train.bin and tokenizer.pb.
    if (found.empty() && prepared > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input directory '", input, "' holds no text: its ", prepared,
          " file(s) are prepared data (token files, tokenizer.pb, lock files), which are left "
          "out; name the directory of the text files"));
    }
    if (found.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input directory '", input, "' holds no regular files"));
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

// The bytes input file `path` holds: its size, or, where the file system
// gives it as 0 (a /proc or /sys file, whose size is not known before it is
// read), the bytes read from it to its end. A file of such a size read "is
// empty" though it held text. Unavailable naming it when it cannot be read.
absl::StatusOr<uint64_t> InputFileBytes(const std::string& path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (!ec && size > 0) return size;
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    return absl::UnavailableError(absl::StrCat("cannot open input file '", path,
                                               "': ", std::generic_category().message(errno)));
  }
  std::array<char, 1 << 16> buffer;
  uint64_t read = 0;
  while (in.read(buffer.data(), buffer.size()) || in.gcount() > 0) {
    read += static_cast<uint64_t>(in.gcount());
  }
  if (in.bad()) return absl::UnavailableError(absl::StrCat("cannot read input file '", path, "'"));
  return read;
}

bool IsVisibleAscii(char c) { return c > 0x20 && c < 0x7F; }
bool IsUtf8Continuation(char c) { return (static_cast<uint8_t>(c) & 0xC0) == 0x80; }

// The last position p in (0, text.size()) where text may be cut into
// text[0, p) and text[p, end) without changing its tokens; 0 when there is
// none.
// - GPT2_BPE: after a line break that has a visible ASCII character on each
//   side ("x\nY"). GPT-2's regex has no look-behind, and its only look-ahead
//   ((?!\S) after whitespace) sees the same thing either way: the '\n' is a
//   piece of its own whether or not the text continues, and matching resumes
//   at 'Y' in both cases.
// - CHAR: at a character boundary. BYTE: anywhere.
size_t FindCut(Tokenizer::Kind kind, std::string_view text) {
  if (text.size() < 2) return 0;
  switch (kind) {
    case Tokenizer::BYTE: return text.size() - 1;
    case Tokenizer::GPT2_BPE:
      for (size_t p = text.size() - 1; p >= 2; --p) {
        if (text[p - 1] == '\n' && IsVisibleAscii(text[p - 2]) && IsVisibleAscii(text[p])) {
          return p;
        }
      }
      return 0;
    default:
      for (size_t p = text.size() - 1; p > 0; --p) {
        if (!IsUtf8Continuation(text[p])) return p;
      }
      return 0;
  }
}

// A piece of one input file, cut where encoding it alone gives the same
// tokens as encoding the whole file.
struct Chunk {
  std::string text;
  size_t file = 0;      // index into the input files
  uint64_t offset = 0;  // of text[0] in the file
};

// Reads the input files one after another as chunks of about chunk_bytes
// (never spanning two files). Holds at most kMaxChunkGrowth * chunk_bytes.
class ChunkReader {
 public:
  ChunkReader(const std::vector<std::string>* files, Tokenizer::Kind kind, size_t chunk_bytes)
      : files_(files), kind_(kind), chunk_bytes_(chunk_bytes) {}

  // The next chunk, or false after the last one.
  absl::StatusOr<bool> Next(Chunk* chunk) {
    while (true) {
      if (!in_.is_open()) {
        if (file_ == files_->size()) return false;
        in_.open((*files_)[file_], std::ios::binary);
        if (!in_.is_open()) {
          return absl::UnavailableError(
              absl::StrCat("cannot open input file '", (*files_)[file_],
                           "': ", std::generic_category().message(errno)));
        }
        eof_ = false;
        offset_ = 0;
        buffer_.clear();
      }
      size_t target = chunk_bytes_;
      size_t cut = 0;
      while (true) {
        if (absl::Status s = FillTo(target); !s.ok()) return s;
        if (eof_) {
          cut = buffer_.size();
          break;
        }
        cut = FindCut(kind_, buffer_);
        if (cut > 0) break;
        if (target >= kMaxChunkGrowth * chunk_bytes_) {
          // No safe place in 8 chunks (text without line breaks): cut at a
          // character boundary; the tokens at this one place may differ
          // from encoding the file whole.
          cut = FindCut(Tokenizer::CHAR, buffer_);
          if (cut == 0) cut = buffer_.size();
          break;
        }
        target *= 2;
      }
      if (cut == 0) {  // the file is done
        in_.close();
        ++file_;
        continue;
      }
      chunk->text.assign(buffer_, 0, cut);
      chunk->file = file_;
      chunk->offset = offset_;
      buffer_.erase(0, cut);
      offset_ += cut;
      return true;
    }
  }

 private:
  // Reads until buffer_ holds `target` bytes or the file ends.
  absl::Status FillTo(size_t target) {
    while (!eof_ && buffer_.size() < target) {
      const size_t have = buffer_.size();
      buffer_.resize(target);
      in_.read(buffer_.data() + have, static_cast<std::streamsize>(target - have));
      buffer_.resize(have + static_cast<size_t>(in_.gcount()));
      if (in_.bad()) {
        return absl::UnavailableError(
            absl::StrCat("cannot read input file '", (*files_)[file_], "'"));
      }
      if (in_.eof()) eof_ = true;
    }
    return absl::OkStatus();
  }

  const std::vector<std::string>* files_;
  Tokenizer::Kind kind_;
  size_t chunk_bytes_;
  size_t file_ = 0;
  std::ifstream in_;
  bool eof_ = false;
  uint64_t offset_ = 0;  // of buffer_[0] in the current file
  std::string buffer_;
};

std::string Where(const std::vector<std::string>& files, const Chunk& chunk) {
  return absl::StrCat(
      "input file '", files[chunk.file], "'",
      chunk.offset > 0 ? absl::StrCat(" (from byte offset ", chunk.offset, ")") : "");
}

// CHAR: the distinct code points of every input (a first streaming pass).
absl::StatusOr<TextTokenizer> CharTokenizerOf(const std::vector<std::string>& files,
                                              size_t chunk_bytes) {
  ChunkReader reader(&files, Tokenizer::CHAR, chunk_bytes);
  std::vector<bool> seen(0x110000, false);
  Chunk chunk;
  while (true) {
    absl::StatusOr<bool> more = reader.Next(&chunk);
    if (!more.ok()) return more.status();
    if (!*more) break;
    // Invalid UTF-8 is placed by its offset in the file, not in the chunk:
    // "(from byte offset 1048575): invalid UTF-8 at byte offset 66843" left
    // the sum to the reader, and the chunk's offset read as the place.
    if (const std::optional<size_t> bad = FirstNonUtf8Byte(chunk.text); bad.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input file '", files[chunk.file], "': invalid UTF-8 at byte offset ",
          chunk.offset + *bad, " (byte 0x",
          absl::AsciiStrToUpper(absl::StrCat(
              absl::Hex(static_cast<uint8_t>(chunk.text[*bad]), absl::kZeroPad2))),
          ")"));
    }
    absl::StatusOr<TextTokenizer> part = TextTokenizer::FromCorpus(Tokenizer::CHAR, chunk.text);
    if (!part.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(files, chunk), ": ", part.status().message()));
    }
    for (const uint32_t cp : part->proto().code_points()) seen[cp] = true;
  }
  Tokenizer proto;
  proto.set_kind(Tokenizer::CHAR);
  for (uint32_t cp = 0; cp < seen.size(); ++cp) {
    if (seen[cp]) proto.add_code_points(cp);
  }
  return TextTokenizer::FromProto(proto);
}

absl::StatusOr<TextTokenizer> Gpt2TokenizerFrom(const std::string& dir) {
  // A --gpt2-dir that names a file read "DIR/encoder.json: stat: Not a
  // directory" and exited 1, as for a failing disk.
  const std::string flag = absl::StrCat("--gpt2-dir ", dir);
  absl::StatusOr<fs::file_status> status = PathStatus(dir, flag);
  if (!status.ok()) return status.status();
  if (!fs::exists(*status)) {
    return absl::NotFoundError(
        absl::StrCat(flag, ": does not exist; name the directory of GPT-2's encoder.json and "
                           "vocab.bpe"));
  }
  if (!fs::is_directory(*status)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": is not a directory; name the directory of GPT-2's encoder.json "
                           "and vocab.bpe"));
  }
  const std::string encoder_path = (fs::path(dir) / "encoder.json").string();
  const std::string merges_path = (fs::path(dir) / "vocab.bpe").string();
  absl::StatusOr<std::string> encoder =
      ReadSmallFile(Env::Default(), encoder_path, kMaxGpt2FileBytes);
  if (!encoder.ok()) {
    return absl::Status(
        encoder.status().code(),
        absl::StrCat(encoder.status().message(), " (GPT-2's tokenizer files: pass --gpt2-dir)"));
  }
  absl::StatusOr<std::string> merges =
      ReadSmallFile(Env::Default(), merges_path, kMaxGpt2FileBytes);
  if (!merges.ok()) {
    return absl::Status(
        merges.status().code(),
        absl::StrCat(merges.status().message(), " (GPT-2's tokenizer files: pass --gpt2-dir)"));
  }
  absl::StatusOr<Tokenizer> proto = Gpt2TokenizerFromFiles(*encoder, *merges);
  if (!proto.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPT-2 tokenizer files in '", dir, "': ", proto.status().message()));
  }
  // Merges and vocabulary are checked against each other only here (a
  // truncated vocab.bpe "repeats a merge"): the message still names the files.
  absl::StatusOr<TextTokenizer> tokenizer = TextTokenizer::FromProto(*proto);
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("GPT-2 tokenizer files in '", dir,
                                                   "' (encoder.json, vocab.bpe): ",
                                                   tokenizer.status().message()));
  }
  return tokenizer;
}

void StoreLe(uint32_t value, int width, uint8_t* out) {
  for (int i = 0; i < width; ++i) out[i] = static_cast<uint8_t>(value >> (8 * i));
}

// Removes the spool file when the preparation ends, whichever way.
class SpoolRemover {
 public:
  explicit SpoolRemover(std::string path) : path_(std::move(path)) {}
  ~SpoolRemover() {
    std::error_code ec;
    fs::remove(path_, ec);
  }

 private:
  std::string path_;
};

// Encodes every chunk of `files` with `threads` threads, appending the tokens
// (token_width bytes each, little-endian) to `spool` in input order, and
// extending *crc (CRC32C) over those bytes.
absl::StatusOr<uint64_t> EncodeToSpool(const std::vector<std::string>& files,
                                       const TextTokenizer& tokenizer,
                                       const PrepareOptions& options, int threads,
                                       WritableFile& spool, uint32_t* crc) {
  const int width = TokenWidthFor(tokenizer.vocab_size());
  std::vector<std::unique_ptr<EncodeCache>> caches;
  for (int t = 0; t < threads; ++t) caches.push_back(std::make_unique<EncodeCache>());
  ChunkReader reader(&files, tokenizer.kind(), options.chunk_bytes);
  // Two chunks per thread keep every thread busy while chunks differ in cost.
  std::vector<Chunk> batch(2 * static_cast<size_t>(threads));
  std::vector<absl::StatusOr<std::vector<int32_t>>> encoded(batch.size());
  std::vector<uint8_t> bytes;
  uint64_t count = 0;
  bool more = true;
  while (more) {
    size_t n = 0;
    while (n < batch.size()) {
      absl::StatusOr<bool> next = reader.Next(&batch[n]);
      if (!next.ok()) return next.status();
      if (!*next) {
        more = false;
        break;
      }
      ++n;
    }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (size_t i = 0; i < n; ++i) {
      encoded[i] = tokenizer.Encode(batch[i].text, caches[omp_get_thread_num()].get());
    }
    for (size_t i = 0; i < n; ++i) {
      if (!encoded[i].ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(files, batch[i]), ": ", encoded[i].status().message()));
      }
      const std::vector<int32_t>& ids = *encoded[i];
      bytes.resize(ids.size() * width);
      for (size_t k = 0; k < ids.size(); ++k) {
        StoreLe(static_cast<uint32_t>(ids[k]), width, &bytes[k * width]);
      }
      if (absl::Status s = spool.Append(bytes.data(), bytes.size()); !s.ok()) return s;
      *crc = crc32c::Extend(*crc, bytes.data(), bytes.size());
      count += ids.size();
      encoded[i] = std::vector<int32_t>();  // free it now
    }
  }
  return count;
}

// Whether `name` is a temporary of a preparation: its spool, or a file it
// writes with ".tmp" appended (see StagedFiles). A preparation killed (say
// by SIGTERM) leaves them; the next one into the directory removes them.
bool IsPrepareTemporary(const std::string& name) {
  if (name == kSpoolFile) return true;
  if (!name.ends_with(".tmp")) return false;
  const std::string base = name.substr(0, name.size() - 4);
  return base == kTokenizerFile || base == kTrainTokensFile || base == kValTokensFile ||
         IsShardName(base, "train") || IsShardName(base, "val");
}

// The files of one preparation, each written first as <dir>/<name>.tmp
// (fsynced), then renamed over <name> all together by Commit, after every
// one is written. A failure while writing (a full disk at val.bin) so
// leaves the directory's previous data set whole, rather than the new
// train.bin beside the old val.bin and tokenizer.pb. A failure or a kill
// between the renames can still mix the two; the dataset id in every file
// is what lets the trainer refuse that (LoadTrainingData). Temporaries not
// renamed are removed on destruction.
class StagedFiles {
 public:
  StagedFiles(Env* env, fs::path dir) : env_(env), dir_(std::move(dir)) {}
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;
  ~StagedFiles() {
    for (size_t i = committed_; i < names_.size(); ++i) {
      const std::string tmp = TempPath(names_[i]);
      if (env_->FileExists(tmp)) env_->RemoveFile(tmp).IgnoreError();
    }
  }

  // Writes <name>.tmp with what `write` appends and fsyncs it. Errors name
  // the path.
  absl::Status Write(const std::string& name,
                     const std::function<absl::Status(WritableFile&)>& write) {
    const std::string tmp = TempPath(name);
    names_.push_back(name);  // so a partial one is removed too
    absl::Status status = [&]() -> absl::Status {
      absl::StatusOr<std::unique_ptr<WritableFile>> file = env_->NewWritableFile(tmp);
      if (!file.ok()) return file.status();
      if (absl::Status s = write(**file); !s.ok()) return s;
      if (absl::Status s = (*file)->Sync(); !s.ok()) return s;
      return (*file)->Close();
    }();
    if (!status.ok() && status.message().find(tmp) == std::string_view::npos) {
      return absl::Status(status.code(),
                          absl::StrCat("cannot write ", tmp, ": ", status.message()));
    }
    return status;
  }

  // Renames every written temporary over its name, in the order written,
  // then fsyncs the directory.
  absl::Status Commit() {
    for (; committed_ < names_.size(); ++committed_) {
      const std::string& name = names_[committed_];
      if (absl::Status s = env_->RenameFile(TempPath(name), (dir_ / name).string()); !s.ok()) {
        return s;
      }
    }
    return env_->SyncDir(dir_.string());
  }

  // The names written (committed or not).
  std::set<std::string> names() const { return {names_.begin(), names_.end()}; }

 private:
  std::string TempPath(const std::string& name) const { return (dir_ / name).string() + ".tmp"; }

  Env* env_;
  fs::path dir_;
  std::vector<std::string> names_;
  size_t committed_ = 0;
};

// Stages tokens [begin, end) of the spool as the split `split`: one file
// <split>.bin when they fit in shard_tokens, else shards; each stamped with
// dataset_id, its CRC32C added to *checksums by name. Returns how many
// files.
absl::StatusOr<int> WriteSplit(Env* env, const std::string& spool_path, StagedFiles& staged,
                               const std::string& split, uint64_t begin, uint64_t end,
                               int vocab_size, uint64_t shard_tokens, uint32_t dataset_id,
                               std::map<std::string, uint32_t>* checksums) {
  const int width = TokenWidthFor(vocab_size);
  const uint64_t total = end - begin;
  const uint64_t shards = std::max<uint64_t>(1, (total + shard_tokens - 1) / shard_tokens);
  std::vector<uint8_t> buffer(kCopyBytes);
  for (uint64_t s = 0; s < shards; ++s) {
    const uint64_t first = begin + s * shard_tokens;
    const uint64_t count = std::min(shard_tokens, end - first);
    const std::string name =
        shards == 1 ? split + ".bin" : ShardFileName(split, static_cast<int>(s));
    uint32_t& crc = (*checksums)[name] = 0;
    const absl::Status status = staged.Write(name, [&](WritableFile& file) -> absl::Status {
      const auto header = TokenFileHeader(vocab_size, count, dataset_id);
      if (absl::Status st = file.Append(header.data(), header.size()); !st.ok()) return st;
      crc = crc32c::Extend(crc, header.data(), header.size());
      uint64_t at = first * width;
      const uint64_t stop = (first + count) * width;
      while (at < stop) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(kCopyBytes, stop - at));
        if (absl::Status st = env->ReadFileRange(spool_path, at, n, buffer.data()); !st.ok()) {
          return st;
        }
        if (absl::Status st = file.Append(buffer.data(), n); !st.ok()) return st;
        crc = crc32c::Extend(crc, buffer.data(), n);
        at += n;
      }
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
  }
  return static_cast<int>(shards);
}

// InvalidArgument naming --shard-tokens when `tokens` tokens of the split
// `split` in files of at most `shard_tokens` would make more than
// kMaxShardsPerSplit files, saying the smallest --shard-tokens that fits.
absl::Status CheckShardCount(const std::string& split, uint64_t tokens, uint64_t shard_tokens) {
  // Not (tokens + shard_tokens - 1) / shard_tokens: that overflows.
  const uint64_t shards = tokens / shard_tokens + (tokens % shard_tokens != 0);
  if (shards <= kMaxShardsPerSplit) return absl::OkStatus();
  const uint64_t fewest = tokens / kMaxShardsPerSplit + (tokens % kMaxShardsPerSplit != 0);
  return absl::InvalidArgumentError(absl::StrCat(
      "--shard-tokens ", shard_tokens, ": the ", split, " split's ", tokens, " tokens would make ",
      shards, " shards, more than the ", kMaxShardsPerSplit,
      " a split may have (every training rank memory-maps each shard of both splits); give "
      "--shard-tokens ",
      fewest, " or more"));
}

}  // namespace

std::string ShardTokensRule() {
  return absl::StrCat("must be a whole number >= ", kMinShardTokens,
                      " (every training rank memory-maps each shard, a 4 KiB page at least)");
}

// Refuses when a file of `dir` that a preparation replaces or removes (the
// tokenizer, token files and shards; `names` lists `dir`) is not dropk's
// own. nanoGPT's prepare.py writes a train.bin and val.bin of its own (bare
// uint16 tokens): --out at its data directory replaced them in silence. A
// token file is dropk's by its magic, tokenizer.pb when it loads.
absl::Status RefuseReplacingForeignFiles(Env* env, const fs::path& dir,
                                         const std::vector<std::string>& names,
                                         const std::string& out_flag) {
  for (const std::string& name : names) {
    const std::string path = (dir / name).string();
    std::string foreign;
    if (name == kTokenizerFile) {
      if (LoadTokenizer(path, env).ok()) continue;
      foreign = "is not a tokenizer dropk wrote (it does not load as one)";
    } else if (name == kTrainTokensFile || name == kValTokensFile || IsShardName(name, "train") ||
               IsShardName(name, "val")) {
      if (StartsWithTokenFileMagic(env, path)) continue;
      foreign =
          "is not a dropk token file (its first bytes are not DROPKTOK; nanoGPT's prepare.py "
          "writes a train.bin and val.bin of its own)";
    } else {
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(out_flag, ": ", path, " ", foreign,
                                                   ", so it is not replaced; move it away, or "
                                                   "name another --out"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PrepareSummary> PrepareData(const PrepareOptions& options) {
  // Written as a negated conjunction so NaN is rejected too.
  if (!(options.val_fraction > 0.0 && options.val_fraction < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("val_fraction ",
                                                   ShortestDoubleText(options.val_fraction),
                                                   " must be strictly between 0 and 1"));
  }
  if (options.out_dir.empty()) {
    return absl::InvalidArgumentError("the output directory is empty");
  }
  // It becomes a run's data_dir, which dropk-train refuses with such a
  // character (trainer/config.cc): refused before the work, not after.
  if (HoldsControlCharacter(options.out_dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out \"", EscapeForMessage(options.out_dir),
                     "\": holds a control character (shown as \\uXXXX), which dropk-train "
                     "refuses in a data_dir; name another directory"));
  }
  if (options.shard_tokens < kMinShardTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shard-tokens ", options.shard_tokens, " ", ShardTokensRule()));
  }
  if (options.chunk_bytes == 0) return absl::InvalidArgumentError("chunk_bytes must be >= 1");
  if (options.threads < 0 || options.threads > kMaxPrepareThreads) {
    return absl::InvalidArgumentError(absl::StrCat("threads ", options.threads,
                                                   " must be in [0, ", kMaxPrepareThreads,
                                                   "] (0: every core)"));
  }
  // An --out that is a file (or a path the OS cannot look at) is the user's
  // to fix (exit 2): it read "cannot create output directory: Not a
  // directory", exit 1.
  const std::string out_flag = absl::StrCat("--out ", options.out_dir);
  absl::StatusOr<fs::file_status> out_status = PathStatus(options.out_dir, out_flag);
  if (!out_status.ok()) return out_status.status();
  if (fs::exists(*out_status) && !fs::is_directory(*out_status)) {
    return absl::InvalidArgumentError(absl::StrCat(
        out_flag, ": exists and is not a directory; name the directory to write into"));
  }
  absl::StatusOr<std::vector<std::string>> files = ExpandInputs(options.inputs, options.out_dir);
  if (!files.ok()) return files.status();
  uint64_t input_bytes = 0;
  for (const std::string& f : *files) {
    absl::StatusOr<uint64_t> bytes = InputFileBytes(f);
    if (!bytes.ok()) return bytes.status();
    input_bytes += *bytes;
  }
  if (input_bytes == 0) {
    return absl::InvalidArgumentError(
        files->size() == 1 ? absl::StrCat("input file '", files->front(), "' is empty")
                           : absl::StrCat("the ", files->size(), " input files are empty"));
  }

  absl::StatusOr<TextTokenizer> tokenizer = [&]() -> absl::StatusOr<TextTokenizer> {
    switch (options.kind) {
      case Tokenizer::CHAR: return CharTokenizerOf(*files, options.chunk_bytes);
      case Tokenizer::GPT2_BPE: return Gpt2TokenizerFrom(options.gpt2_dir);
      default: return TextTokenizer::FromCorpus(options.kind, "");
    }
  }();
  if (!tokenizer.ok()) return tokenizer.status();

  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) {
    return DirectoryCreationError(absl::StrCat(out_flag, ": cannot create it"), options.out_dir,
                                  ec);
  }
  const fs::path dir(options.out_dir);
  // One preparation per directory at a time (a prepare step run on every
  // rank of a job): two shared the spool and the .tmp files, and one that
  // printed "prepared" left a train.bin cut short. No waiting: a second
  // preparation would only redo the first's work.
  absl::StatusOr<RunDirectoryLock> lock = RunDirectoryLock::Acquire(
      options.out_dir, "--out", std::cerr, {.same_host = {}, .other_host = {}}, kPrepareLock);
  if (!lock.ok()) return lock.status();
  lock->RecordHolder(std::cerr);
  Env* const env = options.env != nullptr ? options.env : Env::Default();
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(dir.string());
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {  // a killed preparation's
    if (IsPrepareTemporary(name)) {
      if (absl::Status s = env->RemoveFile((dir / name).string()); !s.ok()) return s;
    }
  }
  if (absl::Status s = RefuseReplacingForeignFiles(env, dir, *names, out_flag); !s.ok()) {
    return s;
  }
  const std::string spool_path = (dir / kSpoolFile).string();
  SpoolRemover remove_spool(spool_path);
  absl::StatusOr<std::unique_ptr<WritableFile>> spool = env->NewWritableFile(spool_path);
  if (!spool.ok()) return spool.status();
  const int threads = options.threads > 0
                          ? options.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  uint32_t tokens_crc = 0;
  absl::StatusOr<uint64_t> n =
      EncodeToSpool(*files, *tokenizer, options, threads, **spool, &tokens_crc);
  if (!n.ok()) return n.status();
  if (absl::Status s = (*spool)->Close(); !s.ok()) return s;

  // nanoGPT: train = data[:int(n*0.9)]. 1.0 - 0.1 is exactly the double 0.9,
  // so the default split matches it token for token.
  const auto n_train =
      static_cast<uint64_t>(static_cast<double>(*n) * (1.0 - options.val_fraction));
  if (n_train == 0 || n_train >= *n) {
    return absl::InvalidArgumentError(
        absl::StrCat("val_fraction ", ShortestDoubleText(options.val_fraction), " splits the ", *n,
                     " tokens of ",
                     files->size() == 1 ? absl::StrCat("'", files->front(), "'")
                                        : absl::StrCat(files->size(), " input files"),
                     " into ", n_train, " train and ", *n - std::min(*n, n_train),
                     " val tokens; both must be non-empty"));
  }
  if (absl::Status s = CheckShardCount("train", n_train, options.shard_tokens); !s.ok()) return s;
  if (absl::Status s = CheckShardCount("val", *n - n_train, options.shard_tokens); !s.ok()) {
    return s;
  }
  const int vocab_size = tokenizer->vocab_size();
  const std::string tokenizer_path = (dir / kTokenizerFile).string();
  absl::StatusOr<std::string> plain_tokenizer = TokenizerFileBytes(*tokenizer, 0, tokenizer_path);
  if (!plain_tokenizer.ok()) return plain_tokenizer.status();
  const uint32_t dataset_id =
      DatasetId(tokens_crc, *plain_tokenizer, n_train, options.shard_tokens);

  StagedFiles staged(env, dir);
  std::map<std::string, uint32_t> checksums;
  absl::StatusOr<int> train_files =
      WriteSplit(env, spool_path, staged, "train", 0, n_train, vocab_size, options.shard_tokens,
                 dataset_id, &checksums);
  if (!train_files.ok()) return train_files.status();
  absl::StatusOr<int> val_files =
      WriteSplit(env, spool_path, staged, "val", n_train, *n, vocab_size, options.shard_tokens,
                 dataset_id, &checksums);
  if (!val_files.ok()) return val_files.status();
  // Written last, it records the checksums of the files just written.
  absl::StatusOr<std::string> tokenizer_bytes =
      TokenizerFileBytes(*tokenizer, dataset_id, tokenizer_path, checksums);
  if (!tokenizer_bytes.ok()) return tokenizer_bytes.status();
  if (absl::Status s = staged.Write(kTokenizerFile,
                                    [&](WritableFile& file) {
                                      return file.Append(tokenizer_bytes->data(),
                                                         tokenizer_bytes->size());
                                    });
      !s.ok()) {
    return s;
  }
  if (absl::Status s = staged.Commit(); !s.ok()) return s;

  // Token files of an earlier preparation would be read with the new ones
  // (or, carrying another dataset id, refused).
  names = env->ListDir(dir.string());
  if (!names.ok()) return names.status();
  const std::set<std::string> written = staged.names();
  for (const std::string& name : *names) {
    const bool token_file = name == kTrainTokensFile || name == kValTokensFile ||
                            IsShardName(name, "train") || IsShardName(name, "val");
    if (token_file && !written.contains(name)) {
      if (absl::Status s = env->RemoveFile((dir / name).string()); !s.ok()) return s;
    }
  }
  if (absl::Status s = env->SyncDir(dir.string()); !s.ok()) return s;
  return PrepareSummary{.vocab_size = vocab_size,
                        .train_tokens = n_train,
                        .val_tokens = *n - n_train,
                        .train_files = *train_files,
                        .val_files = *val_files,
                        .input_bytes = input_bytes};
}

}  // namespace dropk
