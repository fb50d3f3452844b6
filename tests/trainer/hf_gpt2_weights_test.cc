// init_from's reader: Hugging Face GPT-2 safetensors files, written here by
// hand (names, Conv1D transposes and dtypes spelled out in this file, not
// taken from the code under test), read into dropk's parameter layout.
#include "trainer/hf_gpt2_weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "checkpoint/safetensors.h"
#include "support/temp_dir.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr GptConfig kShape{/*vocab_size=*/5, /*block_size=*/4, /*n_layer=*/2, /*n_head=*/2,
                           /*n_embd=*/4};

TextTokenizer CharTokenizer(const std::string& chars) {
  Tokenizer proto;
  proto.set_kind(Tokenizer::CHAR);
  for (char c : chars) proto.add_code_points(static_cast<uint32_t>(c));
  return *TextTokenizer::FromProto(proto);
}

std::string Floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4);
}

class HfGpt2WeightsTest : public ::testing::Test {
 protected:
  // dropk's parameters for kShape: distinct values, so a misplaced element
  // shows.
  void SetUp() override {
    const ParamLayout layout(kShape);
    params_.resize(layout.num_params());
    for (size_t i = 0; i < params_.size(); ++i) params_[i] = 0.001f * static_cast<float>(i) - 1;
  }

  // The tensors of a Hugging Face file holding params_: `prefix` before
  // every name, the four projection weights per block stored (in, out).
  std::map<std::string, SafetensorsTensor> HfTensors(const std::string& prefix) const {
    const ParamLayout layout(kShape);
    std::map<std::string, SafetensorsTensor> out;
    for (const ParamTensor& t : layout.tensors()) {
      std::string name = t.name.substr(std::string("transformer.").size());
      std::vector<float> values(params_.begin() + t.offset, params_.begin() + t.offset + t.numel);
      std::vector<int64_t> shape = t.shape;
      for (const char* conv1d :
           {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"}) {
        if (!absl::EndsWith(name, conv1d)) continue;
        const int64_t rows = shape[0], cols = shape[1];  // dropk: (out, in)
        std::vector<float> in_out(values.size());
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) in_out[c * rows + r] = values[r * cols + c];
        }
        values = in_out;
        shape = {cols, rows};
      }
      out[prefix + name] = {prefix + name, "F32", shape, Floats(values)};
    }
    return out;
  }

  std::string Write(const std::map<std::string, SafetensorsTensor>& tensors,
                    const std::map<std::string, std::string>& metadata = {}) {
    std::vector<SafetensorsTensor> list;
    for (const auto& [name, t] : tensors) list.push_back(t);
    std::string bytes = SafetensorsHeader(list, metadata);
    for (const SafetensorsTensor& t : list) bytes += t.bytes;
    const std::string path = tmp_.Path("model.safetensors");
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return path;
  }

  std::string ErrorFor(const std::map<std::string, SafetensorsTensor>& tensors) {
    const std::string path = Write(tensors);
    absl::StatusOr<HfGpt2Weights> w = ReadHfGpt2Weights(path, kShape, tokenizer_);
    EXPECT_TRUE(absl::IsInvalidArgument(w.status())) << w.status();
    EXPECT_THAT(std::string(w.status().message()), HasSubstr("init_from=" + path + ": "));
    return std::string(w.status().message());
  }

  std::vector<float> params_;
  TextTokenizer tokenizer_ = CharTokenizer("abcde");
  test_util::ScopedTempDir tmp_{"hf_gpt2_weights_test"};
};

TEST_F(HfGpt2WeightsTest, ReadsTransformersNamesAndConv1DLayoutExactly) {
  absl::StatusOr<HfGpt2Weights> w =
      ReadHfGpt2Weights(Write(HfTensors("transformer.")), kShape, tokenizer_);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->params, params_);
  EXPECT_THAT(w->note, HasSubstr("(28 tensors, F32)"));
}

// GPT-2's own file: no "transformer." prefix, the attention mask buffers
// beside the weights, and (in some copies) the tied LM head.
TEST_F(HfGpt2WeightsTest, ReadsGpt2sOwnFileLayout) {
  std::map<std::string, SafetensorsTensor> tensors = HfTensors("");
  for (int l = 0; l < kShape.n_layer; ++l) {
    const std::string name = "h." + std::to_string(l) + ".attn.bias";
    tensors[name] = {name, "F32", {1, 1, 4, 4}, std::string(64, '\0')};
  }
  SafetensorsTensor head = tensors.at("wte.weight");
  head.name = "lm_head.weight";
  tensors[head.name] = head;
  absl::StatusOr<HfGpt2Weights> w = ReadHfGpt2Weights(Write(tensors), kShape, tokenizer_);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->params, params_);
}

