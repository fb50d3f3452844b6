// Small model shapes for tests: trainable or savable in milliseconds.
#ifndef DROPK_TESTS_SUPPORT_TINY_CONFIG_H_
#define DROPK_TESTS_SUPPORT_TINY_CONFIG_H_

#include "config.pb.h"
#include "model/param_layout.h"
#include "trainer/config.h"

namespace dropk::test_util {

// The defaults of dropk-train with a tiny model: n_layer layers of n_embd
// channels over n_head heads, context block_size; everything else (data_dir,
// out_dir, schedule) is DefaultTrainConfig()'s for the caller to override.
inline TrainConfig TinyTrainConfig(int n_layer = 2, int n_head = 2, int n_embd = 16,
                                   int block_size = 8) {
  TrainConfig config = DefaultTrainConfig();
  config.set_n_layer(n_layer);
  config.set_n_head(n_head);
  config.set_n_embd(n_embd);
  config.set_block_size(block_size);
  return config;
}

// The model shape of `config` over a vocabulary of vocab_size tokens.
inline GptConfig ShapeOf(const TrainConfig& config, int vocab_size) {
  return GptConfig{vocab_size, config.block_size(), config.n_layer(), config.n_head(),
                   config.n_embd()};
}

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_TINY_CONFIG_H_
