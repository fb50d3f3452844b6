#include "model/param_layout.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace dropk {

absl::Status GptConfig::Validate() const {
  auto positive = [](const char* name, int value) -> absl::Status {
    if (value > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(name, "=", value, ": must be positive"));
  };
  for (auto [name, value] : {std::pair{"vocab_size", vocab_size},
                             {"block_size", block_size},
                             {"n_layer", n_layer},
                             {"n_head", n_head},
                             {"n_embd", n_embd}}) {
    if (absl::Status s = positive(name, value); !s.ok()) return s;
  }
  if (n_embd % n_head != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_embd=", n_embd, ": must be divisible by n_head=", n_head));
  }
  return absl::OkStatus();
}

namespace {

// One tensor of a transformer block: its name after "transformer.h.<l>."
// and its shape in units of C (n_embd): (rows * C, cols * C), or (rows * C)
// for a vector (cols 0).
struct BlockTensorShape {
  const char* suffix;
  int64_t rows, cols;
};

// The tensors of one block, in buffer order. The constructor and CountParams
// both read this table, so the count can never disagree with the layout.
constexpr BlockTensorShape kBlockTensors[] = {
    {"ln_1.weight", 1, 0},      {"ln_1.bias", 1, 0},          {"attn.c_attn.weight", 3, 1},
    {"attn.c_attn.bias", 3, 0}, {"attn.c_proj.weight", 1, 1}, {"attn.c_proj.bias", 1, 0},
    {"ln_2.weight", 1, 0},      {"ln_2.bias", 1, 0},          {"mlp.c_fc.weight", 4, 1},
    {"mlp.c_fc.bias", 4, 0},    {"mlp.c_proj.weight", 1, 4},  {"mlp.c_proj.bias", 1, 0},
};

std::vector<int64_t> ShapeOf(const BlockTensorShape& t, int64_t C) {
  if (t.cols == 0) return {t.rows * C};
  return {t.rows * C, t.cols * C};
}

}  // namespace

absl::StatusOr<uint64_t> ParamLayout::CountParams(const GptConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const uint64_t V = config.vocab_size, C = config.n_embd, T = config.block_size,
                 L = config.n_layer;
  // In 128 bits: with every dimension below 2^31, no step can overflow.
  unsigned __int128 per_block = 0;
  for (const BlockTensorShape& t : kBlockTensors) {
    per_block += static_cast<unsigned __int128>(t.rows) * C * (t.cols == 0 ? 1 : t.cols * C);
  }
  // wte (V,C) + wpe (T,C) + L blocks + ln_f (C) and its bias (C).
  const unsigned __int128 total = static_cast<unsigned __int128>(V + T + 2) * C + per_block * L;
  if (total > std::numeric_limits<uint64_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_layer=", L, ", n_embd=", C, ": the parameter count overflows 64 bits"));
  }
  return static_cast<uint64_t>(total);
}

ParamLayout::ParamLayout(const GptConfig& config) : config_(config) {
  const int64_t V = config.vocab_size, C = config.n_embd, T = config.block_size;
  auto add = [this](std::string name, std::vector<int64_t> shape, int layer) {
    size_t numel = 1;
    for (int64_t d : shape) numel *= static_cast<size_t>(d);
    const bool decay = shape.size() >= 2;
    tensors_.push_back({std::move(name), std::move(shape), total_, numel, decay, layer});
    total_ += numel;
  };
  add("transformer.wte.weight", {V, C}, -1);
  add("transformer.wpe.weight", {T, C}, -1);
  for (int l = 0; l < config.n_layer; ++l) {
    block_begin_.push_back(total_);
    const std::string p = absl::StrCat("transformer.h.", l, ".");
    for (const BlockTensorShape& t : kBlockTensors) add(p + t.suffix, ShapeOf(t, C), l);
  }
  block_begin_.push_back(total_);
  add("transformer.ln_f.weight", {C}, -1);
  add("transformer.ln_f.bias", {C}, -1);
}

BlockTensors ParamLayout::Block(float* base, int layer) const {
  // 2 fixed tensors, then 12 per block, in the order added above.
  const ParamTensor* t = &tensors_[2 + 12 * layer];
  auto at = [&](int i) { return base + t[i].offset; };
  return {at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7), at(8), at(9), at(10), at(11)};
}

}  // namespace dropk
