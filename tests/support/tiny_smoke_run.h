// A real checkpointed run for tests that need one on disk: the tiny smoke
// model (configs/tiny_smoke.textproto) trained for two steps on Tiny
// Shakespeare, in one process.
#ifndef DROPK_TESTS_SUPPORT_TINY_SMOKE_RUN_H_
#define DROPK_TESTS_SUPPORT_TINY_SMOKE_RUN_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "comm/communicator.h"
#include "support/shakespeare_data.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk::test_util {

// The tiny smoke model's config for a run of max_iters steps from data_dir
// into out_dir that saves every step, without warmup, with one evaluation
// batch, no closing sample and one thread (EXPECTs it valid).
inline TrainConfig TinySmokeEveryStepConfig(const std::string& data_dir, const std::string& out_dir,
                                            int max_iters) {
  TrainConfig c = DefaultTrainConfig();
  EXPECT_TRUE(MergeTrainConfigFile(DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto", &c).ok());
  c.set_data_dir(data_dir);
  c.set_out_dir(out_dir);
  c.set_max_iters(max_iters);
  c.set_lr_decay_iters(max_iters);
  c.set_warmup_iters(0);
  c.set_save_every(1);
  c.set_eval_iters(1);
  c.set_sample_tokens(0);
  c.set_num_threads(1);
  EXPECT_TRUE(ValidateTrainConfig(c).ok());
  return c;
}

// Prepares the data in dir/data and trains two steps into dir/run (saving
// every save_every steps when given, else at dropk-train's default). OK, or
// the first failure with the training log. The checkpoints end up in
// dir/run/checkpoints.
inline absl::Status TrainTinySmokeRun(const std::filesystem::path& dir,
                                      std::optional<int> save_every = std::nullopt) {
  if (absl::Status s = PrepareShakespeareData((dir / "data").string()); !s.ok()) return s;
  TrainConfig train = DefaultTrainConfig();
  if (absl::Status s =
          MergeTrainConfigFile(DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto", &train);
      !s.ok()) {
    return s;
  }
  train.set_data_dir((dir / "data").string());
  train.set_out_dir((dir / "run").string());
  train.set_max_iters(2);
  train.set_lr_decay_iters(2);
  if (save_every.has_value()) train.set_save_every(*save_every);
  train.set_eval_iters(1);
  train.set_sample_tokens(0);
  train.set_num_threads(1);
  if (absl::Status s = ValidateTrainConfig(train); !s.ok()) return s;
  auto comm = MakeSingleProcessCommunicator();
  std::ostringstream log;
  if (absl::Status s = RunTraining(train, *comm, log).status(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), "\n", log.str()));
  }
  return absl::OkStatus();
}

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_TINY_SMOKE_RUN_H_
