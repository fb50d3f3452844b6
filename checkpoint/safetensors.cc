#include "checkpoint/safetensors.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/cut_for_message.h"
#include "base/json_for_message.h"
#include "checkpoint/env.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the format's own limit

// A name, dtype or shape from a header as a message quotes it: cut short and
// with control characters escaped, so that the message stays one line (a
// header is up to 100 MB of anything).
std::string Quoted(std::string_view text) { return CutAndEscapeForMessage(text, 200); }
std::string QuotedJson(const nlohmann::json& value) { return JsonForMessage(value, 200); }

// The status for reading the file at `path` failing with the Env's `cause`,
// naming the file. Only what the path itself gets wrong is a bad argument:
// a directory or FIFO (the Env's "not a regular file") is InvalidArgument;
// a missing file stays NotFound and one this user may not read
// PermissionDenied, as the checkpoint reader says (reader.h); a file
// shorter than its header says (cut since) is DataLoss; any other failure
// of the OS (EIO, ...) is Unavailable, as base/path_status.h names an I/O
// error. Every I/O error read as InvalidArgument before: exit 2, "usage".
absl::Status ReadError(const std::string& path, const absl::Status& cause) {
  absl::StatusCode code = absl::StatusCode::kUnavailable;
  if (absl::IsFailedPrecondition(cause)) code = absl::StatusCode::kInvalidArgument;
  if (absl::IsNotFound(cause) || absl::IsPermissionDenied(cause)) code = cause.code();
  if (absl::IsOutOfRange(cause)) code = absl::StatusCode::kDataLoss;
  // The Env's messages start with the path; one that does not gets it.
  if (absl::StartsWith(cause.message(), path)) return absl::Status(code, cause.message());
  return absl::Status(code, absl::StrCat(path, ": ", cause.message()));
}

// Reads `n` bytes at `offset` of the file at `path` through `env` (which
// refuses a directory or FIFO without waiting on it); errors are
// ReadError's.
absl::StatusOr<std::string> ReadRange(Env* env, const std::string& path, uint64_t offset,
                                      size_t n) {
  std::string bytes(n, '\0');
  absl::Status s = env->ReadFileRange(path, offset, n, bytes.data());
  if (s.ok()) return bytes;
  return ReadError(path, s);
}

