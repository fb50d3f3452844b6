// ValidateManifest: every claim of a manifest checked before anything is
// allocated from it, one seam per kind of claim.
#include <algorithm>
#include <map>
#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/cut_for_message.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "errors.h"

namespace dropk {
namespace {

using namespace checkpoint_internal;  // NOLINT: the library's own private helpers
using U128 = unsigned __int128;

// A file name an entry may point at: a plain name inside the checkpoint.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos &&
         name != kManifestFileName;
}

// Runs the checks in order; each returns the first failure, naming `where`,
// the file and the tensor.
class ManifestValidator {
 public:
  ManifestValidator(const CheckpointManifest& m, const std::string& where,
                    const FileSizeFn& file_size)
      : m_(m), where_(where), file_size_(file_size) {}

  absl::StatusOr<ValidatedManifest> Run() {
    if (absl::Status s = CheckScalars(); !s.ok()) return s;
    if (absl::Status s = CheckModelShape(); !s.ok()) return s;
    vm_.target.resize(m_.tensors_size());
    vm_.element_offset.resize(m_.tensors_size());
    for (int i = 0; i < m_.tensors_size(); ++i) {
      if (absl::Status s = CheckEntry(i); !s.ok()) return s;
      if (absl::Status s = PlaceEntry(i); !s.ok()) return s;
    }
    if (absl::Status s = CheckNoOverlap(); !s.ok()) return s;
    if (absl::Status s = CheckModelCoverage(); !s.ok()) return s;
    for (int which = 0; which < 2; ++which) {
      if (absl::Status s = CheckSliceCoverage(which); !s.ok()) return s;
    }
    if (absl::Status s = CheckPinnedFileSizes(); !s.ok()) return s;
    vm_.manifest = m_;
    return std::move(vm_);
  }

 private:
  absl::Status Fail(const std::string& file, const std::string& tensor,
                    const std::string& message) const {
    return CheckpointError(where_, file, tensor, message);
  }

  // Step counters, world size and the config's dimensions.
  absl::Status CheckScalars() const {
    // A negative position resumed into batches, a schedule and dropout
    // masks of no step (the counters' arithmetic wrapped).
    for (auto [name, v] : {std::pair<const char*, int64_t>{"step", m_.step()},
                           {"tokens_seen", m_.tokens_seen()},
                           {"data_step", m_.data_step()},
                           {"schedule_step", m_.schedule_step()},
                           {"dropout_step", m_.dropout_step()},
                           {"optimizer_step", m_.optimizer_step()}}) {
      if (v < 0) return Fail("", "", absl::StrCat(name, "=", v, " is negative"));
    }
    if (m_.world_size() < 1 || m_.world_size() > kMaxRank) {
      return Fail("", "",
                  absl::StrCat("world_size=", m_.world_size(), " is not in [1, ", kMaxRank, "]"));
    }
    const TrainConfig& c = m_.config();
    for (auto [name, v] : {std::pair{"n_layer", c.n_layer()},
                           {"n_head", c.n_head()},
                           {"n_embd", c.n_embd()},
                           {"block_size", c.block_size()}}) {
      if (v < 1) return Fail("", "", absl::StrCat("config ", name, "=", v, " must be >= 1"));
    }
    // 4 tensors outside the blocks and 12 per block: a manifest with fewer
    // entries cannot be whole, and this bounds every size derived below.
    const int64_t expected_model_entries = 4 + 12 * static_cast<int64_t>(c.n_layer());
    if (expected_model_entries > m_.tensors_size()) {
      return Fail(
          "", "",
          absl::StrCat("config n_layer=", c.n_layer(), " needs ", expected_model_entries,
                       " model tensors, the manifest lists ", m_.tensors_size(), " entries"));
    }
    return absl::OkStatus();
  }

  // The model the config and tokenizer describe, and its parameter count.
  absl::Status CheckModelShape() {
    const TrainConfig& c = m_.config();
    absl::StatusOr<GptConfig> shape = ShapeOf(c, m_.tokenizer());
    if (!shape.ok()) return Fail("", "", absl::StrCat("model shape: ", shape.status().message()));
    const U128 V = shape->vocab_size, C = shape->n_embd, T = shape->block_size, L = shape->n_layer;
    const U128 total = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C;
    if (total > kMaxParams) {
      return Fail("", "",
                  absl::StrCat("model shape (", c.n_layer(), " layers, n_embd ", c.n_embd(),
                               ", vocab ", shape->vocab_size, ") is absurdly large"));
    }
    vm_.shape = *shape;
    layout_ = std::make_unique<ParamLayout>(*shape);
    vm_.num_params = layout_->num_params();
    if (m_.num_params() != static_cast<int64_t>(vm_.num_params)) {
      return Fail("", "",
                  absl::StrCat("num_params=", m_.num_params(), " but the config's model has ",
                               vm_.num_params));
    }
    for (size_t i = 0; i < layout_->tensors().size(); ++i) {
      layout_index_[kModelTensorPrefix + layout_->tensors()[i].name] = static_cast<int>(i);
    }
    seen_model_.assign(layout_->tensors().size(), false);
    return absl::OkStatus();
  }

