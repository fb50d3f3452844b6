#include "trainer/checkpoint.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <map>
#include <random>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/text_format.h"
#include "model/tokenizer.h"
#include "trainer/crc32c.h"

namespace dropk {
namespace {

namespace pb = google::protobuf;

// A manifest holds a few hundred entries and at most a 2^24-entry CHAR
// vocabulary (64 MiB); anything larger is not a manifest.
constexpr uint64_t kMaxManifestBytes = 96u << 20;
constexpr uint64_t kMaxLatestBytes = 4096;
constexpr size_t kFloatBytes = sizeof(float);
// No model dropk can train has more parameters than this (16 TiB of fp32);
// a larger claim is corruption, refused before any arithmetic overflows.
constexpr unsigned __int128 kMaxParams = static_cast<unsigned __int128>(1) << 42;
constexpr int kMaxRank = 1 << 20;
constexpr int kTargetParams = 0, kTargetAdamM = 1, kTargetAdamV = 2;

std::string PathJoin(const std::string& dir, const std::string& name) {
  return dir + "/" + name;
}

// "checkpoint DIR: file F: tensor T: message" (omitting empty parts).
absl::Status CheckpointError(const std::string& where, const std::string& file,
                             const std::string& tensor, const std::string& message) {
  std::string text = absl::StrCat("checkpoint ", where);
  if (!file.empty()) absl::StrAppend(&text, ": file ", file);
  if (!tensor.empty()) absl::StrAppend(&text, ": tensor ", tensor);
  absl::StrAppend(&text, ": ", message);
  return absl::DataLossError(text);
}

// A file name an entry may point at: a plain name inside the checkpoint.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos &&
         name != kManifestFileName;
}

// step-NNNNNNNN (8 or more digits) -> N; -1 for any other name.
int64_t ParseStepDirName(const std::string& name) {
  if (name.size() < 13 || name.rfind("step-", 0) != 0) return -1;
  const std::string digits = name.substr(5);
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
  }
  int64_t step;
  if (!absl::SimpleAtoi(digits, &step)) return -1;
  return step;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<GptConfig> ShapeOf(const TrainConfig& config, const Tokenizer& tokenizer) {
  absl::StatusOr<TextTokenizer> tok = TextTokenizer::FromProto(tokenizer);
  if (!tok.ok()) return tok.status();
  GptConfig shape{tok->vocab_size(), config.block_size(), config.n_layer(), config.n_head(),
                  config.n_embd()};
  if (absl::Status s = shape.Validate(); !s.ok()) return s;
  return shape;
}

// Waits on a collective and turns its failure into a status naming `what`.
absl::Status WaitFor(std::unique_ptr<Work> work, const char* what) {
  absl::Status s = work->Wait();
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("checkpoint ", what, ": ", s.message()));
  return absl::OkStatus();
}

// Whether `kernels`' device memory is ordinary host memory (the CPU
// kernels), so checkpoint I/O can read and write it in place instead of
// staging every byte through the buffer: one memory pass less per save and
// load. The one place the checkpoint code looks at the device.
bool HostAddressable(const Kernels* kernels) { return kernels->device() == Device::kCpu; }

std::vector<char> MakeBuffer(size_t bytes) {
  // A multiple of the element size, so chunks never split a float.
  bytes = std::max<size_t>(kFloatBytes, bytes / kFloatBytes * kFloatBytes);
  return std::vector<char>(bytes, 0);  // zero-filled: every page touched now, not mid-save
}

// Every entry of a validated manifest, streamed in file order through two
// buffers of buffer_bytes: a reader thread fills one while this thread
// checksums the other and hands it to `sink` (may be null), so disk reads
// overlap CRC and copies. A chunk reaches the sink before its entry's CRC is
// known; on a mismatch the caller gets DataLoss and must not use the target.
using ChunkSink = std::function<void(int target, size_t element, const char* data, size_t bytes)>;
// Where a chunk may be read to directly (host memory), or null to stage it
// in a buffer and hand it to the sink.
using DirectFn = std::function<char*(int target, size_t element)>;

