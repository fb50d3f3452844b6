#include "model/param_layout.h"

#include "absl/strings/str_cat.h"

namespace dropk {

absl::Status GptConfig::Validate() const {
  auto positive = [](const char* name, int value) -> absl::Status {
    if (value > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(name, "=", value, ": must be positive"));
  };
  for (auto [name, value] : {std::pair{"vocab_size", vocab_size}, {"block_size", block_size},
                             {"n_layer", n_layer}, {"n_head", n_head}, {"n_embd", n_embd}}) {
    if (absl::Status s = positive(name, value); !s.ok()) return s;
  }
  if (n_embd % n_head != 0) {
    return absl::InvalidArgumentError(absl::StrCat("n_embd=", n_embd, ": must be divisible by n_head=",
                                                   n_head));
  }
  return absl::OkStatus();
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
    add(p + "ln_1.weight", {C}, l);
    add(p + "ln_1.bias", {C}, l);
    add(p + "attn.c_attn.weight", {3 * C, C}, l);
    add(p + "attn.c_attn.bias", {3 * C}, l);
    add(p + "attn.c_proj.weight", {C, C}, l);
    add(p + "attn.c_proj.bias", {C}, l);
    add(p + "ln_2.weight", {C}, l);
    add(p + "ln_2.bias", {C}, l);
    add(p + "mlp.c_fc.weight", {4 * C, C}, l);
    add(p + "mlp.c_fc.bias", {4 * C}, l);
    add(p + "mlp.c_proj.weight", {C, 4 * C}, l);
    add(p + "mlp.c_proj.bias", {C}, l);
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
