#include "trainer/hf_gpt2_weights.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/cut_for_message.h"
#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "checkpoint/safetensors.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

constexpr char kHfPrefix[] = "transformer.";

// A tensor's `n` values as fp32, from the dtypes a model is stored in (F32,
// BF16 or F16), one dtype test per tensor.
std::vector<float> WidenedValues(std::string_view bytes, const std::string& dtype, size_t n) {
  std::vector<float> values(n);
  if (dtype == "F32") {
    std::memcpy(values.data(), bytes.data(), n * sizeof(float));
    return values;
  }
  const bool bf16 = dtype == "BF16";
  for (size_t i = 0; i < n; ++i) {
    uint16_t half;
    std::memcpy(&half, bytes.data() + 2 * i, 2);
    if (bf16) {
      const uint32_t bits = uint32_t{half} << 16;
      std::memcpy(&values[i], &bits, 4);
    } else {
      _Float16 h;
      std::memcpy(&h, &half, 2);
      values[i] = static_cast<float>(h);
    }
  }
  return values;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The number of transformer blocks the file holds: one more than the largest
// N of a "h.N." tensor (0 when there is none).
int BlocksIn(const SafetensorsFile& file) {
  static const std::regex kBlock(R"(^(transformer\.)?h\.(\d{1,6})\.)");
  int blocks = 0;
  for (const auto& [name, t] : file.tensors()) {
    std::smatch m;
    if (std::regex_search(name, m, kBlock)) blocks = std::max(blocks, std::stoi(m[2]) + 1);
  }
  return blocks;
}

// Whether `name` is one of Hugging Face's attention mask buffers, which
// hold no weights.
bool IsMaskBuffer(const std::string& name) {
  return absl::EndsWith(name, ".attn.bias") || absl::EndsWith(name, ".attn.masked_bias");
}

// A file exported by dropk records its tokenizer: it must be the data's.
absl::Status CheckTokenizer(const SafetensorsFile& file, const std::string& path,
                            const TextTokenizer& tokenizer) {
  const auto kind = file.metadata().find("dropk_tokenizer");
  if (kind == file.metadata().end()) return absl::OkStatus();
  const std::string data_kind = Tokenizer::Kind_Name(tokenizer.kind());
  if (kind->second != data_kind) {
    return absl::InvalidArgumentError(absl::StrCat(
        "init_from=", path, ": exported from a model with a ",
        CutAndEscapeForMessage(kind->second, 100), " tokenizer; data_dir's is ", data_kind));
  }
  const auto vocab = file.metadata().find("dropk_char_vocab");
  if (tokenizer.kind() == Tokenizer::CHAR && vocab != file.metadata().end() &&
      vocab->second != CharVocabJson(tokenizer)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "init_from=", path,
        ": exported from a model with other characters than data_dir's tokenizer; its token ids "
        "would mean other characters"));
  }
  return absl::OkStatus();
}

// Whether tensors `a` and `b` of `file` hold the same dtype and bytes; the
// bytes are read only when the dtypes and lengths agree.
absl::StatusOr<bool> SameTensorBytes(const SafetensorsFile& file, const std::string& a,
                                     const std::string& b) {
  const SafetensorsFile::Tensor& ta = file.tensors().at(a);
  const SafetensorsFile::Tensor& tb = file.tensors().at(b);
  if (ta.dtype != tb.dtype || ta.end - ta.begin != tb.end - tb.begin) return false;
  absl::StatusOr<std::string> bytes_a = file.ReadTensorBytes(a);
  if (!bytes_a.ok()) return bytes_a.status();
  absl::StatusOr<std::string> bytes_b = file.ReadTensorBytes(b);
  if (!bytes_b.ok()) return bytes_b.status();
  return *bytes_a == *bytes_b;
}

// Why `path`, which init_from names, is one of the near misses for a
// safetensors file, with what to pass instead; "" when it is none. A Hugging
// Face model directory (as a download of GPT-2 leaves, holding
// model.safetensors), a dropk checkpoint or run directory, which --resume
// reads, and `dropk ckpt export`'s own format all read "not a regular file"
// or "a header of 5789453510757012036 bytes".
std::string NearMissForWeights(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::is_regular_file(dir / "model.safetensors", ec)) {
      return absl::StrCat("a directory; init_from names the weights file in it: --init_from=",
                          (dir / "model.safetensors").string());
    }
    for (const char* checkpoint_file : {kManifestFileName, kLatestFileName, "checkpoints"}) {
      if (fs::exists(dir / checkpoint_file, ec)) {
        return absl::StrCat(
            "a dropk checkpoint directory; init_from reads a safetensors file (dropk ckpt export "
            "--format safetensors writes one), --resume=",
            path, " goes on from the checkpoint");
      }
    }
    return "a directory; init_from names a safetensors file";
  }
  char magic[8] = {};
  if (fs::is_regular_file(path, ec) &&
      Env::Default()->ReadFileRange(path, 0, sizeof(magic), magic).ok() &&
      std::string_view(magic, sizeof(magic)) == kExportMagic) {
    return "a dropk export of its own format; init_from reads safetensors: export with dropk ckpt "
           "export --format safetensors";
  }
  return "";
}

}  // namespace

bool IsHfConv1DWeight(const std::string& name) {
  for (const char* suffix :
       {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"}) {
    if (absl::EndsWith(name, suffix)) return true;
  }
  return false;
}

std::vector<float> Transposed(const float* values, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = values[r * cols + c];
  }
  return out;
}