absl::Status StreamEntries(const std::string& dir, const ValidatedManifest& vm, Env* env,
                           size_t buffer_bytes, bool weights_only, const ChunkSink& sink,
                           const DirectFn& direct = nullptr) {
  const auto& entries = vm.manifest.tensors();
  std::vector<int> order;
  for (int i = 0; i < entries.size(); ++i) {
    if (!weights_only || vm.target[i] == kTargetParams) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    if (entries[a].file() != entries[b].file()) return entries[a].file() < entries[b].file();
    return entries[a].offset() < entries[b].offset();
  });
  struct Slot {
    std::vector<char> data;
    char* ptr = nullptr;  // data.data(), or the destination itself
    size_t n = 0;
    int entry = -1;
    uint64_t done = 0;  // bytes of the entry before this chunk
    absl::Status status;
    bool full = false;
    bool last = false;  // no chunk follows
  };
  Slot slots[2];
  for (Slot& slot : slots) slot.data = MakeBuffer(buffer_bytes);
  std::mutex mu;
  std::condition_variable cv;
  bool cancel = false;

  std::thread reader([&] {
    int k = 0;
    auto publish = [&](Slot& slot) {
      std::lock_guard<std::mutex> lock(mu);
      slot.full = true;
      cv.notify_all();
    };
    auto acquire = [&]() -> Slot* {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return cancel || !slots[k].full; });
      if (cancel) return nullptr;
      Slot* slot = &slots[k];
      k ^= 1;
      return slot;
    };
    for (int i : order) {
      const TensorEntry& e = entries[i];
      const std::string path = PathJoin(dir, e.file());
      for (uint64_t done = 0; done < e.length() || (done == 0 && e.length() == 0);) {
        Slot* slot = acquire();
        if (slot == nullptr) return;
        slot->n = static_cast<size_t>(std::min<uint64_t>(slot->data.size(), e.length() - done));
        slot->entry = i;
        slot->done = done;
        slot->last = false;
        slot->ptr = direct ? direct(vm.target[i], vm.element_offset[i] + done / kFloatBytes) : nullptr;
        if (slot->ptr == nullptr) slot->ptr = slot->data.data();
        slot->status = slot->n == 0 ? absl::OkStatus()
                                    : env->ReadFileRange(path, e.offset() + done, slot->n, slot->ptr);
        const bool failed = !slot->status.ok();
        publish(*slot);
        if (failed) return;
        done += slot->n;
        if (e.length() == 0) break;
      }
    }
    if (Slot* slot = acquire()) {
      slot->n = 0;
      slot->entry = -1;
      slot->last = true;
      slot->status = absl::OkStatus();
      publish(*slot);
    }
  });

  absl::Status result;
  uint32_t crc = 0;
  for (int k = 0;; k ^= 1) {
    Slot& slot = slots[k];
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return slot.full; });
    }
    if (slot.last) break;
    const TensorEntry& e = entries[slot.entry];
    if (!slot.status.ok()) {
      result = CheckpointError(dir, e.file(), e.name(), std::string(slot.status.message()));
      break;
    }
    if (slot.done == 0) crc = 0;
    crc = crc32c::Extend(crc, slot.ptr, slot.n);
    if (sink && slot.n > 0 && slot.ptr == slot.data.data()) {
      sink(vm.target[slot.entry], vm.element_offset[slot.entry] + slot.done / kFloatBytes,
           slot.data.data(), slot.n);
    }
    if (slot.done + slot.n == e.length() && crc != e.crc32c()) {
      result = CheckpointError(dir, e.file(), e.name(),
                               absl::StrFormat("CRC32C mismatch: manifest says 0x%08x, the %d bytes "
                                               "at offset %d give 0x%08x",
                                               e.crc32c(), e.length(), e.offset(), crc));
      break;
    }
    std::lock_guard<std::mutex> lock(mu);
    slot.full = false;
    cv.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    cancel = true;
    cv.notify_all();
  }
  reader.join();
  return result;
}


}  // namespace

std::string CheckpointDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

std::string OptimizerDataFileName(int rank, int world_size) {
  return absl::StrFormat("optim-rank%05d-of-%05d.data", rank, world_size);
}

std::pair<size_t, size_t> OptimizerSlice(size_t num_params, int rank, int world_size) {
  const auto at = [&](int r) {
    return static_cast<size_t>(static_cast<unsigned __int128>(num_params) * r / world_size);
  };
  return {at(rank), at(rank + 1)};
}

std::string CheckpointsDirOf(const TrainConfig& config) {
  return config.checkpoint_dir().empty() ? PathJoin(config.out_dir(), "checkpoints")
                                         : config.checkpoint_dir();
}

// ---------------------------------------------------------------- manifest

std::string SerializeManifestFile(const CheckpointManifest& manifest) {
  CheckpointManifestFile file;
  file.set_magic(kCheckpointMagic);
  file.set_format_version(kCheckpointFormatVersion);
  std::string bytes;
  manifest.SerializeToString(&bytes);
  file.set_manifest_crc32c(crc32c::Value(bytes.data(), bytes.size()));
  file.set_manifest(std::move(bytes));
  std::string out;
  file.SerializeToString(&out);
  return out;
}

