// GPT-2 weights as Hugging Face holds them (GPT2LMHeadModel's state dict in
// a safetensors file), to and from dropk's parameters: what `dropk ckpt
// export --format safetensors` writes, and what dropk-train's init_from
// starts a run from (GPT-2's own weights, fetched by the user, for
// fine-tuning as nanoGPT's init_from='gpt2' does, or a dropk export).
//
// The names are dropk's (nanoGPT's, "transformer.h.0.attn.c_attn.weight"),
// which are Hugging Face's; the projection weights are stored transposed,
// as Hugging Face's Conv1D holds them (in, out), where dropk, like
// nanoGPT's nn.Linear, holds (out, in).
#ifndef DROPK_TRAINER_HF_GPT2_WEIGHTS_H_
#define DROPK_TRAINER_HF_GPT2_WEIGHTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/param_layout.h"
#include "model/tokenizer.h"

namespace dropk {

// Whether the parameter `name` (a ParamLayout name) is a projection weight
// that Hugging Face stores transposed.
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

// A model's parameters, in ParamLayout order, read from the safetensors
// file `path` in Hugging Face GPT-2's layout, and what was done to fit
// them.
struct HfGpt2Weights {
  std::vector<float> params;
  std::string note;  // one line for the log: tensors, dtype, any cropping
};

// Reads `path` (see safetensors.h) into parameters of a model of `shape`
// trained with `tokenizer`. Tensor names may carry Hugging Face's
// "transformer." prefix or not (GPT-2's own file has none); its attention
// mask buffers (attn.bias, attn.masked_bias) are skipped, as is an
// lm_head.weight equal to the token embedding (tied). Values may be F32,
// F16 or BF16, and must be finite. Position embeddings longer than
// shape.block_size are cropped to it (nanoGPT's crop_block_size). A file
// exported by dropk must also hold `tokenizer`'s kind (and, for CHAR, its
// characters). InvalidArgument naming `path` and the tensor, the config
// field (n_layer, n_embd, block_size) or the vocabulary that does not fit;
// NotFound when there is no such file.
absl::StatusOr<HfGpt2Weights> ReadHfGpt2Weights(const std::string& path, const GptConfig& shape,
                                                const TextTokenizer& tokenizer);

}  // namespace dropk

#endif  // DROPK_TRAINER_HF_GPT2_WEIGHTS_H_