  static std::string Shorten(const std::string& name) { return CutForMessage(name, 200); }

  // Name, file, dtype, shape x dtype = length, and the bytes inside the file.
  absl::Status CheckEntry(int i) {
    const TensorEntry& e = m_.tensors(i);
    const std::string name = Shorten(e.name());
    if (e.name().empty()) return Fail(e.file(), absl::StrCat("#", i), "entry without a name");
    if (!IsPlainFileName(e.file())) {
      return Fail(absl::CHexEscape(e.file().substr(0, 100)), name,
                  "the data file must be a plain file name inside the checkpoint");
    }
    if (e.dtype() != FLOAT32) {
      return Fail(e.file(), name,
                  absl::StrCat("dtype ", static_cast<int>(e.dtype()),
                               " is not supported (expected FLOAT32)"));
    }
    if (e.shape_size() > 8)
      return Fail(e.file(), name, absl::StrCat(e.shape_size(), " dimensions"));
    U128 numel = 1;
    for (int64_t d : e.shape()) {
      if (d < 0) return Fail(e.file(), name, absl::StrCat("negative dimension ", d));
      numel *= static_cast<uint64_t>(d);
      if (numel > kMaxParams) return Fail(e.file(), name, "absurd shape");
    }
    if (numel * kFloatBytes != e.length()) {
      return Fail(e.file(), name,
                  absl::StrCat("shape [", absl::StrJoin(e.shape(), ","),
                               "] x 4 bytes = ", static_cast<uint64_t>(numel * kFloatBytes),
                               " bytes, but the entry's length is ", e.length()));
    }
    absl::StatusOr<uint64_t> size = SizeOf(e.file());
    if (!size.ok()) {
      return CheckpointReadError(where_, e.file(), name, size.status(), "missing or unreadable: ");
    }
    if (static_cast<U128>(e.offset()) + e.length() > *size) {
      return Fail(
          e.file(), name,
          absl::StrCat("bytes [", e.offset(), ", ", static_cast<uint64_t>(e.offset() + e.length()),
                       ") lie past the end of the file (", *size, " bytes; truncated?)"));
    }
    ranges_[e.file()].push_back({e.offset(), e.length(), i});
    return absl::OkStatus();
  }

  // A data file's size on disk, asked once per file.
  absl::StatusOr<uint64_t> SizeOf(const std::string& file) {
    auto it = sizes_.find(file);
    if (it == sizes_.end()) {
      absl::StatusOr<uint64_t> size = file_size_(file);
      if (!size.ok()) return size.status();
      it = sizes_.emplace(file, *size).first;
    }
    return it->second;
  }

  // Which flat tensor entry i fills, and where: a model tensor of the
  // layout (its shape must match) or a slice of an optimizer moment.
  absl::Status PlaceEntry(int i) {
    const TensorEntry& e = m_.tensors(i);
    const std::string name = Shorten(e.name());
    if (auto it = layout_index_.find(e.name()); it != layout_index_.end()) {
      const ParamTensor& t = layout_->tensors()[it->second];
      if (seen_model_[it->second]) return Fail(e.file(), name, "listed twice");
      seen_model_[it->second] = true;
      if (std::vector<int64_t>(e.shape().begin(), e.shape().end()) != t.shape) {
        return Fail(
            e.file(), name,
            absl::StrCat("shape [", absl::StrJoin(e.shape(), ","), "] but the config's model has [",
                         absl::StrJoin(t.shape, ","), "]"));
      }
      vm_.target[i] = kTargetParams;
      vm_.element_offset[i] = t.offset;
      return absl::OkStatus();
    }
    if (e.name() == kAdamMName || e.name() == kAdamVName) {
      const int which = e.name() == kAdamMName ? 0 : 1;
      if (e.shape_size() != 1) return Fail(e.file(), name, "an optimizer slice must be 1-D");
      if (!IsOptimizerFileOfTheWorld(e.file())) {
        return Fail(e.file(), name,
                    absl::StrCat("not an optimizer file of the world_size=", m_.world_size(),
                                 " ranks the manifest names (",
                                 OptimizerDataFileName(0, m_.world_size()), ", ...)"));
      }
      if (static_cast<U128>(e.slice_start()) + e.shape(0) > vm_.num_params) {
        return Fail(e.file(), name,
                    absl::StrCat("slice [", e.slice_start(), ", +", e.shape(0), ") exceeds the ",
                                 vm_.num_params, " parameters"));
      }
      slices_[which].push_back({e.slice_start(), static_cast<uint64_t>(e.shape(0))});
      vm_.target[i] = which == 0 ? kTargetAdamM : kTargetAdamV;
      vm_.element_offset[i] = e.slice_start();
      return absl::OkStatus();
    }
    return Fail(e.file(), name, "unknown tensor name");
  }

