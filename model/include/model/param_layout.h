// The shape of a GPT-2 model and where each parameter tensor sits in the one
// contiguous parameter buffer (gradients and optimizer moments use the same
// layout, so a slice of one is the same tensors in all of them).
#ifndef DROPK_MODEL_PARAM_LAYOUT_H_
#define DROPK_MODEL_PARAM_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dropk {

// Model hyperparameters. Legend used in kernels: V vocab, T time, C channels
// (n_embd), NH heads, L layers.
struct GptConfig {
  int vocab_size = 0;
  int block_size = 0;  // longest context the position embedding covers
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;

  // OK, or InvalidArgument naming the offending field and value.
  absl::Status Validate() const;
};

// One parameter tensor: name (nanoGPT's state_dict name), shape, and its
// [offset, offset + numel) range in the flat buffer.
struct ParamTensor {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;
  size_t numel = 0;
  bool weight_decay = false;  // matrices (2-D) decay, vectors do not (as nanoGPT)
  int layer = -1;             // transformer block index, -1 outside the blocks
};

// Pointers of one transformer block's tensors inside a flat buffer.
struct BlockTensors {
  float* ln1_w;
  float* ln1_b;  // (C)
  float* qkv_w;
  float* qkv_b;  // (3C, C), (3C)
  float* attproj_w;
  float* attproj_b;  // (C, C), (C)
  float* ln2_w;
  float* ln2_b;  // (C)
  float* fc_w;
  float* fc_b;  // (4C, C), (4C)
  float* fcproj_w;
  float* fcproj_b;  // (C, 4C), (C)
};

// The order of tensors in the flat buffer is: wte, wpe, block 0, ...,
// block L-1, ln_f. Blocks are contiguous, so backward finishes whole ranges in
// reverse order (ln_f, block L-1, ..., block 0, then wpe and wte), which is
// what gradient bucketing wants.
class ParamLayout {
 public:
  // config must be valid (GptConfig::Validate). The layout holds one entry
  // per tensor: check the size first with CountParams for untrusted shapes.
  explicit ParamLayout(const GptConfig& config);

  // num_params() of the layout of `config`, without building it (no
  // allocation, so any shape can be asked). InvalidArgument for an invalid
  // config or a count past 64 bits.
  static absl::StatusOr<uint64_t> CountParams(const GptConfig& config);

  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  size_t num_params() const { return total_; }

  // Offsets of the fixed tensors.
  size_t wte() const { return tensors_[0].offset; }
  size_t wpe() const { return tensors_[1].offset; }
  size_t lnf_w() const { return tensors_[tensors_.size() - 2].offset; }
  size_t lnf_b() const { return tensors_[tensors_.size() - 1].offset; }

  // [begin, end) of block l's tensors in the flat buffer.
  size_t BlockBegin(int layer) const { return block_begin_[layer]; }
  size_t BlockEnd(int layer) const { return block_begin_[layer + 1]; }

  // Block l's tensors inside the flat buffer starting at base.
  BlockTensors Block(float* base, int layer) const;

 private:
  GptConfig config_;
  std::vector<ParamTensor> tensors_;
  std::vector<size_t> block_begin_;  // L + 1 entries
  size_t total_ = 0;
};

}  // namespace dropk

#endif  // DROPK_MODEL_PARAM_LAYOUT_H_