std::string HfGpt2ConfigJson(const GptConfig& shape) {
  const nlohmann::ordered_json config = {
      {"architectures", {"GPT2LMHeadModel"}},
      {"model_type", "gpt2"},
      {"vocab_size", shape.vocab_size},
      {"n_positions", shape.block_size},
      {"n_ctx", shape.block_size},
      {"n_embd", shape.n_embd},
      {"n_layer", shape.n_layer},
      {"n_head", shape.n_head},
      {"activation_function", "gelu_new"},
      {"layer_norm_epsilon", 1e-5},
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"tie_word_embeddings", true},
  };
  return config.dump();
}

std::string CharVocabJson(const TextTokenizer& tokenizer) {
  nlohmann::json vocab = nlohmann::json::array();
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) vocab.push_back(tokenizer.DecodeOne(id));
  return vocab.dump();
}

absl::StatusOr<HfGpt2Weights> ReadHfGpt2Weights(const std::string& path, const GptConfig& shape,
                                                const TextTokenizer& tokenizer) {
  if (const std::string near_miss = NearMissForWeights(path); !near_miss.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("init_from=", path, ": ", near_miss));
  }
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(), absl::StrCat("init_from=", file.status().message()));
  }
  const std::string at = absl::StrCat("init_from=", path, ": ");
  if (absl::Status s = CheckTokenizer(*file, path, tokenizer); !s.ok()) return s;
  if (const int blocks = BlocksIn(*file); blocks != shape.n_layer) {
    return absl::InvalidArgumentError(absl::StrCat(at, "holds ", blocks,
                                                   " transformer blocks (tensors h.N.*)",
                                                   "; n_layer=", shape.n_layer, " needs as many"));
  }
  const ParamLayout layout(shape);
  HfGpt2Weights weights;
  weights.params.resize(layout.num_params());
  std::set<std::string> used;
  std::set<std::string> dtypes;
  std::optional<int64_t> cropped_from;
  for (const ParamTensor& p : layout.tensors()) {
    const std::string bare = p.name.substr(sizeof(kHfPrefix) - 1);
    auto found = file->tensors().find(p.name);
    if (found == file->tensors().end()) found = file->tensors().find(bare);
    if (found == file->tensors().end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, "has no tensor ", p.name, " (nor ", bare, ")"));
    }
    const auto& [name, t] = *found;
    used.insert(name);
    if (t.dtype != "F32" && t.dtype != "F16" && t.dtype != "BF16") {
      return absl::InvalidArgumentError(
          absl::StrCat(at, "tensor ", name, " is ", t.dtype, "; weights must be F32, F16 or BF16"));
    }
    dtypes.insert(t.dtype);
    const bool conv1d = IsHfConv1DWeight(p.name);
    std::vector<int64_t> expected = p.shape;
    if (conv1d) std::swap(expected[0], expected[1]);
    std::vector<int64_t> file_shape = t.shape;
    const bool positions = p.name == "transformer.wpe.weight";
    if (positions && file_shape.size() == 2 && file_shape[0] > expected[0] &&
        file_shape[1] == expected[1]) {
      cropped_from = file_shape[0];
      file_shape[0] = expected[0];  // the first block_size rows, row-major: a prefix
    }
    if (file_shape != expected) {
      const std::string why =
          p.name == "transformer.wte.weight"
              ? absl::StrCat(" (vocabulary ", shape.vocab_size,
                             " of data_dir's tokenizer, n_embd=", shape.n_embd, ")")
          : positions ? absl::StrCat(" (at least block_size=", shape.block_size,
                                     " rows, n_embd=", shape.n_embd, ")")
                      : absl::StrCat(" (n_embd=", shape.n_embd, ")");
      return absl::InvalidArgumentError(absl::StrCat(at, "tensor ", name, " has shape ",
                                                     ShapeText(t.shape), ", the model needs ",
                                                     ShapeText(expected), why));
    }
    absl::StatusOr<std::string> bytes = file->ReadTensorBytes(name);
    if (!bytes.ok()) {
      return absl::Status(bytes.status().code(),
                          absl::StrCat("init_from=", bytes.status().message()));
    }
    std::vector<float> values = WidenedValues(*bytes, t.dtype, p.numel);
    for (size_t i = 0; i < p.numel; ++i) {
      if (!std::isfinite(values[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, "tensor ", name, ": value ", values[i], " at index ", i));
      }
    }
    if (conv1d) values = Transposed(values.data(), expected[0], expected[1]);
    std::memcpy(weights.params.data() + p.offset, values.data(), p.numel * sizeof(float));
  }
  for (const auto& [name, t] : file->tensors()) {
    if (used.count(name) || IsMaskBuffer(name)) continue;
    if (name == "lm_head.weight") {
      const auto wte = file->tensors().find(
          used.count("transformer.wte.weight") ? "transformer.wte.weight" : "wte.weight");
      if (absl::StatusOr<bool> same = SameTensorBytes(*file, name, wte->first); !same.ok()) {
        return absl::Status(same.status().code(),
                            absl::StrCat("init_from=", same.status().message()));
      } else if (*same) {
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat(at, "lm_head.weight differs from the token embedding; dropk ties the two"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(at, "tensor ", CutAndEscapeForMessage(name, 200),
                     " is not one of GPT-2's; the file holds another model"));
  }
  weights.note = absl::StrCat("initialised from init_from=", path, " (", layout.tensors().size(),
                              " tensors, ", absl::StrJoin(dtypes, "+"),
                              dtypes.count("F32") == dtypes.size() ? "" : " widened to fp32",
                              cropped_from ? absl::StrCat(", position embeddings cropped from ",
                                                          *cropped_from, " to ", shape.block_size)
                                           : "",
                              ")");
  return weights;
}

}  // namespace dropk