  // Whether `file` is OptimizerDataFileName(r, world_size) for a rank r of
  // the manifest's world: a world_size that its optimizer files contradict
  // (a hand-edited manifest) told a resume the wrong rank count.
  bool IsOptimizerFileOfTheWorld(const std::string& file) const {
    constexpr std::string_view kPrefix = "optim-rank";
    int rank = -1;
    if (!file.starts_with(kPrefix) ||
        !absl::SimpleAtoi(file.substr(kPrefix.size(), file.find('-', kPrefix.size()) -
                                                          kPrefix.size()),
                          &rank)) {
      return false;
    }
    return rank >= 0 && rank < m_.world_size() &&
           OptimizerDataFileName(rank, m_.world_size()) == file;
  }

  // Entries never share bytes, so what a reader allocates from them is
  // bounded by the bytes really on disk.
  absl::Status CheckNoOverlap() {
    for (auto& [file, list] : ranges_) {
      std::sort(list.begin(), list.end());
      for (size_t k = 1; k < list.size(); ++k) {
        if (list[k].length > 0 && list[k - 1].offset + list[k - 1].length > list[k].offset) {
          return Fail(file, m_.tensors(list[k].entry).name(),
                      absl::StrCat("bytes at offset ", list[k].offset, " overlap tensor ",
                                   m_.tensors(list[k - 1].entry).name()));
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckModelCoverage() const {
    for (size_t i = 0; i < seen_model_.size(); ++i) {
      if (!seen_model_[i]) {
        return Fail("", kModelTensorPrefix + layout_->tensors()[i].name,
                    "missing from the manifest");
      }
    }
    return absl::OkStatus();
  }

  // The slices of adam_m (which 0) or adam_v (1) tile the parameters exactly.
  absl::Status CheckSliceCoverage(int which) {
    const char* name = which == 0 ? kAdamMName : kAdamVName;
    auto& s = slices_[which];
    std::sort(s.begin(), s.end());
    uint64_t next = 0;
    for (const auto& [start, count] : s) {
      if (start != next) {
        return Fail("", name,
                    absl::StrCat(start < next ? "slices overlap" : "slices leave a gap",
                                 " at element ", std::min(start, next)));
      }
      next = start + count;
    }
    if (next != vm_.num_params) {
      return Fail("", name,
                  absl::StrCat("slices cover ", next, " of ", vm_.num_params, " elements"));
    }
    return absl::OkStatus();
  }

  // Format version 2: every data file is listed once with its exact size,
  // and the file on disk has exactly that size (bytes appended after the
  // last entry are corruption too). A version-1 manifest lists none.
  absl::Status CheckPinnedFileSizes() {
    if (m_.data_files_size() == 0) return absl::OkStatus();
    std::map<std::string, uint64_t> pinned;
    for (const DataFileInfo& f : m_.data_files()) {
      if (!IsPlainFileName(f.name())) {
        return Fail(absl::CHexEscape(f.name().substr(0, 100)), "",
                    "a listed data file must be a plain file name inside the checkpoint");
      }
      if (!pinned.emplace(f.name(), f.size()).second) {
        return Fail(f.name(), "", "listed twice among the data files");
      }
      absl::StatusOr<uint64_t> size = SizeOf(f.name());
      if (!size.ok()) {
        return CheckpointReadError(where_, f.name(), "", size.status(), "missing or unreadable: ");
      }
      if (*size != f.size()) {
        return Fail(f.name(), "",
                    absl::StrCat("is ", *size, " bytes, the manifest says ", f.size(),
                                 *size > f.size() ? " (bytes appended?)" : " (truncated?)"));
      }
    }
    for (const auto& [file, list] : ranges_) {
      if (!pinned.contains(file)) {
        return Fail(file, m_.tensors(list.front().entry).name(),
                    "the file is not among the manifest's data files");
      }
    }
    return absl::OkStatus();
  }

  struct Range {
    uint64_t offset, length;
    int entry;
    bool operator<(const Range& o) const { return offset < o.offset; }
  };

  const CheckpointManifest& m_;
  const std::string& where_;
  const FileSizeFn& file_size_;
  ValidatedManifest vm_;
  std::unique_ptr<ParamLayout> layout_;
  std::map<std::string, int> layout_index_;  // "model/<name>" -> layout tensor
  std::vector<bool> seen_model_;
  std::map<std::string, uint64_t> sizes_;                 // per data file, from file_size_
  std::map<std::string, std::vector<Range>> ranges_;      // per data file
  std::vector<std::pair<uint64_t, uint64_t>> slices_[2];  // adam_m, adam_v: (start, count)
};

}  // namespace

absl::StatusOr<ValidatedManifest> ValidateManifest(const CheckpointManifest& manifest,
                                                   const std::string& where,
                                                   const FileSizeFn& file_size) {
  return ManifestValidator(manifest, where, file_size).Run();
}

}  // namespace dropk
