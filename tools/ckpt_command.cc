// dropk ckpt inspect PATH   step, config summary, tensors, total bytes
// dropk ckpt verify PATH    recomputes every CRC32C; exit 0 ok, 1 corrupt
// dropk ckpt export PATH --out FILE [--dtype fp32|fp16|bf16] [--format dropk|safetensors]
//                           one export per FILE at a time; a second is refused
//
// PATH is a checkpoint directory (run/checkpoints/step-00001000), a
// checkpoints directory (its LATEST names the checkpoint; without one, its
// newest step-N), or a run directory (its checkpoints/, likewise).
#include "tools/ckpt_command.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/cut_for_message.h"
#include "base/path_status.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/writer.h"
#include "model/param_layout.h"
#include "trainer/hf_gpt2_weights.h"
#include "trainer/run_directory_lock.h"
#include "trainer/training_checkpoints.h"

namespace dropk {
namespace {

// What PATH may name, as errors and --help say it. A checkpoints directory
// without LATEST is read (its newest step-N): "holding LATEST", as this
// said until 2026-12-02, sent users to make one.
constexpr char kPathKinds[] =
    "name a checkpoint (run/checkpoints/step-N), a checkpoints directory (its LATEST, else its "
    "newest step-N), or a run directory";
constexpr char kPathHelp[] =
    "Checkpoint directory, checkpoints directory (its LATEST, else its newest step-N), or run "
    "directory (its checkpoints/)";

// `status` as a ckpt command reports it (applied once, to what each command
// returns): a checkpoint file or directory this user may not read or write
// (the Env's PermissionDenied, from EACCES or EPERM) is the user's to fix,
// as every path the OS refuses is (base/path_status.h, the export lock,
// dropk-train --resume): exit 2. A manifest.pb, model.data or LATEST at
// mode 000 exited 1, the directory holding them at mode 000 exited 2.
absl::Status PermissionIsUsage(const absl::Status& status) {
  if (!absl::IsPermissionDenied(status)) return status;
  return absl::InvalidArgumentError(status.message());
}

// What a ckpt command ends with: its error as one line whatever the paths
// in it hold (EscapeForMessage: a newline in a path split the error in two,
// an ESC restyled the terminal).
absl::Status OneLine(const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), EscapeForMessage(std::string(status.message())));
}

// For a directory without LATEST whose listing (Env::ListDir) failed with
// `cause`: "DIR: cannot be listed (<reason>)", and how to get on. With mode
// --x, or readdir failing, it read "holds no checkpoint". The code is
// cause's: a permission problem becomes exit 2 (PermissionIsUsage), another
// (EIO) is exit 1.
absl::Status ListingError(const std::string& dir, const absl::Status& cause) {
  // cause is "DIR: list directory: <strerror>".
  const std::string message(cause.message());
  const size_t colon = message.rfind(": ");
  const std::string reason = colon == std::string::npos ? message : message.substr(colon + 2);
  const std::string text = absl::StrCat(
      dir, ": cannot be listed (", reason, "), and without ", kLatestFileName,
      " its newest step-N is found by listing it; give this user read access to it, or name the "
      "checkpoint (",
      dir, "/step-N)");
  return absl::Status(cause.code(), text);
}