TEST_F(HfGpt2WeightsTest, HalfPrecisionValuesAreWidenedExactly) {
  std::map<std::string, SafetensorsTensor> tensors = HfTensors("transformer.");
  // ln_f.weight in BF16 (the high halves of 1.0 and -2.5), ln_f.bias in F16
  // (0x3C00 = 1.0, 0xC100 = -2.5).
  const uint16_t bf16[4] = {0x3F80, 0xC020, 0x3F80, 0xC020};
  const uint16_t f16[4] = {0x3C00, 0xC100, 0x3C00, 0xC100};
  tensors["transformer.ln_f.weight"] = {
      "transformer.ln_f.weight", "BF16", {4}, std::string(reinterpret_cast<const char*>(bf16), 8)};
  tensors["transformer.ln_f.bias"] = {
      "transformer.ln_f.bias", "F16", {4}, std::string(reinterpret_cast<const char*>(f16), 8)};
  absl::StatusOr<HfGpt2Weights> w = ReadHfGpt2Weights(Write(tensors), kShape, tokenizer_);
  ASSERT_TRUE(w.ok()) << w.status();
  const ParamLayout layout(kShape);
  for (size_t offset : {layout.lnf_w(), layout.lnf_b()}) {
    EXPECT_EQ(std::vector<float>(w->params.begin() + offset, w->params.begin() + offset + 4),
              (std::vector<float>{1.0f, -2.5f, 1.0f, -2.5f}));
  }
  EXPECT_THAT(w->note, HasSubstr("widened to fp32"));
}

TEST_F(HfGpt2WeightsTest, LongerPositionEmbeddingsAreCroppedToBlockSize) {
  std::map<std::string, SafetensorsTensor> tensors = HfTensors("transformer.");
  SafetensorsTensor& wpe = tensors["transformer.wpe.weight"];
  const std::string extra_rows(4 * 4 * 4, '\x7f');  // rows 4..7, not read
  wpe.bytes += extra_rows;
  wpe.shape = {8, 4};
  absl::StatusOr<HfGpt2Weights> w = ReadHfGpt2Weights(Write(tensors), kShape, tokenizer_);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->params, params_);
  EXPECT_THAT(w->note, HasSubstr("position embeddings cropped from 8 to 4"));
}

TEST_F(HfGpt2WeightsTest, WhatDoesNotFitIsNamed) {
  std::map<std::string, SafetensorsTensor> tensors = HfTensors("transformer.");
  tensors.erase("transformer.h.1.ln_2.bias");
  EXPECT_THAT(ErrorFor(tensors), HasSubstr("has no tensor transformer.h.1.ln_2.bias (nor "
                                           "h.1.ln_2.bias)"));

  tensors = HfTensors("transformer.");
  for (auto it = tensors.begin(); it != tensors.end();) {
    it = absl::StartsWith(it->first, "transformer.h.1.") ? tensors.erase(it) : std::next(it);
  }
  EXPECT_THAT(ErrorFor(tensors), HasSubstr("holds 1 transformer blocks (tensors h.N.*); "
                                           "n_layer=2 needs as many"));

  tensors = HfTensors("transformer.");
  tensors["transformer.h.0.attn.c_attn.weight"].shape = {12, 4};  // dropk's (out, in): not Conv1D
  EXPECT_THAT(ErrorFor(tensors), HasSubstr("tensor transformer.h.0.attn.c_attn.weight has shape "
                                           "[12, 4], the model needs [4, 12] (n_embd=4)"));

  tensors = HfTensors("transformer.");
  tensors["transformer.wte.weight"].shape = {4, 5};
  EXPECT_THAT(ErrorFor(tensors), HasSubstr("vocabulary 5 of data_dir's tokenizer"));

  tensors = HfTensors("transformer.");
  tensors["transformer.h.0.mlp.extra"] = {"transformer.h.0.mlp.extra", "F32", {1}, Floats({0})};
  EXPECT_THAT(ErrorFor(tensors), HasSubstr("tensor transformer.h.0.mlp.extra is not one of "
                                           "GPT-2's"));

  tensors = HfTensors("transformer.");
  tensors["lm_head.weight"] = tensors.at("transformer.wte.weight");
  tensors["lm_head.weight"].name = "lm_head.weight";
  tensors["lm_head.weight"].bytes[0] ^= 1;
  EXPECT_THAT(ErrorFor(tensors), HasSubstr("lm_head.weight differs from the token embedding"));

  tensors = HfTensors("transformer.");
  std::vector<float> ln(4, 1.0f);
  ln[2] = std::numeric_limits<float>::quiet_NaN();
  tensors["transformer.h.0.ln_1.weight"].bytes = Floats(ln);
  EXPECT_THAT(ErrorFor(tensors), HasSubstr("tensor transformer.h.0.ln_1.weight: value nan at "
                                           "index 2"));

  tensors = HfTensors("transformer.");
  tensors["transformer.ln_f.bias"] = {"transformer.ln_f.bias", "I32", {4}, std::string(16, '\0')};
  EXPECT_THAT(ErrorFor(tensors), HasSubstr("is I32; weights must be F32, F16 or BF16"));
}