absl::StatusOr<CheckpointManifest> ParseManifestFile(const std::string& bytes,
                                                     const std::string& where) {
  CheckpointManifestFile file;
  if (bytes.empty()) return CheckpointError(where, kManifestFileName, "", "empty file");
  if (!file.ParseFromString(bytes)) {
    return CheckpointError(where, kManifestFileName, "", "not a dropk checkpoint manifest (does not parse)");
  }
  if (file.magic() != kCheckpointMagic) {
    return CheckpointError(where, kManifestFileName, "",
                           absl::StrCat("wrong magic \"", absl::CHexEscape(file.magic().substr(0, 32)),
                                        "\", expected \"", kCheckpointMagic, "\""));
  }
  if (file.format_version() != kCheckpointFormatVersion) {
    return CheckpointError(where, kManifestFileName, "",
                           absl::StrCat("format version ", file.format_version(),
                                        " is not supported (this build reads version ",
                                        kCheckpointFormatVersion, ")"));
  }
  const uint32_t crc = crc32c::Value(file.manifest().data(), file.manifest().size());
  if (crc != file.manifest_crc32c()) {
    return CheckpointError(where, kManifestFileName, "",
                           absl::StrFormat("manifest CRC32C mismatch: stored 0x%08x, computed 0x%08x",
                                           file.manifest_crc32c(), crc));
  }
  CheckpointManifest manifest;
  if (!manifest.ParseFromString(file.manifest())) {
    return CheckpointError(where, kManifestFileName, "", "manifest body does not parse");
  }
  return manifest;
}