// The checkpoint `path` names: itself when it holds manifest.pb (or
// model.data: a checkpoint whose manifest is gone, corrupt when opened, as
// --resume=PATH reads it), else the one LATEST names in it (a checkpoints
// directory) or in path/checkpoints (a run directory, the trainer's
// out_dir), or there, without a LATEST, the newest step-N (the one
// --resume=latest tries first). A missing path is NotFound and the wrong
// kind of path InvalidArgument (usage, exit 2), each naming it, as is a
// path the OS cannot look at (PathError: a symlink loop, no search
// permission, on the way to manifest.pb or LATEST); a LATEST that names
// nothing is DataLoss. Before, a missing path was "not a
// directory" (exit 1) and a run directory "run/manifest.pb: stat: ...";
// a checkpoint without its manifest, or checkpoints without LATEST (lost,
// or a first save cut off before it), were "holds neither manifest.pb nor
// LATEST" (exit 2), though verify's corrupt is exit 1.
absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path) {
  namespace fs = std::filesystem;
  Env* env = Env::Default();
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the checkpoint path is empty; ", kPathKinds));
  }
  // A symlink loop or a directory that may not be searched read "does not
  // exist"; the OS's reason is said instead.
  absl::StatusOr<fs::file_status> stat = PathStatus(path, absl::StrCat("checkpoint path ", path));
  if (!stat.ok()) return stat.status();
  const fs::file_status status = *stat;
  std::error_code ec;
  if (!fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat("checkpoint path ", path, ": does not exist"));
  }
  if (!fs::is_directory(status)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a directory; ", kPathKinds));
  }
  // A checkpoint that may not be searched (mode 000) read "holds neither
  // manifest.pb nor LATEST", as if it were none.
  absl::StatusOr<fs::file_status> manifest =
      PathStatus(path + "/" + kManifestFileName,
                 absl::StrCat("checkpoint ", path, ": file ", kManifestFileName));
  if (!manifest.ok()) return manifest.status();
  if (env->FileExists(path + "/" + kManifestFileName) ||
      env->FileExists(path + "/" + kModelDataFileName)) {
    return path;
  }
  // Why a directory to search for step-N could not be listed: said, rather
  // than "holds no checkpoint", when neither holds one.
  absl::Status unlisted;
  for (const std::string& dir : {path, path + "/checkpoints"}) {
    const std::string latest = dir + "/" + kLatestFileName;
    // A run's checkpoints/ that may not be searched (mode 000) or is a
    // symlink loop, and a LATEST that is one, read "holds neither
    // manifest.pb nor LATEST" (or were passed over); the OS's reason is
    // said instead. (A checkpoints/ that does not exist, or is a file,
    // reads as missing here.)
    absl::StatusOr<fs::file_status> latest_status = PathStatus(latest, latest);
    if (!latest_status.ok()) return latest_status.status();
    if (!env->FileExists(latest)) {
      const std::vector<std::string> newest_first = CheckpointCandidates(dir, nullptr, env);
      if (!newest_first.empty()) return newest_first.front();
      if (absl::StatusOr<std::vector<std::string>> names = env->ListDir(dir);
          !names.ok() && env->IsDirectory(dir) && unlisted.ok()) {
        unlisted = ListingError(dir, names.status());
      }
      continue;
    }
    absl::StatusOr<std::string> name = ReadLatestFile(latest, env);
    if (!name.ok()) return name.status();
    const std::string trimmed(absl::StripAsciiWhitespace(*name));
    // A step-N name, as --resume and dropk-serve take from LATEST: any other
    // name was read too, a partial save's step-N.tmp-X, or "step-N\0junk",
    // whose NUL cut the path short and read the directory as manifest.pb.
    if (ParseStepDirName(trimmed) < 0) {
      return absl::DataLossError(absl::StrCat(latest, ": does not name a checkpoint"));
    }
    if (!fs::is_directory(dir + "/" + trimmed, ec)) {
      return absl::DataLossError(
          absl::StrCat(latest, " names ", trimmed, ", which is not a directory there"));
    }
    // One that goes by LATEST passed it over in silence.
    if (const std::string newer = NewerCheckpointThanLatest(dir, env); !newer.empty()) {
      std::cerr << "dropk: note: "
                << EscapeForMessage(
                       absl::StrCat(newer, " is newer than ", trimmed, ", which ", latest,
                                    " names, and looks complete (a save cut off before it updated ",
                                    kLatestFileName, "?); this reads ", trimmed, ", name ", newer,
                                    " to read it"))
                << "\n";
    }
    return dir + "/" + trimmed;
  }
  if (!unlisted.ok()) return unlisted;
  return absl::InvalidArgumentError(absl::StrCat(path, ": holds no checkpoint (neither ",
                                                 kManifestFileName, ", ", kLatestFileName,
                                                 " nor a step-N directory); ", kPathKinds));
}

std::string Shape(const TensorEntry& e) {
  return absl::StrCat("[", absl::StrJoin(e.shape(), ", "), "]");
}

