#include "tools/safetensors_export.h"

#include <fstream>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"

namespace dropk {

bool IsHfConv1DWeight(const std::string& name) {
  for (const char* suffix : {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight",
                             ".mlp.c_proj.weight"}) {
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

bool IsDropkSafetensorsFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char length_bytes[8] = {};
  if (!in.read(reinterpret_cast<char*>(length_bytes), 8)) return false;
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) length |= uint64_t{length_bytes[i]} << (8 * i);
  constexpr uint64_t kMaxHeader = 100'000'000;  // the format's own limit on a header
  if (length == 0 || length > kMaxHeader) return false;
  std::string json(length, '\0');
  if (!in.read(json.data(), static_cast<std::streamsize>(length))) return false;
  const nlohmann::json header = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) return false;
  const auto metadata = header.find("__metadata__");
  if (metadata == header.end() || !metadata->is_object()) return false;
  const auto producer = metadata->find("producer");
  return producer != metadata->end() && producer->is_string() &&
         producer->get<std::string>() == "dropk ckpt export";
}

}  // namespace dropk