absl::StatusOr<ValidatedManifest> ValidateManifest(
    const CheckpointManifest& m, const std::string& where,
    const std::function<absl::StatusOr<uint64_t>(const std::string& file)>& file_size) {
  auto fail = [&](const std::string& file, const std::string& tensor, const std::string& msg) {
    return CheckpointError(where, file, tensor, msg);
  };
  if (m.step() < 0) return fail("", "", absl::StrCat("step=", m.step(), " is negative"));
  if (m.tokens_seen() < 0) return fail("", "", absl::StrCat("tokens_seen=", m.tokens_seen(), " is negative"));
  if (m.optimizer_step() < 0) {
    return fail("", "", absl::StrCat("optimizer_step=", m.optimizer_step(), " is negative"));
  }
  if (m.world_size() < 1 || m.world_size() > kMaxRank) {
    return fail("", "", absl::StrCat("world_size=", m.world_size(), " is not in [1, ", kMaxRank, "]"));
  }
  const TrainConfig& c = m.config();
  for (auto [name, v] : {std::pair{"n_layer", c.n_layer()}, {"n_head", c.n_head()},
                         {"n_embd", c.n_embd()}, {"block_size", c.block_size()}}) {
    if (v < 1) return fail("", "", absl::StrCat("config ", name, "=", v, " must be >= 1"));
  }
  // 4 tensors outside the blocks and 12 per block: a manifest with fewer
  // entries cannot be whole, and this bounds every size derived below.
  const int64_t expected_model_entries = 4 + 12 * static_cast<int64_t>(c.n_layer());
  if (expected_model_entries > m.tensors_size()) {
    return fail("", "", absl::StrCat("config n_layer=", c.n_layer(), " needs ", expected_model_entries,
                                     " model tensors, the manifest lists ", m.tensors_size(), " entries"));
  }
  absl::StatusOr<GptConfig> shape = ShapeOf(c, m.tokenizer());
  if (!shape.ok()) return fail("", "", absl::StrCat("model shape: ", shape.status().message()));
  {
    using U = unsigned __int128;
    const U V = shape->vocab_size, C = shape->n_embd, T = shape->block_size, L = shape->n_layer;
    const U total = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C;
    if (total > kMaxParams) {
      return fail("", "", absl::StrCat("model shape (", c.n_layer(), " layers, n_embd ", c.n_embd(),
                                       ", vocab ", shape->vocab_size, ") is absurdly large"));
    }
  }
  ValidatedManifest vm;
  vm.shape = *shape;
  const ParamLayout layout(*shape);
  vm.num_params = layout.num_params();
  if (m.num_params() != static_cast<int64_t>(vm.num_params)) {
    return fail("", "", absl::StrCat("num_params=", m.num_params(), " but the config's model has ",
                                     vm.num_params));
  }
  std::map<std::string, int> layout_index;
  for (size_t i = 0; i < layout.tensors().size(); ++i) {
    layout_index[kModelTensorPrefix + layout.tensors()[i].name] = static_cast<int>(i);
  }
  std::map<std::string, uint64_t> sizes;
  std::vector<bool> seen_model(layout.tensors().size(), false);
  std::vector<std::pair<uint64_t, uint64_t>> slices[2];  // adam_m, adam_v: (start, count)
  struct Range {
    uint64_t offset, length;
    int entry;
    bool operator<(const Range& o) const { return offset < o.offset; }
  };
  std::map<std::string, std::vector<Range>> ranges;  // per file
  vm.target.resize(m.tensors_size());
  vm.element_offset.resize(m.tensors_size());
  for (int i = 0; i < m.tensors_size(); ++i) {
    const TensorEntry& e = m.tensors(i);
    const std::string name = e.name().size() > 200 ? e.name().substr(0, 200) + "..." : e.name();
    if (e.name().empty()) return fail(e.file(), absl::StrCat("#", i), "entry without a name");
    if (!IsPlainFileName(e.file())) {
      return fail(absl::CHexEscape(e.file().substr(0, 100)), name,
                  "the data file must be a plain file name inside the checkpoint");
    }
    if (e.dtype() != FLOAT32) {
      return fail(e.file(), name, absl::StrCat("dtype ", static_cast<int>(e.dtype()),
                                               " is not supported (expected FLOAT32)"));
    }
    if (e.shape_size() > 8) return fail(e.file(), name, absl::StrCat(e.shape_size(), " dimensions"));
    unsigned __int128 numel = 1;
    for (int64_t d : e.shape()) {
      if (d < 0) return fail(e.file(), name, absl::StrCat("negative dimension ", d));
      numel *= static_cast<uint64_t>(d);
      if (numel > kMaxParams) return fail(e.file(), name, "absurd shape");
    }
    if (numel * kFloatBytes != e.length()) {
      return fail(e.file(), name,
                  absl::StrCat("shape [", absl::StrJoin(e.shape(), ","), "] x 4 bytes = ",
                               static_cast<uint64_t>(numel * kFloatBytes),
                               " bytes, but the entry's length is ", e.length()));
    }
    auto size_it = sizes.find(e.file());
    if (size_it == sizes.end()) {
      absl::StatusOr<uint64_t> size = file_size(e.file());
      if (!size.ok()) return fail(e.file(), name, absl::StrCat("missing or unreadable: ", size.status().message()));
      size_it = sizes.emplace(e.file(), *size).first;
    }
    if (static_cast<unsigned __int128>(e.offset()) + e.length() > size_it->second) {
      return fail(e.file(), name,
                  absl::StrCat("bytes [", e.offset(), ", ", static_cast<uint64_t>(e.offset() + e.length()),
                               ") lie past the end of the file (", size_it->second,
                               " bytes; truncated?)"));
    }
    ranges[e.file()].push_back({e.offset(), e.length(), i});
    if (auto it = layout_index.find(e.name()); it != layout_index.end()) {
      const ParamTensor& t = layout.tensors()[it->second];
      if (seen_model[it->second]) return fail(e.file(), name, "listed twice");
      seen_model[it->second] = true;
      if (std::vector<int64_t>(e.shape().begin(), e.shape().end()) != t.shape) {
        return fail(e.file(), name,
                    absl::StrCat("shape [", absl::StrJoin(e.shape(), ","), "] but the config's model has [",
                                 absl::StrJoin(t.shape, ","), "]"));
      }
      vm.target[i] = kTargetParams;
      vm.element_offset[i] = t.offset;
    } else if (e.name() == kAdamMName || e.name() == kAdamVName) {
      const int which = e.name() == kAdamMName ? 0 : 1;
      if (e.shape_size() != 1) return fail(e.file(), name, "an optimizer slice must be 1-D");
      if (static_cast<unsigned __int128>(e.slice_start()) + e.shape(0) > vm.num_params) {
        return fail(e.file(), name,
                    absl::StrCat("slice [", e.slice_start(), ", +", e.shape(0), ") exceeds the ",
                                 vm.num_params, " parameters"));
      }
      slices[which].push_back({e.slice_start(), static_cast<uint64_t>(e.shape(0))});
      vm.target[i] = which == 0 ? kTargetAdamM : kTargetAdamV;
      vm.element_offset[i] = e.slice_start();
    } else {
      return fail(e.file(), name, "unknown tensor name");
    }
  }
  // Entries never share bytes, so what a reader allocates from them is
  // bounded by the bytes really on disk.
  for (auto& [file, list] : ranges) {
    std::sort(list.begin(), list.end());
    for (size_t k = 1; k < list.size(); ++k) {
      if (list[k].length > 0 && list[k - 1].offset + list[k - 1].length > list[k].offset) {
        return fail(file, m.tensors(list[k].entry).name(),
                    absl::StrCat("bytes at offset ", list[k].offset, " overlap tensor ",
                                 m.tensors(list[k - 1].entry).name()));
      }
    }
  }
  for (size_t i = 0; i < seen_model.size(); ++i) {
    if (!seen_model[i]) {
      return fail("", kModelTensorPrefix + layout.tensors()[i].name, "missing from the manifest");
    }
  }
  for (int which = 0; which < 2; ++which) {
    const char* name = which == 0 ? kAdamMName : kAdamVName;
    auto& s = slices[which];
    std::sort(s.begin(), s.end());
    uint64_t next = 0;
    for (const auto& [start, count] : s) {
      if (start != next) {
        return fail("", name, absl::StrCat(start < next ? "slices overlap" : "slices leave a gap",
                                           " at element ", std::min(start, next)));
      }
      next = start + count;
    }
    if (next != vm.num_params) {
      return fail("", name, absl::StrCat("slices cover ", next, " of ", vm.num_params, " elements"));
    }
  }
  vm.manifest = m;
  return vm;
}