absl::Status Inspect(const std::string& path) {
  absl::StatusOr<std::string> dir = ResolveCheckpoint(path);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(*dir);
  if (!vm.ok()) return vm.status();
  const CheckpointManifest& m = vm->manifest;
  const TrainConfig& c = m.config();
  std::cout << absl::StrFormat(
      "checkpoint %s\n"
      "  step %d, tokens seen %d, optimizer step %d, written by %d rank(s), last train loss %.4f\n"
      "  model: %d layers, %d heads, n_embd %d, context %d, vocab %d (%s tokenizer), %d "
      "parameters\n"
      "  training: lr %g -> %g, warmup %d, decay %d, max_iters %d, batch %d x %d accum, "
      "dropout %g (%s), seed %d\n"
      "  data_dir %s\n",
      *dir, m.step(), m.tokens_seen(), m.optimizer_step(), m.world_size(), m.last_train_loss(),
      c.n_layer(), c.n_head(), c.n_embd(), c.block_size(), vm->shape.vocab_size,
      Tokenizer::Kind_Name(m.tokenizer().kind()), vm->num_params, c.learning_rate(), c.min_lr(),
      c.warmup_iters(), c.lr_decay_iters(), c.max_iters(), c.batch_size(),
      c.gradient_accumulation_steps(), c.dropout(),
      TrainConfig::DropoutStream_Name(c.dropout_stream()), c.seed(), c.data_dir());
  // Checkpoints written before the data was recorded have no `data`.
  if (m.has_data()) {
    std::cout << "  data: " << DescribeData(m.data()) << "\n";
  } else {
    std::cout << "  data: not recorded (written before dropk recorded it)\n";
  }
  std::cout << absl::StrFormat("  %-48s %-8s %-16s %-32s %12s %12s %10s\n", "tensor", "dtype",
                               "shape", "file", "offset", "bytes", "crc32c");
  uint64_t total = 0;
  for (const TensorEntry& e : m.tensors()) {
    std::string name = e.name();
    if (e.name() == kAdamMName || e.name() == kAdamVName) {
      name = absl::StrCat(e.name(), "[", e.slice_start(), ":", e.slice_start() + e.shape(0), "]");
    }
    std::cout << absl::StrFormat("  %-48s %-8s %-16s %-32s %12d %12d 0x%08x\n", name,
                                 TensorDtype_Name(e.dtype()), Shape(e), e.file(), e.offset(),
                                 e.length(), e.crc32c());
    total += e.length();
  }
  std::cout << absl::StrFormat("  %d tensors, %d bytes (%.3f GB) of tensor data\n",
                               m.tensors_size(), total, total / 1e9);
  return absl::OkStatus();
}

absl::Status Verify(const std::string& path) {
  absl::StatusOr<std::string> dir = ResolveCheckpoint(path);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(*dir);
  if (!vm.ok()) return vm.status();
  if (absl::Status s = VerifyCheckpoint(*dir); !s.ok()) return s;
  uint64_t total = 0;
  for (const TensorEntry& e : vm->manifest.tensors()) total += e.length();
  std::cout << "OK " << *dir << ": step " << vm->manifest.step() << ", "
            << vm->manifest.tensors_size() << " tensors, " << total
            << " bytes, every CRC32C matches\n";
  return absl::OkStatus();
}

uint16_t ToBfloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // stays a quiet NaN
  bits += 0x7FFF + ((bits >> 16) & 1);                                   // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

uint16_t ToFloat16(float f) {
  const _Float16 h = static_cast<_Float16>(f);  // IEEE round to nearest even
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

// Whether a 16-bit value of `dtype` (FLOAT16 or BFLOAT16) is +-infinity.
bool IsInfinity16(uint16_t v, TensorDtype dtype) {
  return (v & 0x7FFF) == (dtype == FLOAT16 ? 0x7C00 : 0x7F80);
}

// Tensor `name`'s values `src`, converted to `dtype`. A value that is not
// finite is DataLoss (the checkpoint holds it: exit 1), one the dtype cannot
// hold InvalidArgument (--dtype does not fit: exit 2); each names the tensor,
// the value and its index. fp16 turned weights beyond 65504 into infinity
// silently, and non-finite weights were exported as they were.
absl::StatusOr<std::string> ConvertTensor(const std::string& name, const float* src, size_t n,
                                          TensorDtype dtype, const std::string& dtype_name) {
  const size_t elem = dtype == FLOAT32 ? 4 : 2;
  std::string blob(n * elem, '\0');
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(src[i])) {
      return absl::DataLossError(absl::StrCat("tensor ", name, ": value ", src[i], " at index ", i,
                                              " is not finite; nothing was exported"));
    }
    if (dtype == FLOAT32) {
      std::memcpy(&blob[4 * i], &src[i], 4);
      continue;
    }
    const uint16_t v = dtype == FLOAT16 ? ToFloat16(src[i]) : ToBfloat16(src[i]);
    if (IsInfinity16(v, dtype)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--dtype %s: tensor %s: value %g at index %d is outside %s's range (largest %s); "
          "export with %s",
          dtype_name, name, src[i], i, dtype_name, dtype == FLOAT16 ? "65504" : "3.39e38",
          dtype == FLOAT16 ? "--dtype bf16 or --dtype fp32" : "--dtype fp32"));
    }
    std::memcpy(&blob[2 * i], &v, 2);
  }
  return blob;
}