// Every tensor's bytes are its own (the format forbids shared bytes, and
// its writers refuse tied tensors): two ranges that overlap mean a header
// that lies about where the data is. Ranges of no bytes overlap nothing.
absl::Status CheckNoOverlap(const std::map<std::string, SafetensorsFile::Tensor>& tensors,
                            const std::string& path) {
  std::vector<std::pair<const std::string*, const SafetensorsFile::Tensor*>> by_begin;
  for (const auto& [name, t] : tensors) {
    if (t.end > t.begin) by_begin.emplace_back(&name, &t);
  }
  std::stable_sort(by_begin.begin(), by_begin.end(),
                   [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const auto& [before_name, before] = by_begin[i - 1];
    const auto& [name, t] = by_begin[i];
    if (t->begin < before->end) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not a valid safetensors file: tensor ", Quoted(*name), ": bytes [",
                       t->begin, ", ", t->end, ") overlap tensor ", Quoted(*before_name), "'s [",
                       before->begin, ", ", before->end, "); each tensor's bytes are its own"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string SafetensorsHeader(const std::vector<SafetensorsTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const SafetensorsTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(uint64_t{json.size()} >> (8 * i));
  return out + json;
}

int SafetensorsDtypeSize(std::string_view dtype) {
  static const std::map<std::string_view, int> kSizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"U64", 8}, {"I32", 4},
      {"U32", 4}, {"I16", 2}, {"U16", 2}, {"I8", 1},   {"U8", 1},  {"BOOL", 1}};
  const auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path, Env* env) {
  if (env == nullptr) env = Env::Default();
  // Only the header is read: the file may be far larger than memory (a
  // model of billions of parameters, or a sparse file), and the tensors'
  // bytes are read one at a time by ReadTensorBytes once they are wanted.
  absl::StatusOr<uint64_t> file_bytes = env->FileSize(path);
  if (!file_bytes.ok()) return ReadError(path, file_bytes.status());
  auto invalid = [&path](auto&&... parts) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a valid safetensors file: ", parts...));
  };
  if (*file_bytes < 8) return invalid(*file_bytes, " bytes, less than its header length");
  absl::StatusOr<std::string> length = ReadRange(env, path, 0, 8);
  if (!length.ok()) return length.status();
  uint64_t header_bytes = 0;
  for (int i = 0; i < 8; ++i) {
    header_bytes |= uint64_t{static_cast<uint8_t>((*length)[i])} << (8 * i);
  }
  if (header_bytes > kMaxHeaderBytes || header_bytes > *file_bytes - 8) {
    return invalid("a header of ", header_bytes, " bytes in a file of ", *file_bytes);
  }
  absl::StatusOr<std::string> header_text = ReadRange(env, path, 8, header_bytes);
  if (!header_text.ok()) return header_text.status();
  const nlohmann::json header =
      nlohmann::json::parse(*header_text, nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) return invalid("its header is not a JSON object");

  SafetensorsFile file;
  file.path_ = path;
  file.env_ = env;
  file.data_start_ = 8 + header_bytes;
  const uint64_t data_bytes = *file_bytes - file.data_start_;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return invalid("__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) return invalid("metadata ", Quoted(key), " is not a string");
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const auto dtype = entry.is_object() ? entry.find("dtype") : entry.end();
    const auto shape = entry.is_object() ? entry.find("shape") : entry.end();
    const auto offsets = entry.is_object() ? entry.find("data_offsets") : entry.end();
    if (dtype == entry.end() || shape == entry.end() || offsets == entry.end() ||
        !dtype->is_string() || !shape->is_array() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      return invalid("tensor ", Quoted(name), ": needs dtype, shape and two data_offsets");
    }
    SafetensorsFile::Tensor t;
    t.dtype = dtype->get<std::string>();
    const int size = SafetensorsDtypeSize(t.dtype);
    if (size == 0) return invalid("tensor ", Quoted(name), ": unknown dtype ", Quoted(t.dtype));
    unsigned __int128 bytes = static_cast<unsigned>(size);
    for (const nlohmann::json& d : *shape) {
      if (!d.is_number_unsigned() ||
          d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return invalid("tensor ", Quoted(name), ": a shape of ", QuotedJson(*shape));
      }
      t.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
      bytes *= d.get<uint64_t>();
      constexpr unsigned __int128 kPast64Bits = static_cast<unsigned __int128>(1) << 64;
      if (bytes > kPast64Bits) bytes = kPast64Bits;  // a size times another fits 128 bits
    }
    t.begin = (*offsets)[0].get<uint64_t>();
    t.end = (*offsets)[1].get<uint64_t>();
    if (t.begin > t.end || t.end > data_bytes) {
      return invalid("tensor ", Quoted(name), ": bytes [", t.begin, ", ", t.end, ") outside the ",
                     data_bytes, " bytes after the header");
    }
    if (bytes != t.end - t.begin) {
      return invalid("tensor ", Quoted(name), ": shape ", QuotedJson(*shape), " of ", t.dtype,
                     " needs ",
                     bytes > std::numeric_limits<uint64_t>::max()
                         ? "more than 2^64 bytes"
                         : absl::StrCat(static_cast<uint64_t>(bytes), " bytes"),
                     ", its range holds ", t.end - t.begin);
    }
    file.tensors_[name] = std::move(t);
  }
  if (absl::Status s = CheckNoOverlap(file.tensors(), path); !s.ok()) return s;
  return file;
}

absl::StatusOr<std::string> SafetensorsFile::ReadTensorBytes(const std::string& name) const {
  const Tensor& t = tensors_.at(name);
  absl::StatusOr<std::string> bytes =
      ReadRange(env_, path_, data_start_ + t.begin, t.end - t.begin);
  if (bytes.ok()) return bytes;
  // ReadRange's code (NotFound: the file has gone; DataLoss: cut short; ...),
  // with the tensor named: "open: No such file or directory" alone named the
  // file.
  return absl::Status(bytes.status().code(),
                      absl::StrCat(bytes.status().message(), " (tensor ", name,
                                   "; did the file change since its header was read?)"));
}

}  // namespace dropk