absl::StatusOr<ValidatedManifest> OpenCheckpoint(const std::string& dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  if (!env->IsDirectory(dir)) return CheckpointError(dir, "", "", "not a directory");
  absl::StatusOr<std::string> bytes =
      ReadSmallFile(env, PathJoin(dir, kManifestFileName), kMaxManifestBytes);
  if (!bytes.ok()) return CheckpointError(dir, kManifestFileName, "", std::string(bytes.status().message()));
  absl::StatusOr<CheckpointManifest> manifest = ParseManifestFile(*bytes, dir);
  if (!manifest.ok()) return manifest.status();
  return ValidateManifest(*manifest, dir, [&](const std::string& file) {
    return env->FileSize(PathJoin(dir, file));
  });
}

absl::Status VerifyCheckpoint(const std::string& dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(dir, env);
  if (!vm.ok()) return vm.status();
  return StreamEntries(dir, *vm, env, 8u << 20, /*weights_only=*/false, nullptr);
}

absl::StatusOr<CheckpointManifest> LoadCheckpointInto(const std::string& dir,
                                                      const CheckpointLoadTarget& target, Env* env,
                                                      size_t buffer_bytes) {
  if (env == nullptr) env = Env::Default();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(dir, env);
  if (!vm.ok()) return vm.status();
  if (vm->num_params != target.num_params) {
    return CheckpointError(dir, "", "", absl::StrCat("holds ", vm->num_params, " parameters, the model has ",
                                                     target.num_params));
  }
  float* dest[3] = {target.params, target.adam_m, target.adam_v};
  const bool weights_only = target.adam_m == nullptr || target.adam_v == nullptr;
  DirectFn direct;
  if (HostAddressable(target.kernels)) {
    direct = [&](int which, size_t element) { return reinterpret_cast<char*>(dest[which] + element); };
  }
  absl::Status s = StreamEntries(
      dir, *vm, env, buffer_bytes, weights_only,
      [&](int which, size_t element, const char* data, size_t bytes) {
        target.kernels->CopyToDevice(dest[which] + element, data, bytes);
      },
      direct);
  if (!s.ok()) return s;
  return std::move(vm->manifest);
}

absl::StatusOr<CheckpointData> ReadCheckpoint(const std::string& dir,
                                              const ReadCheckpointOptions& options) {
  Env* env = Env::Default();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(dir, env);
  if (!vm.ok()) return vm.status();
  CheckpointData data;
  const CheckpointManifest& m = vm->manifest;
  data.config = m.config();
  data.tokenizer = m.tokenizer();
  data.step = m.step();
  data.tokens_seen = m.tokens_seen();
  data.world_size = m.world_size();
  data.optimizer_step = m.optimizer_step();
  // Sizes were checked against the files, so these allocations are what the
  // files really hold.
  data.params.resize(vm->num_params);
  if (!options.weights_only) {
    data.adam_m.resize(vm->num_params);
    data.adam_v.resize(vm->num_params);
  }
  std::vector<float>* dest[3] = {&data.params, &data.adam_m, &data.adam_v};
  absl::Status s = StreamEntries(
      dir, *vm, env, 8u << 20, options.weights_only, nullptr,
      [&](int which, size_t element) { return reinterpret_cast<char*>(dest[which]->data() + element); });
  if (!s.ok()) return s;
  return data;
}

// ---------------------------------------------------------------- discovery

std::vector<std::string> CheckpointCandidates(const std::string& checkpoints_dir,
                                              std::vector<std::string>* skipped, Env* env) {
  if (env == nullptr) env = Env::Default();
  auto skip = [&](std::string reason) {
    if (skipped != nullptr) skipped->push_back(std::move(reason));
  };
  std::vector<std::string> candidates;
  const std::string latest_path = PathJoin(checkpoints_dir, kLatestFileName);
  std::string latest_name;
  if (env->FileExists(latest_path)) {
    absl::StatusOr<std::string> latest = ReadSmallFile(env, latest_path, kMaxLatestBytes);
    if (!latest.ok()) {
      skip(absl::StrCat(latest_path, ": ", latest.status().message()));
    } else {
      const std::string name(absl::StripAsciiWhitespace(*latest));
      if (name.empty()) {
        skip(absl::StrCat(latest_path, ": empty"));
      } else if (ParseStepDirName(name) < 0) {
        skip(absl::StrCat(latest_path, ": does not name a checkpoint (\"",
                          absl::CHexEscape(name.substr(0, 64)), "\")"));
      } else {
        latest_name = name;
        candidates.push_back(PathJoin(checkpoints_dir, name));
      }
    }
  }
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(checkpoints_dir);
  if (names.ok()) {
    std::vector<std::pair<int64_t, std::string>> steps;
    for (const std::string& name : *names) {
      const int64_t step = ParseStepDirName(name);
      if (step >= 0 && name != latest_name && env->IsDirectory(PathJoin(checkpoints_dir, name))) {
        steps.push_back({step, name});
      }
    }
    std::sort(steps.rbegin(), steps.rend());
    for (const auto& [step, name] : steps) candidates.push_back(PathJoin(checkpoints_dir, name));
  }
  return candidates;
}