// Whether the file at `out` is a safetensors file an export wrote (its
// metadata names dropk as its producer), which an export may replace.
bool IsDropkSafetensorsFile(const std::string& out) {
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(out);
  if (!file.ok()) return false;
  const auto producer = file->metadata().find("producer");
  return producer != file->metadata().end() && producer->second == "dropk ckpt export";
}

// The checkpoints directory that directory `dir` (canonical) is or lies
// in, or "" when none: the nearest of dir and the directories above it
// that is one (IsCheckpointsDir), or holds a save in progress (step-N.tmp-X)
// that `dir` is in.
std::string CheckpointsDirAround(const std::filesystem::path& dir) {
  Env* env = Env::Default();
  for (std::filesystem::path at = dir;; at = at.parent_path()) {
    if (IsCheckpointsDir(at.string(), env)) return at.string();
    const std::string name = at.filename().string();
    if (name.rfind("step-", 0) == 0 && name.find(".tmp-") != std::string::npos) {
      return at.parent_path().string();
    }
    if (at == at.parent_path() || !at.has_relative_path()) break;
  }
  return "";
}

// --out must name a new file, or an earlier export to replace, outside the
// checkpoint `dir`, in a directory that exists, and outside any checkpoints
// directory: there a running trainer's keep_last deleted an export named
// step-N, or one inside an older checkpoint, and the export could be taken
// for a checkpoint. Before: an export onto one of
// the checkpoint's files (model.data) broke it; onto a directory it failed
// only after writing OUT.tmp beside it; an empty --out aborted on an uncaught
// filesystem_error; and the rename replaced whatever was there: a user's
// file, or (as root) a device node such as /dev/full.
absl::Status CheckExportTarget(const std::string& out, const std::string& dir) {
  namespace fs = std::filesystem;
  if (out.empty()) return absl::InvalidArgumentError("--out is empty; name the file to write");
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(out, ec);
  if (fs::is_directory(fs::status(out, ec))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out ", out, ": is a directory; name the file to write"));
  }
  const fs::path parent = fs::absolute(out, ec).parent_path();
  // A parent the OS cannot look at (a symlink loop) is not "missing".
  if (!ec) {
    absl::StatusOr<fs::file_status> parent_status =
        PathStatus(parent, absl::StrCat("--out ", out, ": directory ", parent.string()));
    if (!parent_status.ok()) return parent_status.status();
  }
  if (ec || !fs::is_directory(parent, ec)) {
    return absl::NotFoundError(
        absl::StrCat("--out ", out, ": directory ", parent.string(), " does not exist"));
  }
  const fs::path out_dir = fs::weakly_canonical(parent, ec);
  const bool out_dir_known = !ec;
  if (!ec && out_dir == fs::weakly_canonical(dir, ec) && !ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out ", out, ": inside checkpoint ", dir,
                     ", whose files it could replace; write the export elsewhere"));
  }
  if (const std::string checkpoints = out_dir_known ? CheckpointsDirAround(out_dir) : "";
      !checkpoints.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--out ", out, ": inside checkpoints directory ", checkpoints,
        ", where a trainer's keep_last pruning could delete it or it could be taken for a "
        "checkpoint; write the export elsewhere"));
  }
  if (fs::exists(status)) {
    if (!fs::is_regular_file(status)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--out ", out, ": exists and is not a regular file; name a new file to write"));
    }
    char magic[8] = {};
    // One this user may not read read "is not a dropk export".
    if (const absl::Status read = Env::Default()->ReadFileRange(out, 0, sizeof(magic), magic);
        absl::IsPermissionDenied(read)) {
      return absl::Status(read.code(), absl::StrCat("--out ", out,
                                                    ": exists and cannot be read to tell whether "
                                                    "it is an earlier export (",
                                                    read.message(), ")"));
    }
    if (std::string_view(magic, sizeof(magic)) != kExportMagic && !IsDropkSafetensorsFile(out)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--out ", out,
                       ": exists and is not a dropk export, so it is not replaced; remove it "
                       "first or name another file"));
    }
  }
  return absl::OkStatus();
}