// A model directory, a checkpoint directory or a dropk-format export read
// "not a regular file" or "not a valid safetensors file: a header of
// 5789453510757012036 bytes", with no word of what to pass instead.
TEST_F(HfGpt2WeightsTest, NearMissesForAWeightsFileSayWhatToPass) {
  const std::string weights = Write(HfTensors(""));  // tmp/model.safetensors
  const std::string checkpoint = tmp_.Path("run/checkpoints/step-00000001");
  std::filesystem::create_directories(checkpoint);
  std::ofstream(checkpoint + "/manifest.pb") << "m";
  const std::string other = tmp_.Path("empty");
  std::filesystem::create_directories(other);
  const std::string exported = tmp_.Path("model.dropk");
  std::ofstream(exported, std::ios::binary) << std::string("DROPKEXP\x10\0\0\0\0\0\0\0", 16);
  const struct {
    std::string path, expected;
  } cases[] = {
      {tmp_.path(), "a directory; init_from names the weights file in it: --init_from=" + weights},
      {checkpoint,
       "a dropk checkpoint directory; init_from reads a safetensors file (dropk ckpt "
       "export --format safetensors writes one), --resume=" +
           checkpoint},
      {tmp_.Path("run"), "a dropk checkpoint directory"},
      {other, "a directory; init_from names a safetensors file"},
      {exported, "a dropk export of its own format; init_from reads safetensors"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<HfGpt2Weights> w = ReadHfGpt2Weights(c.path, kShape, tokenizer_);
    EXPECT_TRUE(absl::IsInvalidArgument(w.status())) << w.status();
    EXPECT_THAT(std::string(w.status().message()),
                HasSubstr("init_from=" + c.path + ": " + c.expected));
  }
}

// A dropk export records its tokenizer: another data set's characters
// would give every id another meaning.
TEST_F(HfGpt2WeightsTest, ADropkExportOfOtherCharactersIsRefused) {
  const std::string path = Write(
      HfTensors("transformer."),
      {{"dropk_tokenizer", "CHAR"}, {"dropk_char_vocab", CharVocabJson(CharTokenizer("abcdf"))}});
  absl::StatusOr<HfGpt2Weights> w = ReadHfGpt2Weights(path, kShape, tokenizer_);
  EXPECT_THAT(std::string(w.status().message()),
              HasSubstr("exported from a model with other characters"));
  const std::string same =
      Write(HfTensors("transformer."),
            {{"dropk_tokenizer", "CHAR"}, {"dropk_char_vocab", CharVocabJson(tokenizer_)}});
  EXPECT_TRUE(ReadHfGpt2Weights(same, kShape, tokenizer_).ok());
  const std::string bytes = Write(HfTensors("transformer."), {{"dropk_tokenizer", "BYTE"}});
  EXPECT_THAT(std::string(ReadHfGpt2Weights(bytes, kShape, tokenizer_).status().message()),
              HasSubstr("exported from a model with a BYTE tokenizer; data_dir's is CHAR"));
}

// What the file names, quoted in the error, stays one short line: a foreign
// tensor's name or the recorded tokenizer holding a newline, or 100 KB
// long, was quoted whole.
TEST_F(HfGpt2WeightsTest, NamesFromTheFileAreQuotedOnOneShortLine) {
  std::map<std::string, SafetensorsTensor> tensors = HfTensors("transformer.");
  const std::string foreign = "extra\nname" + std::string(100000, 'x');
  tensors[foreign] = {foreign, "F32", {1}, Floats({1.0f})};
  const absl::Status s = ReadHfGpt2Weights(Write(tensors), kShape, tokenizer_).status();
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("tensor extra\\u000anamexxx"), HasSubstr("...")));
  EXPECT_LT(s.message().size(), 1000u);
  const std::string kind = "BYTE\n" + std::string(100000, 'y');
  const absl::Status k =
      ReadHfGpt2Weights(Write(HfTensors("transformer."), {{"dropk_tokenizer", kind}}), kShape,
                        tokenizer_)
          .status();
  EXPECT_THAT(std::string(k.message()), HasSubstr("exported from a model with a BYTE\\u000ay"));
  EXPECT_LT(k.message().size(), 1000u);
}

}  // namespace
}  // namespace dropk