absl::StatusOr<std::string> FindLatestValidCheckpoint(const std::string& checkpoints_dir,
                                                      std::vector<std::string>* skipped) {
  std::vector<std::string> reasons;
  for (const std::string& dir : CheckpointCandidates(checkpoints_dir, &reasons)) {
    absl::Status s = VerifyCheckpoint(dir);
    if (s.ok()) {
      if (skipped != nullptr) skipped->insert(skipped->end(), reasons.begin(), reasons.end());
      return dir;
    }
    reasons.push_back(absl::StrCat(dir, ": ", s.message()));
  }
  if (skipped != nullptr) skipped->insert(skipped->end(), reasons.begin(), reasons.end());
  return absl::NotFoundError(absl::StrCat(
      "no valid checkpoint in ", checkpoints_dir,
      reasons.empty() ? "" : absl::StrCat(" (", absl::StrJoin(reasons, "; "), ")")));
}

absl::Status CheckResumeConfig(const TrainConfig& checkpoint, const TrainConfig& now,
                               std::vector<std::string>* changes) {
  static const std::set<std::string> kMustMatch = {"n_layer", "n_head",  "n_embd",
                                                   "block_size", "seed", "dropout_stream"};
  static const std::set<std::string> kIgnored = {"resume", "checkpoint_dir", "out_dir"};
  const pb::Descriptor* d = TrainConfig::descriptor();
  const pb::Reflection* r = TrainConfig::GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (kIgnored.count(f->name()) || f->is_repeated()) continue;
    const bool has_a = !f->has_presence() || r->HasField(checkpoint, f);
    const bool has_b = !f->has_presence() || r->HasField(now, f);
    std::string a = "unset", b = "unset";
    if (has_a) pb::TextFormat::PrintFieldValueToString(checkpoint, f, -1, &a);
    if (has_b) pb::TextFormat::PrintFieldValueToString(now, f, -1, &b);
    if (a == b) continue;
    if (kMustMatch.count(f->name())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--resume: ", f->name(), "=", b, " contradicts the checkpoint's ", f->name(), "=", a,
          " (", f->name(), " defines the model or its randomness and cannot change on resume)"));
    }
    if (changes != nullptr) changes->push_back(absl::StrCat(f->name(), ": ", a, " -> ", b));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- writer

CheckpointWriter::CheckpointWriter(CheckpointWriterOptions options, Communicator* comm)
    : options_(std::move(options)),
      comm_(comm),
      env_(options_.env != nullptr ? options_.env : Env::Default()),
      buffer_(MakeBuffer(options_.buffer_bytes)) {}

absl::Status CheckpointWriter::WriteRun(const std::string& path,
                                        const std::vector<TensorEntry*>& entries,
                                        const std::vector<const float*>& sources, Kernels* kernels) {
  absl::StatusOr<std::unique_ptr<WritableFile>> file = env_->NewWritableFile(path);
  if (!file.ok()) return file.status();
  uint64_t offset = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    TensorEntry* e = entries[i];
    const char* src = reinterpret_cast<const char*>(sources[i]);
    uint32_t crc = 0;
    for (uint64_t done = 0; done < e->length();) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer_.size(), e->length() - done));
      const char* chunk = src + done;
      if (!HostAddressable(kernels)) {
        kernels->CopyToHost(buffer_.data(), src + done, n);
        chunk = buffer_.data();
      }
      // Checksum on a helper thread while this one writes the same bytes:
      // both only read the chunk, and the CRC then costs no wall time.
      std::future<uint32_t> next_crc = std::async(
          std::launch::async, [crc, chunk, n] { return crc32c::Extend(crc, chunk, n); });
      absl::Status written = (*file)->Append(chunk, n);
      crc = next_crc.get();
      if (!written.ok()) return written;
      done += n;
    }
    e->set_offset(offset);
    e->set_crc32c(crc);
    offset += e->length();
  }
  if (absl::Status s = (*file)->Sync(); !s.ok()) return s;
  return (*file)->Close();
}