// The claim an export holds on `out` while it writes: two exports to one
// --out at once shared the staging file OUT.tmp, so one could publish the
// other's half-written bytes, or find its own OUT.tmp renamed away. The
// second is refused at once, naming the first; the kernel drops the lock of
// an export that dies (kill -9 included), so it never blocks the next one.
// The lock is a hidden file beside OUT, left there afterwards.
absl::StatusOr<RunDirectoryLock> LockExportTarget(const std::string& out) {
  const std::filesystem::path target(out);
  std::string name = target.filename().string();
  // A name near the 255-byte limit, which OUT.tmp still fits, is cut and
  // told apart by its checksum, so the lock file's name fits too.
  constexpr size_t kMaxKeptName = 200;
  if (name.size() > kMaxKeptName) {
    name = absl::StrFormat("%s-%08x", name.substr(0, kMaxKeptName),
                           crc32c::Value(name.data(), name.size()));
  }
  const std::string lock_path = (target.parent_path() / ("." + name + ".export-lock")).string();
  absl::StatusOr<RunDirectoryLock> lock =
      RunDirectoryLock::AcquireFile(lock_path, "--out=" + out, "--out", "dropk ckpt export",
                                    "dropk", std::cerr, {.same_host = {}, .other_host = {}});
  if (lock.ok()) lock->RecordHolder(std::cerr);
  return lock;
}

// The pieces of a dropk export (ExportHeader in proto/checkpoint.proto) of
// `params`, in file order: magic, header length, header, then each tensor
// after zero padding to a 64-byte boundary.
absl::StatusOr<std::vector<std::string>> DropkExportPieces(const ValidatedManifest& vm,
                                                           const CheckpointData& data,
                                                           TensorDtype dtype,
                                                           const std::string& dtype_name) {
  const ParamLayout layout(vm.shape);
  ExportHeader header;
  header.set_format_version(1);
  header.set_vocab_size(vm.shape.vocab_size);
  header.set_block_size(vm.shape.block_size);
  header.set_n_layer(vm.shape.n_layer);
  header.set_n_head(vm.shape.n_head);
  header.set_n_embd(vm.shape.n_embd);
  *header.mutable_tokenizer() = data.tokenizer;
  header.set_dtype(dtype);
  header.set_step(data.step);
  // Converted tensors, in layout order; offsets need the header's size,
  // which depends on the offsets' varint widths, so fix them with a first
  // pass that assumes a generous header size.
  std::vector<std::string> blobs;
  for (const ParamTensor& t : layout.tensors()) {
    absl::StatusOr<std::string> converted =
        ConvertTensor(t.name, data.params.data() + t.offset, t.numel, dtype, dtype_name);
    if (!converted.ok()) return converted.status();
    std::string blob = *std::move(converted);
    TensorEntry* e = header.add_tensors();
    e->set_name(t.name);
    e->set_dtype(dtype);
    for (int64_t d : t.shape) e->add_shape(d);
    e->set_length(blob.size());
    e->set_crc32c(crc32c::Value(blob.data(), blob.size()));
    blobs.push_back(std::move(blob));
  }
  auto align = [](uint64_t x) { return (x + 63) / 64 * 64; };
  uint64_t data_start = 0;
  for (int pass = 0; pass < 3; ++pass) {  // converges: offsets only grow the header a little
    uint64_t offset = data_start;
    for (int i = 0; i < header.tensors_size(); ++i) {
      offset = align(offset);
      header.mutable_tensors(i)->set_offset(offset);
      offset += header.tensors(i).length();
    }
    const uint64_t needed = align(16 + header.ByteSizeLong());
    if (needed <= data_start) break;
    data_start = needed + 64;
  }
  std::string header_bytes;
  header.SerializeToString(&header_bytes);
  const uint64_t h = header_bytes.size();
  std::vector<std::string> pieces = {
      kExportMagic, std::string(reinterpret_cast<const char*>(&h), 8), std::move(header_bytes)};
  uint64_t written = 16 + h;
  for (int i = 0; i < header.tensors_size(); ++i) {
    pieces.push_back(std::string(header.tensors(i).offset() - written, '\0'));
    written = header.tensors(i).offset() + blobs[i].size();
    pieces.push_back(std::move(blobs[i]));
  }
  return pieces;
}

