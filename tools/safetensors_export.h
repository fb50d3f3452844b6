// `dropk ckpt export --format safetensors`: a checkpoint's weights as a
// safetensors file (https://github.com/huggingface/safetensors: an 8-byte
// little-endian header length, a JSON header, then the tensors' bytes) laid
// out as Hugging Face's GPT2LMHeadModel holds them, so PyTorch, Hugging Face
// Transformers and anything else that reads safetensors load a dropk model
// without dropk.
//
// Hand-written: Debian packages no safetensors library for C++, and the
// format is a JSON header that nlohmann::json writes.
#ifndef DROPK_TOOLS_SAFETENSORS_EXPORT_H_
#define DROPK_TOOLS_SAFETENSORS_EXPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/param_layout.h"
#include "model/tokenizer.h"

namespace dropk {

// Whether the parameter `name` (a ParamLayout name) is a projection weight
// that Hugging Face's GPT-2 stores transposed: its Conv1D modules hold
// (in, out) where dropk, like nanoGPT's nn.Linear, holds (out, in).
bool IsHfConv1DWeight(const std::string& name);

// `values` (a row-major rows x cols matrix) transposed into cols x rows.
std::vector<float> Transposed(const float* values, int64_t rows, int64_t cols);

// The Hugging Face GPT2Config (config.json's fields) of a dropk model of
// this shape: GPT-2's tanh GELU ("gelu_new"), LayerNorm eps 1e-5, tied
// embeddings, no dropout (an export is for inference).
std::string HfGpt2ConfigJson(const GptConfig& shape);

// A CHAR tokenizer's vocabulary as a JSON array of strings, token id i's
// character (UTF-8) at index i.
std::string CharVocabJson(const TextTokenizer& tokenizer);

// One tensor of a safetensors file: its name, safetensors dtype ("F32",
// "F16", "BF16"), shape, and its bytes, row-major, little-endian.
struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// The file's first bytes, which the tensors' bytes follow in the order
// given: the 8-byte header length and the JSON header, which maps each name
// to its dtype, shape and [begin, end) within the bytes after the header,
// with `metadata` as "__metadata__" (string values only, as the format
// requires). The header is padded with spaces to a multiple of 8 bytes, so
// every tensor of 8-byte aligned size starts aligned.
std::string SafetensorsHeader(const std::vector<SafetensorsTensor>& tensors,
                              const std::map<std::string, std::string>& metadata);

// Whether the file at `path` is a safetensors file this export wrote (its
// metadata names dropk as its producer): one an export may replace.
bool IsDropkSafetensorsFile(const std::string& path);

}  // namespace dropk

#endif  // DROPK_TOOLS_SAFETENSORS_EXPORT_H_