absl::StatusOr<std::string> CheckpointWriter::Save(const CheckpointState& state) {
  const int rank = comm_->Rank(), world = comm_->Size();
  const std::string& root = options_.checkpoints_dir;
  const std::string final_name = CheckpointDirName(state.step);
  const std::string final_dir = PathJoin(root, final_name);

  absl::StatusOr<GptConfig> shape = ShapeOf(*state.config, *state.tokenizer);
  if (!shape.ok()) return shape.status();
  const ParamLayout layout(*shape);
  if (layout.num_params() != state.num_params) {
    return absl::InternalError(absl::StrCat("checkpoint: the model has ", state.num_params,
                                            " parameters, its config describes ", layout.num_params()));
  }

  // Rank 0 names the temporary directory and creates it; every rank learns
  // both the name and whether that worked.
  int64_t header[2] = {0, 0};  // nonce, failed
  if (rank == 0) {
    header[0] = static_cast<int64_t>(std::random_device{}() & 0x7FFFFFFF);
    absl::Status s = env_->CreateDir(root);
    if (s.ok()) s = env_->CreateDir(PathJoin(root, absl::StrFormat("%s.tmp-%08x", final_name, header[0])));
    if (!s.ok()) {
      header[1] = 1;
      std::fprintf(stderr, "dropk checkpoint: %s\n", std::string(s.message()).c_str());
    }
  }
  if (absl::Status s = WaitFor(comm_->Broadcast(HostBuffer(header, 2), 0), "broadcast"); !s.ok()) return s;
  const std::string tmp = PathJoin(root, absl::StrFormat("%s.tmp-%08x", final_name, header[0]));
  if (header[1] != 0) return absl::UnavailableError(absl::StrCat("checkpoint: cannot create ", tmp));

  CheckpointManifest manifest;
  manifest.set_step(state.step);
  manifest.set_tokens_seen(state.tokens_seen);
  *manifest.mutable_config() = *state.config;
  *manifest.mutable_tokenizer() = *state.tokenizer;
  manifest.set_data_step(state.step);
  manifest.set_schedule_step(state.step);
  manifest.set_dropout_step(state.step);
  manifest.set_world_size(world);
  manifest.set_optimizer_step(state.optimizer_step);
  manifest.set_last_train_loss(state.last_train_loss);
  manifest.set_num_params(static_cast<int64_t>(state.num_params));
  manifest.set_created_unix_ms(NowUnixMs());

  absl::Status local;
  // Model parameters: rank 0, one entry per tensor.
  if (rank == 0) {
    std::vector<TensorEntry*> entries;
    std::vector<const float*> sources;
    for (const ParamTensor& t : layout.tensors()) {
      TensorEntry* e = manifest.add_tensors();
      e->set_name(kModelTensorPrefix + t.name);
      e->set_dtype(FLOAT32);
      for (int64_t d : t.shape) e->add_shape(d);
      e->set_file(kModelDataFileName);
      e->set_length(t.numel * kFloatBytes);
      entries.push_back(e);
      sources.push_back(state.params + t.offset);
    }
    local = WriteRun(PathJoin(tmp, kModelDataFileName), entries, sources, state.kernels);
  }
  // Optimizer state: every rank its slice of m and v, in its own file.
  std::vector<TensorEntry> slices(2 * world);
  for (int r = 0; r < world; ++r) {
    const auto [begin, end] = OptimizerSlice(state.num_params, r, world);
    for (int k = 0; k < 2; ++k) {
      TensorEntry& e = slices[2 * r + k];
      e.set_name(k == 0 ? kAdamMName : kAdamVName);
      e.set_dtype(FLOAT32);
      e.add_shape(static_cast<int64_t>(end - begin));
      e.set_file(OptimizerDataFileName(r, world));
      e.set_length((end - begin) * kFloatBytes);
      // m then v in each rank's file; rank 0 writes these offsets into the
      // manifest for every rank, so they are fixed here, not by the writer.
      e.set_offset(k == 0 ? 0 : (end - begin) * kFloatBytes);
      e.set_slice_start(begin);
    }
  }
  if (local.ok()) {
    const auto [begin, end] = OptimizerSlice(state.num_params, rank, world);
    local = WriteRun(PathJoin(tmp, OptimizerDataFileName(rank, world)),
                     {&slices[2 * rank], &slices[2 * rank + 1]},
                     {state.adam_m + begin, state.adam_v + begin}, state.kernels);
  }
  if (!local.ok()) std::fprintf(stderr, "dropk checkpoint: rank %d: %s\n", rank, std::string(local.message()).c_str());
  // Every rank's part is durable (fsynced) before this exchange returns;
  // the CRCs of the slices travel with it to rank 0.
  int64_t mine[3] = {local.ok() ? 0 : 1, slices[2 * rank].crc32c(), slices[2 * rank + 1].crc32c()};
  std::vector<int64_t> all(3 * world);
  if (absl::Status s = WaitFor(comm_->AllGather(HostBuffer(mine, 3), HostBuffer(all.data(), all.size())),
                               "allgather");
      !s.ok()) {
    return s;
  }
  int64_t failed_ranks = 0;
  for (int r = 0; r < world; ++r) failed_ranks += all[3 * r] != 0;

  int64_t committed = 0;
  absl::Status commit_status;
  if (rank == 0) {
    if (failed_ranks == 0) {
      for (int r = 0; r < world; ++r) {
        slices[2 * r].set_crc32c(static_cast<uint32_t>(all[3 * r + 1]));
        slices[2 * r + 1].set_crc32c(static_cast<uint32_t>(all[3 * r + 2]));
        *manifest.add_tensors() = slices[2 * r];
        *manifest.add_tensors() = slices[2 * r + 1];
      }
      commit_status = Commit(tmp, final_dir, manifest);
      committed = commit_status.ok() ? 1 : 0;
    }
    if (committed == 0) env_->RemoveDirRecursively(tmp).IgnoreError();
  }
  if (absl::Status s = WaitFor(comm_->Broadcast(HostBuffer(&committed, 1), 0), "broadcast"); !s.ok()) {
    return s;
  }
  if (committed == 0) {
    if (!local.ok()) return absl::Status(local.code(), absl::StrCat("checkpoint ", tmp, ": ", local.message()));
    if (!commit_status.ok()) {
      return absl::Status(commit_status.code(), absl::StrCat("checkpoint ", final_dir, ": ", commit_status.message()));
    }
    return absl::UnavailableError(absl::StrCat("checkpoint ", final_dir, ": ", failed_ranks,
                                               " rank(s) failed to write their part; LATEST unchanged"));
  }
  if (rank == 0) {
    if (absl::Status s = ApplyRetention(state.step); !s.ok()) {
      // The new checkpoint is committed; failing to delete old ones is not
      // worth stopping training for.
      std::fprintf(stderr, "dropk checkpoint: retention: %s\n", std::string(s.message()).c_str());
    }
  }
  return final_dir;
}