// The pieces of a safetensors export (tools/safetensors_export.h) of
// `params`, in file order: header, then every tensor under Hugging Face
// GPT2LMHeadModel's name and layout (the tied lm_head.weight left to the
// reader, as Transformers' own files do).
absl::StatusOr<std::vector<std::string>> SafetensorsExportPieces(const ValidatedManifest& vm,
                                                                 const CheckpointData& data,
                                                                 TensorDtype dtype,
                                                                 const std::string& dtype_name) {
  const ParamLayout layout(vm.shape);
  std::vector<SafetensorsTensor> tensors;
  for (const ParamTensor& t : layout.tensors()) {
    const float* values = data.params.data() + t.offset;
    std::vector<int64_t> shape = t.shape;
    std::vector<float> transposed;
    if (IsHfConv1DWeight(t.name)) {
      transposed = Transposed(values, shape[0], shape[1]);
      values = transposed.data();
      std::swap(shape[0], shape[1]);
    }
    absl::StatusOr<std::string> converted =
        ConvertTensor(t.name, values, t.numel, dtype, dtype_name);
    if (!converted.ok()) return converted.status();
    tensors.push_back({t.name,
                       dtype == FLOAT32   ? "F32"
                       : dtype == FLOAT16 ? "F16"
                                          : "BF16",
                       std::move(shape), *std::move(converted)});
  }
  std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"producer", "dropk ckpt export"},
      {"dropk_step", absl::StrCat(data.step)},
      {"dropk_tokenizer", Tokenizer::Kind_Name(data.tokenizer.kind())},
      {"hf_config", HfGpt2ConfigJson(vm.shape)},
  };
  // BYTE ids are the bytes, GPT2_BPE ids GPT-2's own (Hugging Face's "gpt2"
  // tokenizer); a CHAR model's ids mean nothing without its characters.
  if (data.tokenizer.kind() == Tokenizer::CHAR) {
    absl::StatusOr<TextTokenizer> tokenizer = TextTokenizer::FromProto(data.tokenizer);
    if (!tokenizer.ok()) return tokenizer.status();
    metadata["dropk_char_vocab"] = CharVocabJson(*tokenizer);
  }
  std::vector<std::string> pieces = {SafetensorsHeader(tensors, metadata)};
  for (SafetensorsTensor& t : tensors) pieces.push_back(std::move(t.bytes));
  return pieces;
}

// Writes `pieces` one after another as the file `out`, through OUT.tmp
// renamed into place, so `out` is always one complete export. Returns the
// bytes written.
absl::StatusOr<uint64_t> WriteExportFile(const std::string& out,
                                         const std::vector<std::string>& pieces) {
  Env* env = Env::Default();
  const std::string tmp = out + ".tmp";
  // Under the lock, OUT.tmp is this export's own: whatever is there was left
  // by an export that died. Removed rather than opened, so that a link or a
  // FIFO left there is not followed or waited on.
  std::error_code ec;
  std::filesystem::remove(tmp, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("--out ", out, ": cannot remove the leftover staging file ", tmp, " (",
                     ec.message(), "); remove it by hand"));
  }
  absl::StatusOr<std::unique_ptr<WritableFile>> file = env->NewWritableFile(tmp);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat("--out ", out, ": ", file.status().message()));
  }
  uint64_t written = 0;
  absl::Status s;
  for (const std::string& piece : pieces) {
    s = (*file)->Append(piece.data(), piece.size());
    if (!s.ok()) break;
    written += piece.size();
  }
  if (s.ok()) s = (*file)->Sync();
  if (s.ok()) s = (*file)->Close();
  if (s.ok()) s = env->RenameFile(tmp, out);
  if (!s.ok()) {
    env->RemoveFile(tmp).IgnoreError();  // a partial export (a full disk) is nobody's file
    return absl::Status(s.code(), absl::StrCat("--out ", out, ": ", s.message()));
  }
  return written;
}

absl::Status Export(const std::string& path, const std::string& out, const std::string& dtype_name,
                    const std::string& format) {
  absl::StatusOr<std::string> dir = ResolveCheckpoint(path);
  if (!dir.ok()) return dir.status();
  if (absl::Status s = CheckExportTarget(out, *dir); !s.ok()) return s;
  absl::StatusOr<RunDirectoryLock> lock = LockExportTarget(out);
  if (!lock.ok()) return lock.status();
  ReadCheckpointOptions options;
  options.weights_only = true;
  absl::StatusOr<CheckpointData> data = ReadCheckpoint(*dir, options);
  if (!data.ok()) return data.status();
  const TensorDtype dtype = dtype_name == "fp16"   ? FLOAT16
                            : dtype_name == "bf16" ? BFLOAT16
                                                   : FLOAT32;
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(*dir, nullptr, /*weights_only=*/true);
  if (!vm.ok()) return vm.status();
  absl::StatusOr<std::vector<std::string>> pieces =
      format == "safetensors" ? SafetensorsExportPieces(*vm, *data, dtype, dtype_name)
                              : DropkExportPieces(*vm, *data, dtype, dtype_name);
  if (!pieces.ok()) return pieces.status();
  absl::StatusOr<uint64_t> written = WriteExportFile(out, *pieces);
  if (!written.ok()) return written.status();
  std::cout << absl::StrFormat("exported %s (step %d, %d parameters, %s, %s) -> %s (%d bytes)\n",
                               *dir, data->step, data->params.size(), dtype_name, format, out,
                               *written);
  return absl::OkStatus();
}

}  // namespace

void RegisterCkptCommand(CLI::App& app, std::function<absl::Status()>& action) {
  CLI::App* ckpt = app.add_subcommand("ckpt", "Inspect, verify and export checkpoints");
  ckpt->require_subcommand(1);
  struct Flags {
    std::string path, out, dtype = "fp32", format = "dropk";
  };
  auto flags = std::make_shared<Flags>();

  CLI::App* inspect = ckpt->add_subcommand("inspect", "Step, config summary, tensors, total bytes");
  inspect->add_option("path", flags->path, kPathHelp)->required();
  inspect->callback([&action, flags] {
    action = [flags] { return OneLine(PermissionIsUsage(Inspect(flags->path))); };
  });

  CLI::App* verify = ckpt->add_subcommand(
      "verify", "Recompute every CRC32C; exit 0 when the checkpoint is intact, 1 when corrupt");
  verify->add_option("path", flags->path, kPathHelp)->required();
  verify->callback([&action, flags] {
    action = [flags] { return OneLine(PermissionIsUsage(Verify(flags->path))); };
  });

  CLI::App* exp = ckpt->add_subcommand(
      "export",
      "Write the weights, model shape and tokenizer as one self-contained "
      "file for use outside dropk (format: ExportHeader in "
      "proto/checkpoint.proto; dropk-serve and dropk sample read checkpoints)");
  exp->add_option("path", flags->path, kPathHelp)->required();
  exp->add_option("--out", flags->out, "Output file")->required();
  exp->add_option("--dtype", flags->dtype, "fp32, fp16 or bf16")
      ->transform(CLI::IsMember({"fp32", "fp16", "bf16"}, CLI::ignore_case))
      ->capture_default_str();
  exp->add_option("--format", flags->format,
                  "dropk (ExportHeader), or safetensors: Hugging Face GPT-2's tensor names and "
                  "layout, its config.json in the metadata's hf_config")
      ->transform(CLI::IsMember({"dropk", "safetensors"}, CLI::ignore_case))
      ->capture_default_str();
  exp->callback([&action, flags] {
    action = [flags] {
      return OneLine(
          PermissionIsUsage(Export(flags->path, flags->out, flags->dtype, flags->format)));
    };
  });
}

}  // namespace dropk