absl::Status CheckpointWriter::Commit(const std::string& tmp, const std::string& final_dir,
                                      const CheckpointManifest& manifest) {
  const std::string& root = options_.checkpoints_dir;
  if (absl::Status s = WriteDurableFile(env_, PathJoin(tmp, kManifestFileName),
                                        SerializeManifestFile(manifest));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = env_->SyncDir(tmp); !s.ok()) return s;
  // A directory of the same step left by an earlier run (one we resumed
  // before, or a corrupt one we skipped) is moved aside, then deleted.
  std::string aside;
  if (env_->FileExists(final_dir)) {
    aside = absl::StrCat(tmp, ".old");
    if (absl::Status s = env_->RenameFile(final_dir, aside); !s.ok()) return s;
  }
  if (absl::Status s = env_->RenameFile(tmp, final_dir); !s.ok()) return s;
  if (absl::Status s = env_->SyncDir(root); !s.ok()) return s;
  const std::string name = CheckpointDirName(manifest.step()) + "\n";
  if (absl::Status s = ReplaceFileAtomically(env_, PathJoin(root, kLatestFileName),
                                             [&name](WritableFile& f) {
                                               return f.Append(name.data(), name.size());
                                             });
      !s.ok()) {
    return s;
  }
  if (!aside.empty()) env_->RemoveDirRecursively(aside).IgnoreError();
  return absl::OkStatus();
}

absl::Status CheckpointWriter::ApplyRetention(int64_t newest_step) {
  const std::string& root = options_.checkpoints_dir;
  absl::StatusOr<std::vector<std::string>> names = env_->ListDir(root);
  if (!names.ok()) return names.status();
  std::vector<int64_t> steps;
  absl::Status first_error;
  for (const std::string& name : *names) {
    const int64_t step = ParseStepDirName(name);
    if (step >= 0) {
      steps.push_back(step);
    } else if (name.rfind("step-", 0) == 0 && name.find(".tmp-") != std::string::npos) {
      // Left by a save that crashed; ours has been renamed already.
      if (absl::Status s = env_->RemoveDirRecursively(PathJoin(root, name)); !s.ok() && first_error.ok()) {
        first_error = s;
      }
    }
  }
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = 0; i < steps.size(); ++i) {
    const int64_t step = steps[i];
    const bool keep = step == newest_step || static_cast<int64_t>(i) < options_.keep_last ||
                      (options_.keep_every > 0 && step % options_.keep_every == 0);
    if (keep) continue;
    if (absl::Status s = env_->RemoveDirRecursively(PathJoin(root, CheckpointDirName(step)));
        !s.ok() && first_error.ok()) {
      first_error = s;
    }
  }
  if (absl::Status s = env_->SyncDir(root); !s.ok() && first_error.ok()) first_error = s;
  return first_error;
}

}  // namespace dropk
