// dropk-train and dropk ckpt end to end: exact resume (2N straight vs N, stop,
// resume, N more, dropout on), SIGTERM saves and exits 75, kill -9 during
// saves leaves a loadable LATEST, --resume=latest falls back past a corrupt
// checkpoint, a contradicting config is refused naming the field, and the
// ckpt inspect/verify/export tools.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/exit_codes.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "comm/communicator.h"
#include "model/kernels.h"
#include "support/shakespeare_data.h"
#include "trainer/run_directory_lock.h"
#include "support/subprocess.h"

extern char** environ;

namespace dropk {
namespace {

namespace fs = std::filesystem;

struct CliResult {
  int exit_code;
  std::string output;
};

// The command's exit code and its stdout and stderr as one stream.
CliResult RunCommand(const std::string& cmd) {
  const test_util::CommandResult r = test_util::RunCommand(cmd + " 2>&1");
  return {r.exit_code, r.out};
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// (step, train_loss) of every metrics.jsonl row with a train loss, and
// (step, val_loss) of evaluations: everything but times.
std::vector<std::string> Losses(const std::string& path) {
  std::vector<std::string> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("tokens_per_s");
    j.erase("elapsed_s");
    rows.push_back(j.dump());
  }
  return rows;
}

class CheckpointCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Per process: ctest -j runs each test of this suite in its own process.
    data_ = new std::string(
        (fs::path(::testing::TempDir()) / ("dropk_ckpt_cli_data_" + std::to_string(getpid())))
            .string());
    ASSERT_TRUE(test_util::PrepareShakespeareData(*data_).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*data_);
    delete data_;
  }
  void SetUp() override {
    out_ = (fs::path(::testing::TempDir()) /
            ("dropk_ckpt_cli_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
             std::to_string(getpid())))
               .string();
    fs::remove_all(out_);
  }
  void TearDown() override { fs::remove_all(out_); }

  // Tiny model, dropout on, every step logged, a fixed schedule end so runs
  // of different lengths share one learning-rate curve.
  static std::string Train(const std::string& out, const std::string& args) {
    return std::string(DROPK_BINARY_DIR "/bin/dropk-train --config " DROPK_SOURCE_DIR
                                        "/configs/tiny_smoke.textproto --data_dir=") +
           *data_ + " --out_dir=" + out +
           " --dropout=0.2 --log_interval=1 --eval_interval=5 --eval_iters=2 --sample_tokens=0"
           " --lr_decay_iters=100 --warmup_iters=4 --num_threads=1 " +
           args;
  }
  static std::string Dropk(const std::string& args) {
    return std::string(DROPK_BINARY_DIR "/bin/dropk ") + args;
  }

  static std::string* data_;
  std::string out_;
};
std::string* CheckpointCliTest::data_ = nullptr;

TEST_F(CheckpointCliTest, ResumeIsExactWithDropout) {
  const std::string straight = out_ + "/straight", split = out_ + "/split";
  CliResult r = RunCommand(Train(straight, "--max_iters=16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(Train(split, "--max_iters=8 --save_every=3"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(Train(split, "--max_iters=16 --resume=latest"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + split + "/checkpoints/step-00000008 at step 8"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("config max_iters: 8 -> 16 (allowed)"), std::string::npos) << r.output;

  absl::StatusOr<CheckpointData> a = ReadCheckpoint(straight + "/checkpoints/step-00000016");
  absl::StatusOr<CheckpointData> b = ReadCheckpoint(split + "/checkpoints/step-00000016");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(a->params == b->params) << "parameters differ after resume";
  EXPECT_TRUE(a->adam_m == b->adam_m);
  EXPECT_TRUE(a->adam_v == b->adam_v);
  EXPECT_EQ(a->optimizer_step, b->optimizer_step);
  // metrics.jsonl was appended after the resume point, not truncated, and
  // holds the same losses, row for row, as the straight run.
  const std::vector<std::string> la = Losses(straight + "/metrics.jsonl");
  const std::vector<std::string> lb = Losses(split + "/metrics.jsonl");
  EXPECT_EQ(la.size(), 17u);
  EXPECT_EQ(la, lb);
}

TEST_F(CheckpointCliTest, ContradictingConfigIsRefusedNamingTheField) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  CliResult r = RunCommand(Train(out_, "--max_iters=4 --resume=latest --n_embd=48"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("n_embd=48 contradicts the checkpoint's n_embd=32"), std::string::npos)
      << r.output;
  r = RunCommand(Train(out_, "--max_iters=4 --resume=latest --seed=5"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("seed=5"), std::string::npos) << r.output;
}

// The same corpus split another way (same tokenizer, other dataset id)
// resumed silently; now exit 2 naming both, unless --allow_data_change.
TEST_F(CheckpointCliTest, ResumeOnOtherDataExitsTwoUnlessAllowed) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string other = out_ + "/other_data";
  CliResult r = RunCommand(Dropk("data prepare --tokenizer char --val-fraction 0.2 --out " + other +
                                 " " DROPK_SOURCE_DIR "/data/tinyshakespeare.txt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(Train(out_, "--max_iters=3 --resume=latest --data_dir=" + other));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  for (const std::string& part :
       {"data_dir=" + other, "data_dir=" + *data_, std::string("--allow_data_change")}) {
    EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
  }
  r = RunCommand(
      Train(out_, "--max_iters=3 --resume=latest --allow_data_change --data_dir=" + other));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("dropk-train: warning: --allow_data_change: the data changed"),
            std::string::npos)
      << r.output;
}

// Issue 9 item 7: 7 zero bytes appended to model.data passed verification.
TEST_F(CheckpointCliTest, VerifyRefusesBytesAppendedToModelData) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string ckpt = out_ + "/checkpoints/step-00000002";
  ASSERT_EQ(RunCommand(Dropk("ckpt verify " + ckpt)).exit_code, 0);
  {
    std::ofstream out(ckpt + "/model.data", std::ios::binary | std::ios::app);
    out.write("\0\0\0\0\0\0\0", 7);
  }
  CliResult verify = RunCommand(Dropk("ckpt verify " + ckpt));
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_NE(verify.output.find("model.data"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find("appended"), std::string::npos) << verify.output;
}

TEST_F(CheckpointCliTest, ResumeLatestFallsBackPastCorruptCheckpoint) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=6 --save_every=2")).exit_code, 0);
  const std::string ckpts = out_ + "/checkpoints";
  // Corrupt the newest (6): a flipped byte.
  {
    std::fstream f(ckpts + "/step-00000006/model.data",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char c = 0x55;
    f.write(&c, 1);
  }
  CliResult verify = RunCommand(Dropk("ckpt verify " + ckpts));
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_NE(verify.output.find("CRC32C mismatch"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find("model/transformer.wte.weight"), std::string::npos) << verify.output;

  CliResult r = RunCommand(Train(out_, "--max_iters=8 --resume=latest"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("skipped checkpoint " + ckpts + "/step-00000006"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("resumed from " + ckpts + "/step-00000004 at step 4"), std::string::npos)
      << r.output;
  // The run wrote a fresh step 8; LATEST names it and it verifies.
  EXPECT_EQ(ReadAll(ckpts + "/LATEST"), "step-00000008\n");
  EXPECT_EQ(RunCommand(Dropk("ckpt verify " + ckpts)).exit_code, 0);

  // Nothing verifies: refuse, naming what was skipped.
  for (const auto& e : fs::directory_iterator(ckpts)) {
    if (e.is_directory()) fs::remove(e.path() / "manifest.pb");
  }
  r = RunCommand(Train(out_, "--max_iters=10 --resume=latest"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no checkpoint verifies"), std::string::npos) << r.output;
}

// A checkpoint newer than the one LATEST names (a save cut off between its
// rename and LATEST's update) is named by what goes by LATEST, with how to
// read it: dropk ckpt and --resume=latest passed it over in silence.
TEST_F(CheckpointCliTest, ACheckpointNewerThanLatestIsNamed) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=3 --save_every=1")).exit_code, 0);
  const std::string ckpts = out_ + "/checkpoints";
  std::ofstream(ckpts + "/LATEST", std::ios::trunc) << "step-00000002\n";
  CliResult r = RunCommand(Dropk("ckpt inspect " + out_));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("checkpoint " + ckpts + "/step-00000002"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("dropk: note: " + ckpts + "/step-00000003 is newer than step-00000002"),
            std::string::npos)
      << r.output;

  r = RunCommand(Train(out_, "--max_iters=4 --resume=latest"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + ckpts + "/step-00000002 at step 2"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("--resume=" + ckpts + "/step-00000003\n"), std::string::npos) << r.output;
}

TEST_F(CheckpointCliTest, InspectAndExport) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=3")).exit_code, 0);
  CliResult r = RunCommand(Dropk("ckpt inspect " + out_ + "/checkpoints"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* part :
       {"step 3", "2 layers, 2 heads, n_embd 32", "model/transformer.wte.weight", "[65, 32]",
        "optimizer/adam_m[0:", "tensors,", "bytes", "data: dataset id "}) {
    EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
  }
  for (const char* dtype : {"fp32", "fp16", "bf16"}) {
    const std::string file = out_ + "/model." + dtype;
    r = RunCommand(Dropk("ckpt export " + out_ + "/checkpoints/step-00000003 --out " + file +
                         " --dtype " + dtype));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string bytes = ReadAll(file);
    ASSERT_GT(bytes.size(), 16u);
    EXPECT_EQ(bytes.substr(0, 8), "DROPKEXP");
    uint64_t h;
    std::memcpy(&h, bytes.data() + 8, 8);
    ExportHeader header;
    ASSERT_TRUE(header.ParseFromString(bytes.substr(16, h)));
    EXPECT_EQ(header.n_embd(), 32);
    EXPECT_EQ(header.vocab_size(), 65);
    EXPECT_EQ(header.tokenizer().kind(), Tokenizer::CHAR);
    const TensorEntry& wte = header.tensors(0);
    EXPECT_EQ(wte.name(), "transformer.wte.weight");
    EXPECT_EQ(wte.length(), 65u * 32 * (std::string(dtype) == "fp32" ? 4 : 2));
    EXPECT_EQ(wte.offset() % 64, 0u);
    const TensorEntry& last = header.tensors(header.tensors_size() - 1);
    EXPECT_EQ(last.offset() + last.length(), bytes.size());
    // Padding is zeros, every tensor's CRC matches, fp32 is the checkpoint's bits.
    EXPECT_EQ(bytes.substr(16 + h, wte.offset() - 16 - h),
              std::string(wte.offset() - 16 - h, '\0'));
    for (const TensorEntry& e : header.tensors()) {
      EXPECT_EQ(crc32c::Value(bytes.data() + e.offset(), e.length()), e.crc32c()) << e.name();
    }
    if (std::string(dtype) == "fp32") {
      absl::StatusOr<CheckpointData> data = ReadCheckpoint(out_ + "/checkpoints/step-00000003");
      ASSERT_TRUE(data.ok());
      EXPECT_EQ(std::memcmp(bytes.data() + wte.offset(), data->params.data(), wte.length()), 0);
    }
  }
  r = RunCommand(Dropk("ckpt verify /nonexistent/ckpt"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("/nonexistent/ckpt"), std::string::npos) << r.output;
}

// A copy of checkpoint `src` with parameter `index` set to `value`, written
// as a valid checkpoint (every CRC right) into the checkpoints directory
// `dst`; returns its directory.
std::string CheckpointWithParam(const std::string& src, const std::string& dst, size_t index,
                                float value) {
  absl::StatusOr<CheckpointData> data = ReadCheckpoint(src);
  EXPECT_TRUE(data.ok()) << data.status();
  if (!data.ok()) return "";
  data->params[index] = value;
  absl::StatusOr<std::unique_ptr<Kernels>> kernels = MakeKernels(Device::kCpu, {.num_threads = 1});
  EXPECT_TRUE(kernels.ok()) << kernels.status();
  if (!kernels.ok()) return "";
  std::unique_ptr<Communicator> comm = MakeSingleProcessCommunicator();
  CheckpointState state;
  state.config = &data->config;
  state.tokenizer = &data->tokenizer;
  state.step = data->step;
  state.tokens_seen = data->tokens_seen;
  state.optimizer_step = data->optimizer_step;
  state.kernels = kernels->get();
  state.params = data->params.data();
  state.adam_m = data->adam_m.data();
  state.adam_v = data->adam_v.data();
  state.num_params = data->params.size();
  absl::StatusOr<std::string> dir =
      CheckpointWriter({.checkpoints_dir = dst}, comm.get()).Save(state);
  EXPECT_TRUE(dir.ok()) << dir.status();
  return dir.ok() ? *dir : "";
}

// fp16 turned weights beyond 65504 into infinity without a word, and
// non-finite weights were exported as they were. Parameter 100 is in
// transformer.wte.weight (the first tensor), at index 100.
TEST_F(CheckpointCliTest, ExportRefusesValuesTheDtypeCannotHoldAndNonFiniteOnes) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=1")).exit_code, 0);
  const std::string src = out_ + "/checkpoints/step-00000001";
  const std::string big = CheckpointWithParam(src, out_ + "/big", 100, 70000.0f);
  ASSERT_FALSE(big.empty());
  const std::string file = out_ + "/model.export";
  CliResult r = RunCommand(Dropk("ckpt export " + big + " --out " + file + " --dtype fp16"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output,
            "dropk: --dtype fp16: tensor transformer.wte.weight: value 70000 at index 100 is "
            "outside fp16's range (largest 65504); export with --dtype bf16 or --dtype fp32\n");
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  for (const char* dtype : {"bf16", "fp32"}) {
    r = RunCommand(Dropk("ckpt export " + big + " --out " + file + " --dtype " + dtype));
    EXPECT_EQ(r.exit_code, 0) << dtype << ": " << r.output;
  }
  // 65504 itself is fp16's largest value and exports.
  const std::string edge = CheckpointWithParam(src, out_ + "/edge", 100, -65504.0f);
  r = RunCommand(Dropk("ckpt export " + edge + " --out " + file + " --dtype fp16"));
  EXPECT_EQ(r.exit_code, 0) << r.output;

  const std::string inf =
      CheckpointWithParam(src, out_ + "/inf", 100, std::numeric_limits<float>::infinity());
  for (const char* dtype : {"fp16", "bf16", "fp32"}) {
    r = RunCommand(Dropk("ckpt export " + inf + " --out " + out_ + "/inf.export --dtype " + dtype));
    EXPECT_EQ(r.exit_code, 1) << dtype << ": " << r.output;
    EXPECT_EQ(r.output, "dropk: tensor transformer.wte.weight: value inf at index 100 is not "
                        "finite; nothing was exported\n")
        << dtype;
  }
  EXPECT_FALSE(fs::exists(out_ + "/inf.export"));
}

// Every path a user might hand `dropk ckpt`: a missing one was "not a
// directory" with exit 1, a run directory (the trainer's out_dir) failed on
// "run/manifest.pb: stat", and a LATEST naming a removed checkpoint said only
// "not a directory".
TEST_F(CheckpointCliTest, CkptNamesThePathAtFaultAndAcceptsARunDirectory) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  CliResult r = RunCommand(Dropk("ckpt inspect " + out_));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("checkpoint " + out_ + "/checkpoints/step-00000002"), std::string::npos)
      << r.output;
  EXPECT_EQ(RunCommand(Dropk("ckpt verify " + out_)).exit_code, 0);

  r = RunCommand(Dropk("ckpt verify " + out_ + "/nothing"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output, "dropk: checkpoint path " + out_ + "/nothing: does not exist\n");

  r = RunCommand(Dropk("ckpt inspect " + out_ + "/metrics.jsonl"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(out_ + "/metrics.jsonl: not a directory"), std::string::npos)
      << r.output;

  fs::create_directories(out_ + "/empty");
  r = RunCommand(Dropk("ckpt export " + out_ + "/empty --out " + out_ + "/x.bin"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  // A checkpoints directory without LATEST is read (its newest step-N), so
  // the error no longer asks for one "holding LATEST".
  EXPECT_NE(
      r.output.find(out_ + "/empty: holds no checkpoint (neither manifest.pb, LATEST nor a step-N "
                           "directory); name a checkpoint (run/checkpoints/step-N), a checkpoints "
                           "directory (its LATEST, else its newest step-N), or a run directory"),
      std::string::npos)
      << r.output;
  for (const char* verb : {"inspect", "verify", "export"}) {
    const CliResult help = RunCommand(Dropk(std::string("ckpt ") + verb + " --help"));
    EXPECT_EQ(help.exit_code, 0) << help.output;
    EXPECT_NE(help.output.find("(its LATEST, else its newest step-N)"), std::string::npos)
        << help.output;
  }

  std::ofstream(out_ + "/checkpoints/LATEST", std::ios::trunc) << "step-00000099\n";
  r = RunCommand(Dropk("ckpt verify " + out_ + "/checkpoints"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("LATEST names step-00000099, which is not a directory there"),
            std::string::npos)
      << r.output;
}

// Checkpoints without LATEST (deleted, or a first save cut off before it)
// and a checkpoint without its manifest (a copy cut short) were "holds
// neither manifest.pb nor LATEST", exit 2, though --resume=PATH took both:
// the first is the newest step-N, the second a corrupt checkpoint (exit 1).
TEST_F(CheckpointCliTest, CkptTakesCheckpointsWithoutLatestAndOneWithoutItsManifest) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=4 --save_every=2")).exit_code, 0);
  const std::string ckpts = out_ + "/checkpoints";
  fs::remove(ckpts + "/LATEST");
  for (const std::string& path : {out_, ckpts}) {
    const CliResult r = RunCommand(Dropk("ckpt inspect " + path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("checkpoint " + ckpts + "/step-00000004\n"), std::string::npos)
        << r.output;
  }
  EXPECT_EQ(RunCommand(Dropk("ckpt verify " + ckpts)).exit_code, 0);

  fs::remove(ckpts + "/step-00000004/manifest.pb");
  for (const std::string& path : {ckpts + "/step-00000004", ckpts}) {
    const CliResult r = RunCommand(Dropk("ckpt verify " + path));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("checkpoint " + ckpts + "/step-00000004: file manifest.pb"),
              std::string::npos)
        << r.output;
  }
}

// --resume=PATH read every path that is not one checkpoint as a corrupt
// one: a run directory said "no checkpoint verifies: ... o/manifest.pb:
// stat: No such file or directory" and a missing path (--resume=LATEST for
// latest) "not a directory", both exit 1. A run directory is taken as
// `dropk ckpt` takes it (its checkpoints/); a path that is not there, or
// holds no checkpoint, is a usage error (exit 2) naming it; a corrupt
// checkpoint stays exit 1.
TEST_F(CheckpointCliTest, ResumeTakesARunDirectoryAndNamesAPathThatIsNoCheckpoint) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string again = out_ + "/again";
  CliResult r = RunCommand(Train(again, "--max_iters=3 --resume=" + out_));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + out_ + "/checkpoints/step-00000002 at step 2"),
            std::string::npos)
      << r.output;

  const std::string fresh = out_ + "/fresh";
  r = RunCommand("cd " + out_ + " && " + Train(fresh, "--max_iters=3 --resume=LATEST"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("dropk-train: --resume=LATEST: does not exist; --resume=latest (lower "
                          "case) resumes"),
            std::string::npos)
      << r.output;

  // A step number is not a path: the checkpoint of that step is named, to
  // pass instead (it read "does not exist; name a checkpoint ...").
  r = RunCommand("cd " + out_ + " && " + Train(out_, "--max_iters=3 --resume=2"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("dropk-train: --resume=2: does not exist; a step's checkpoint is named "
                          "by its directory: --resume=" +
                          out_ + "/checkpoints/step-00000002\n"),
            std::string::npos)
      << r.output;

  r = RunCommand(Train(fresh, "--max_iters=3 --resume=" + out_ + "/nothing"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--resume=" + out_ + "/nothing: does not exist; name a checkpoint"),
            std::string::npos)
      << r.output;

  fs::create_directories(out_ + "/empty");
  r = RunCommand(Train(fresh, "--max_iters=3 --resume=" + out_ + "/empty"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--resume=" + out_ + "/empty: holds no checkpoint"), std::string::npos)
      << r.output;

  fs::create_symlink("loop", out_ + "/loop");
  r = RunCommand(Train(fresh, "--max_iters=3 --resume=" + out_ + "/loop"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--resume=" + out_ + "/loop: Too many levels of symbolic links"),
            std::string::npos)
      << r.output;

  // A damaged checkpoint named by hand is still corruption.
  const std::string ckpt = out_ + "/checkpoints/step-00000002";
  fs::remove(ckpt + "/manifest.pb");
  r = RunCommand(Train(fresh, "--max_iters=3 --resume=" + ckpt));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no checkpoint verifies"), std::string::npos) << r.output;
}

// An empty path said "checkpoint path : does not exist"; a LATEST holding
// "." or ".." was taken for a checkpoint's name and failed on a missing
// "checkpoints/./manifest.pb" (dropk-serve already refused both).
TEST_F(CheckpointCliTest, CkptNamesAnEmptyPathAndALatestOfDots) {
  CliResult r = RunCommand(Dropk("ckpt inspect ''"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output.rfind("dropk: the checkpoint path is empty; name a checkpoint", 0), 0u)
      << r.output;
  fs::create_directories(out_ + "/checkpoints");
  for (const char* name : {".", ".."}) {
    SCOPED_TRACE(name);
    std::ofstream(out_ + "/checkpoints/LATEST", std::ios::trunc) << name << "\n";
    r = RunCommand(Dropk("ckpt verify " + out_));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output,
              "dropk: " + out_ + "/checkpoints/LATEST: does not name a checkpoint\n");
  }
}

// LATEST names a checkpoint by its step-N name, as --resume and dropk-serve
// read it. Any other name was read: a partial save (step-N.tmp-X) as if
// it were a checkpoint, and "step-N", a NUL and junk as step-N's directory
// taken for its manifest.pb ("manifest.pb: not a regular file").
TEST_F(CheckpointCliTest, CkptTakesOnlyAStepNameFromLatest) {
  const std::string ckpts = out_ + "/checkpoints";
  fs::create_directories(ckpts + "/step-00000002");
  fs::create_directories(ckpts + "/step-00000002.tmp-1a2b3c4d");
  for (const std::string& name :
       {std::string("step-00000002\0junk", 18), std::string("step-00000002.tmp-1a2b3c4d")}) {
    SCOPED_TRACE(name);
    std::ofstream(ckpts + "/LATEST", std::ios::trunc) << name << "\n";
    const CliResult r = RunCommand(Dropk("ckpt inspect " + out_));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output, "dropk: " + ckpts + "/LATEST: does not name a checkpoint\n");
  }
}

// dropk sample --checkpoint (and dropk-serve, study topk) said only "no
// valid checkpoint in PATH" for a missing path; the error names the flag. (A
// run directory, refused with a hint at its checkpoints then, is taken:
// CheckpointFlagTest.)
TEST_F(CheckpointCliTest, SampleNamesAMissingPath) {
  CliResult r = RunCommand(Dropk("sample --prompt a --checkpoint " + out_ + "/nothing"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output, "dropk: --checkpoint " + out_ + "/nothing: does not exist\n");
}

// The request validator is shared with dropk-serve, and its messages name
// the JSON fields: `dropk sample --max-tokens 100000` said "'max_tokens'
// must be an integer in [1, 8192]".
TEST_F(CheckpointCliTest, SampleNamesItsOwnFlagsForValuesOutOfRange) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=1")).exit_code, 0);
  const std::string sample =
      Dropk("sample --threads 1 --prompt a --checkpoint " + out_ + "/checkpoints ");
  for (const auto& [flags, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--max-tokens 100000",
            "dropk: --max-tokens=100000: out of range; give an integer in [1, 8192]\n"},
           {"--top-p 2", "dropk: --top-p=2: out of range; give a number in (0, 1]\n"},
           {"--temperature -1", "dropk: --temperature=-1: out of range; give a number in [0, "},
           {"--top-k -5", "dropk: --top-k=-5: out of range; give an integer in [-1, 2147483647]"},
           {"--top-p 0", "dropk: --top-p=0: out of range; give a number in (0, 1]\n"}}) {
    const CliResult r = RunCommand(sample + flags);
    EXPECT_EQ(r.exit_code, 2) << flags << ": " << r.output;
    EXPECT_EQ(r.output.rfind(expected, 0), 0u) << flags << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}

// The checks against the model name a prompt by its index in the request
// ("prompt 0 is at least 40 tokens ..."), which dropk said as it was: it
// names --prompt, as `dropk sample --url` does.
TEST_F(CheckpointCliTest, SampleNamesThePromptFlagForAPromptTheModelRefuses) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=1")).exit_code, 0);
  // tiny_smoke's context is 32 tokens; the char tokenizer makes one a byte.
  const CliResult r = RunCommand(Dropk("sample --threads 1 --checkpoint " + out_ +
                                       "/checkpoints/step-00000001 --prompt " +
                                       std::string(40, 'a')));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output.rfind("dropk: --prompt is at least 40 tokens", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

// An export onto the checkpoint's own model.data replaced it and broke the
// checkpoint; onto a directory it left OUT.tmp behind.
TEST_F(CheckpointCliTest, ExportRefusesTargetsThatWouldBreakTheCheckpointOrLeaveTmp) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string ckpt = out_ + "/checkpoints/step-00000002";
  for (const std::string& target : {ckpt + "/model.data", ckpt + "/../step-00000002/new.bin"}) {
    const CliResult r = RunCommand(Dropk("ckpt export " + out_ + "/checkpoints --out " + target));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("inside checkpoint"), std::string::npos) << r.output;
  }
  fs::create_directories(out_ + "/exports");
  const CliResult r = RunCommand(Dropk("ckpt export " + ckpt + " --out " + out_ + "/exports"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("is a directory"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_ + "/exports.tmp"));
  // A directory the OS cannot look at was said not to exist.
  fs::create_symlink("loop", out_ + "/loop");
  const CliResult loop = RunCommand(Dropk("ckpt export " + ckpt + " --out " + out_ + "/loop/x"));
  EXPECT_EQ(loop.exit_code, 2) << loop.output;
  EXPECT_EQ(loop.output, "dropk: --out " + out_ + "/loop/x: directory " + out_ +
                             "/loop: Too many levels of symbolic links\n");
  EXPECT_EQ(RunCommand(Dropk("ckpt verify " + ckpt)).exit_code, 0);
}

// An export written into a run's checkpoints directory was accepted: named
// step-N, or inside an older checkpoint, a running trainer's keep_last
// deleted it, and beside the checkpoints it could be taken for one. Refused,
// naming --out and the checkpoints directory, exit 2, with nothing written;
// so is one there without LATEST (a first save cut off before it).
TEST_F(CheckpointCliTest, ExportRefusesAnOutInsideACheckpointsDirectory) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2 --save_every=1")).exit_code, 0);
  const std::string ckpts = out_ + "/checkpoints";
  const std::string canonical = fs::weakly_canonical(ckpts).string();
  const auto entries = [](const std::string& dir) {
    std::vector<std::string> names;
    for (const fs::directory_entry& e : fs::recursive_directory_iterator(dir)) {
      names.push_back(e.path().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  };
  const std::vector<std::string> before = entries(ckpts);
  for (const bool with_latest : {true, false}) {
    if (!with_latest) fs::rename(ckpts + "/LATEST", out_ + "/LATEST.kept");
    for (const std::string& target :
         {ckpts + "/export.bin", ckpts + "/step-00000009", ckpts + "/step-00000001/export.bin"}) {
      SCOPED_TRACE(target + (with_latest ? "" : " (no LATEST)"));
      const CliResult r = RunCommand(Dropk("ckpt export " + out_ + " --out " + target));
      EXPECT_EQ(r.exit_code, 2) << r.output;
      EXPECT_EQ(r.output, "dropk: --out " + target + ": inside checkpoints directory " + canonical +
                              ", where a trainer's keep_last pruning could delete it or it "
                              "could be taken for a checkpoint; write the export elsewhere\n");
    }
    if (!with_latest) fs::rename(out_ + "/LATEST.kept", ckpts + "/LATEST");
  }
  EXPECT_EQ(entries(ckpts), before);
  // Beside the checkpoints directory, in the run directory, is fine.
  const CliResult r = RunCommand(Dropk("ckpt export " + out_ + " --out " + out_ + "/export.bin"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// Any directory holding a file named LATEST was taken for a checkpoints
// directory, and an export into it or below it refused. A checkpoints
// directory is one whose LATEST names a step-N there, or that holds a step-N
// checkpoint; other folders take an export.
TEST_F(CheckpointCliTest, ExportIntoAFolderWithAnUnrelatedLatestFileIsWritten) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string notes = out_ + "/notes";
  fs::create_directories(notes + "/drafts");
  fs::create_directories(notes + "/step-00000007");  // a step-N name, but no checkpoint
  for (const std::string latest : {"see drafts/v2.txt\n", "step-00000002\n"}) {
    std::ofstream(notes + "/LATEST", std::ios::trunc) << latest;
    for (const std::string& target : {notes + "/model.bin", notes + "/drafts/model.bin"}) {
      SCOPED_TRACE(target + " beside LATEST " + latest);
      const CliResult r = RunCommand(Dropk("ckpt export " + out_ + " --out " + target));
      EXPECT_EQ(r.exit_code, 0) << r.output;
      EXPECT_TRUE(fs::is_regular_file(target));
    }
  }
}

// A path holding a newline or an ESC was written raw into the error: one
// error read as two lines, or restyled the terminal. Such characters are
// escaped (\u000a), so every error is one line.
TEST_F(CheckpointCliTest, CkptErrorsEscapeControlCharactersInPaths) {
  const std::string odd = out_ + "/odd\nname\x1b[2J";
  const std::string shown = out_ + "/odd\\u000aname\\u001b[2J";
  fs::create_directories(odd);
  for (const char* verb : {"inspect", "verify"}) {
    SCOPED_TRACE(verb);
    CliResult r = RunCommand(Dropk(std::string("ckpt ") + verb + " '" + odd + "'"));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_EQ(r.output.rfind("dropk: " + shown + ": holds no checkpoint", 0), 0u) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    r = RunCommand(Dropk(std::string("ckpt ") + verb + " '" + odd + "/missing'"));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_EQ(r.output, "dropk: checkpoint path " + shown + "/missing: does not exist\n");
  }
}

// The export's rename replaced whatever --out named: a user's file, or (as
// root) a device node (/dev/full became a regular file); an empty --out
// aborted on an uncaught filesystem_error. An earlier export is replaced.
TEST_F(CheckpointCliTest, ExportReplacesOnlyAnEarlierExport) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string export_cmd = "ckpt export " + out_ + "/checkpoints --out ";
  CliResult r = RunCommand(Dropk(export_cmd + "''"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output, "dropk: --out is empty; name the file to write\n");

  const std::string notes = out_ + "/notes.txt";
  std::ofstream(notes) << "my notes\n";
  r = RunCommand(Dropk(export_cmd + notes));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--out " + notes + ": exists and is not a dropk export"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(ReadAll(notes), "my notes\n");

  const std::string fifo = out_ + "/pipe";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  r = RunCommand(Dropk(export_cmd + fifo));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("exists and is not a regular file"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_fifo(fifo));

  r = RunCommand(Dropk(export_cmd + out_ + "/no/such/dir/model.bin"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("/no/such/dir does not exist"), std::string::npos) << r.output;

  const std::string model = out_ + "/model.bin";
  ASSERT_EQ(RunCommand(Dropk(export_cmd + model)).exit_code, 0);
  r = RunCommand(Dropk(export_cmd + model + " --dtype bf16"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadAll(model).substr(0, 8), "DROPKEXP");
}

// --format and --dtype take their values in any case, as dropk-serve's
// --device does; CLI11's check let "SafeTensors" through unchanged, and the
// export, comparing it with "safetensors", wrote dropk's format under the
// line "(..., BF16, SafeTensors)".
TEST_F(CheckpointCliTest, ExportTakesFormatAndDtypeInAnyCase) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=1")).exit_code, 0);
  const std::string model = out_ + "/model.safetensors";
  const CliResult r = RunCommand(Dropk("ckpt export " + out_ + "/checkpoints --out " + model +
                                       " --format SafeTensors --dtype BF16"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(", bf16, safetensors) -> " + model), std::string::npos) << r.output;
  const std::string bytes = ReadAll(model);
  ASSERT_GT(bytes.size(), 16u);
  EXPECT_NE(bytes.substr(0, 8), "DROPKEXP");
  EXPECT_EQ(bytes[8], '{') << "a safetensors file: an 8-byte header length, then its JSON";
  EXPECT_NE(bytes.find("\"BF16\""), std::string::npos);
}

// Starts dropk-train with stderr to `log`; returns its pid.
pid_t Spawn(const std::string& cmd, const std::string& log) {
  const std::string full = "exec " + cmd + " > " + log + " 2>&1";
  const char* argv[] = {"/bin/sh", "-c", full.c_str(), nullptr};
  pid_t pid;
  EXPECT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  return pid;
}

// Waits up to 60 s for `pred`.
template <typename Pred>
bool WaitUntil(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Whether `path` holds a complete export: the magic, a header that parses,
// and every tensor's bytes there with a matching CRC32C.
::testing::AssertionResult IsCompleteExport(const std::string& path) {
  const std::string bytes = ReadAll(path);
  if (bytes.size() < 16 || bytes.substr(0, 8) != "DROPKEXP") {
    return ::testing::AssertionFailure() << path << ": no export magic (" << bytes.size()
                                         << " bytes)";
  }
  uint64_t h;
  std::memcpy(&h, bytes.data() + 8, 8);
  ExportHeader header;
  if (h > bytes.size() - 16 || !header.ParseFromString(bytes.substr(16, h))) {
    return ::testing::AssertionFailure() << path << ": header does not parse";
  }
  for (const TensorEntry& e : header.tensors()) {
    if (e.offset() + e.length() > bytes.size() ||
        crc32c::Value(bytes.data() + e.offset(), e.length()) != e.crc32c()) {
      return ::testing::AssertionFailure() << path << ": tensor " << e.name() << " is damaged";
    }
  }
  const TensorEntry& last = header.tensors(header.tensors_size() - 1);
  if (last.offset() + last.length() != bytes.size()) {
    return ::testing::AssertionFailure() << path << ": " << bytes.size() << " bytes, expected "
                                         << last.offset() + last.length();
  }
  return ::testing::AssertionSuccess();
}

// Two exports to one --out at once shared the staging file OUT.tmp: the
// second truncated and renamed away the first's half-written file (the
// first then failed, or published the second's bytes mixed with its own).
// An export in progress (here: this test, holding the export's lock with a
// partial OUT.tmp) now makes a second one refuse, naming it, and touch
// neither OUT nor OUT.tmp. Once it is gone (as if killed), its lock and its
// stale OUT.tmp block nothing: the next export replaces both.
TEST_F(CheckpointCliTest, ASecondExportToTheSameOutIsRefusedAndAStaleOneBlocksNothing) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string model = out_ + "/model.bin";
  const std::string export_cmd = "ckpt export " + out_ + "/checkpoints --out " + model;
  ASSERT_EQ(RunCommand(Dropk(export_cmd)).exit_code, 0);
  const std::string published = ReadAll(model);
  const std::string partial = "DROPKEXP half of an export in progress";
  std::ofstream(model + ".tmp", std::ios::binary) << partial;
  {
    std::ostringstream log;
    absl::StatusOr<RunDirectoryLock> running =
        RunDirectoryLock::AcquireFile(out_ + "/.model.bin.export-lock", "--out=" + model, "--out",
                                      "dropk ckpt export", "dropk", log);
    ASSERT_TRUE(running.ok()) << running.status();
    running->RecordHolder(log);
    const CliResult r = RunCommand(Dropk(export_cmd + " --dtype bf16"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("--out=" + model + " is in use by another dropk ckpt export (pid " +
                            std::to_string(getpid()) + " on this host"),
              std::string::npos)
        << r.output;
    EXPECT_EQ(ReadAll(model + ".tmp"), partial);
    EXPECT_TRUE(ReadAll(model) == published) << "the published export changed";
  }
  // The lock is released, its file (naming this process) and the partial
  // OUT.tmp are left behind, as by an export killed mid-write.
  ASSERT_TRUE(fs::exists(out_ + "/.model.bin.export-lock"));
  const CliResult r = RunCommand(Dropk(export_cmd + " --dtype bf16"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(model + ".tmp"));
  EXPECT_TRUE(IsCompleteExport(model));
  EXPECT_TRUE(ReadAll(model) != published) << "the bf16 export did not replace the fp32 one";
}

// Many exports to one --out at once, in different dtypes: each either
// publishes or is refused naming another, and OUT is always one complete
// export, never a mix (before, the shared OUT.tmp could interleave them).
TEST_F(CheckpointCliTest, ConcurrentExportsToOneOutPublishOneCompleteExport) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string model = out_ + "/model.bin";
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    std::vector<std::pair<pid_t, std::string>> exports;
    for (const char* dtype : {"fp32", "fp16", "bf16", "fp32", "bf16", "fp16"}) {
      const std::string log = out_ + "/export-" + std::to_string(exports.size()) + ".log";
      exports.emplace_back(Spawn(Dropk("ckpt export " + out_ + "/checkpoints --out " + model +
                                       " --dtype " + dtype),
                                 log),
                           log);
    }
    int published = 0;
    for (const auto& [pid, log] : exports) {
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      const std::string output = ReadAll(log);
      ASSERT_TRUE(WIFEXITED(status)) << output;
      if (WEXITSTATUS(status) == 0) {
        ++published;
      } else {
        EXPECT_EQ(WEXITSTATUS(status), 1) << output;
        EXPECT_NE(output.find("is in use by another dropk ckpt export (pid "), std::string::npos)
            << output;
      }
    }
    EXPECT_GE(published, 1);
    EXPECT_TRUE(IsCompleteExport(model));
    EXPECT_FALSE(fs::exists(model + ".tmp"));
  }
}

// The export's lock file, ".OUT.export-lock", made a --out name of 244 to
// 251 bytes (which OUT.tmp still fits) fail with "File name too long".
TEST_F(CheckpointCliTest, ExportToANameNearTheLengthLimitWorks) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=2")).exit_code, 0);
  const std::string model = out_ + "/" + std::string(250, 'm');
  const CliResult r = RunCommand(Dropk("ckpt export " + out_ + "/checkpoints --out " + model));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(IsCompleteExport(model));
}

// After the last save, the closing sample ignored SIGTERM (the handler only
// noted it) and ran on for its sample_tokens.
TEST_F(CheckpointCliTest, SigtermDuringTheClosingSampleEndsItAndExitsZero) {
  const std::string log = out_ + ".log";
  fs::create_directories(out_);
  const pid_t pid = Spawn(Train(out_, "--max_iters=2 --sample_tokens=1000000"), log);
  // LATEST is written by the final save, which commits before the sample.
  ASSERT_TRUE(WaitUntil([&] { return fs::exists(out_ + "/checkpoints/LATEST"); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto signalled = std::chrono::steady_clock::now();
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_TRUE(WaitUntil([&] { return waitpid(pid, &status, WNOHANG) == pid; }))
      << "still sampling 60 s after SIGTERM";
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, std::chrono::seconds(10));
  const std::string output = ReadAll(log);
  fs::remove(log);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  // Done, not "stopped ... resume with --resume=latest" (a resume found
  // nothing to train).
  EXPECT_NE(output.find("dropk-train: done, 2 steps"), std::string::npos) << output;
  EXPECT_NE(output.find("; the closing sample was stopped by SIGTERM"), std::string::npos)
      << output;
  EXPECT_EQ(output.find("stopped by signal after step"), std::string::npos) << output;
  EXPECT_EQ(RunCommand(Dropk("ckpt verify " + out_ + "/checkpoints")).exit_code, 0);
}

// Waits up to 60 s for the spawned `pid` to exit (its wait status in
// `status`); past that, kills it, so that no process is left behind, and
// returns false.
bool WaitForExit(pid_t pid, int* status) {
  const bool exited = WaitUntil([&] { return waitpid(pid, status, WNOHANG) == pid; });
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
  }
  return exited;
}

// Sends `signo` to the spawned `pid`, waits for it, and returns its wait
// status and its output (read from `log`, which is then removed).
std::pair<int, std::string> SignalAndWait(pid_t pid, int signo, const std::string& log) {
  kill(pid, signo);
  int status = 0;
  waitpid(pid, &status, 0);
  std::string output = ReadAll(log);
  fs::remove(log);
  return {status, output};
}

// Trains until step 5 is logged, sends `signo`, and expects the current
// step saved, LATEST naming it, and exit 75 (stopped, not done: until
// 2026-12-03 it was 0, and a scheduler took a preempted run for finished).
// With `echo_after`, the signal is sent again that long after the first
// (the handler has run by then), as GNU timeout's second copy comes.
void ExpectSignalSavesTheCurrentStep(
    const std::string& out, int signo, const std::function<std::string(const std::string&)>& train,
    std::optional<std::chrono::milliseconds> echo_after = std::nullopt) {
  const std::string log = out + ".log";
  fs::create_directories(out);
  const pid_t pid = Spawn(train("--max_iters=100000 --save_every=0"), log);
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadAll(out + "/metrics.jsonl").find("\"step\":5,") != std::string::npos; }));
  if (echo_after) {
    kill(pid, signo);
    std::this_thread::sleep_for(*echo_after);
  }
  const auto [status, output] = SignalAndWait(pid, signo, log);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), kExitStopped) << output;
  const size_t at = output.find("stopped by signal after step ");
  ASSERT_NE(at, std::string::npos) << output;
  const int64_t step = std::stoll(output.substr(at + 29));
  EXPECT_GE(step, 6);
  absl::StatusOr<CheckpointData> data =
      ReadCheckpoint(out + "/checkpoints/" + CheckpointDirName(step));
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->step, step);
  EXPECT_EQ(ReadAll(out + "/checkpoints/LATEST"), CheckpointDirName(step) + "\n");
}

// GNU timeout sends its stop to the child and then to its process group:
// one stop came as two SIGTERMs microseconds apart, and the second killed
// the run unsaved (exit 143) 1 time in 5. A second signal within a second
// of the first is the same stop.
TEST_F(CheckpointCliTest, AStopSentTwiceAtOnceSavesLikeOne) {
  ExpectSignalSavesTheCurrentStep(out_, SIGTERM, [&](const std::string& a) {
    return Train(out_, a);
  }, /*echo_after=*/std::chrono::milliseconds(2));
}

// A dropped ssh session or closed terminal (SIGHUP) killed the run with its
// steps since the last save; it now saves as SIGTERM does.
TEST_F(CheckpointCliTest, SighupSavesLikeSigterm) {
  ExpectSignalSavesTheCurrentStep(out_, SIGHUP,
                                  [&](const std::string& a) { return Train(out_, a); });
}

// Under `nohup` (SIGHUP ignored by the launcher) a SIGHUP must not stop the
// run: that is what nohup is for. Only SIGTERM then ends it, saved.
TEST_F(CheckpointCliTest, SighupUnderNohupIsIgnored) {
  const std::string log = out_ + ".log";
  fs::create_directories(out_);
  const pid_t pid = Spawn(
      "sh -c \"trap '' HUP; exec " + Train(out_, "--max_iters=100000 --save_every=0") + "\"", log);
  const auto logged = [&](int step) {
    return ReadAll(out_ + "/metrics.jsonl").find("\"step\":" + std::to_string(step) + ",") !=
           std::string::npos;
  };
  ASSERT_TRUE(WaitUntil([&] { return logged(5); }));
  kill(pid, SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::string rows = ReadAll(out_ + "/metrics.jsonl");
  ASSERT_TRUE(WaitUntil([&] { return ReadAll(out_ + "/metrics.jsonl").size() > rows.size(); }))
      << "stopped training after SIGHUP";
  const auto [status, output] = SignalAndWait(pid, SIGTERM, log);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), kExitStopped) << output;
  EXPECT_NE(output.find("stopped by signal after step "), std::string::npos) << output;
}

// `dropk-train ... | head` killed the run (SIGPIPE, exit 141) at the first
// log line after head exited: no checkpoint, no message. The writes now
// fail and training goes on to its end and its final save.
TEST_F(CheckpointCliTest, AClosedStdoutDoesNotKillTheRun) {
  const CliResult r = RunCommand("bash -c '" + Train(out_, "--max_iters=40 --save_every=0") +
                                 " 2>&1 | head -c 1 > /dev/null; exit ${PIPESTATUS[0]}'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadAll(out_ + "/checkpoints/LATEST"), CheckpointDirName(40) + "\n");
}

// A full disk under out_dir (metrics.jsonl) stopped training with exit 1
// and abandoned the checkpoint being written in the background: every step
// since the last save lost. metrics.jsonl is a record; a failed write now
// warns once and training goes on, saving as usual. The full disk is a
// 64 KiB tmpfs as out_dir, in a mount namespace of its own (root only).
TEST_F(CheckpointCliTest, AFullDiskUnderTheMetricsWarnsAndTrainingGoesOn) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a tmpfs in its own mount namespace";
  const std::string small = out_ + "/small";  // out_dir, full after ~300 metrics rows
  const std::string ckpts = out_ + "/checkpoints";
  fs::create_directories(small);
  const CliResult r =
      RunCommand("unshare -m sh -c 'mount -t tmpfs -o size=64k tmpfs " + small + " && exec " +
                 Train(small, "--max_iters=600 --save_every=100 --checkpoint_dir=" + ckpts) + "'");
  if (r.exit_code != 0 && r.output.find("dropk-train") == std::string::npos) {
    GTEST_SKIP() << "no tmpfs in a mount namespace here: " << r.output;  // the trainer never ran
  }
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("No space left on device; training goes on, and " + small +
                          "/metrics.jsonl has no rows from step "),
            std::string::npos)
      << r.output;
  EXPECT_EQ(ReadAll(ckpts + "/LATEST"), CheckpointDirName(600) + "\n");
}

// A run that diverged right after a save (learning rate 1e30) committed
// that save, and keep_last=1 deleted the last good checkpoint: LATEST held
// wrecked parameters and resuming from it failed at once with a hint that
// blamed the learning rate. The newest checkpoint known good is now kept
// whatever keep_last says, and the error names it.
TEST_F(CheckpointCliTest, DivergenceKeepsTheLastGoodCheckpointAndNamesIt) {
  for (const char* async : {"false", "true"}) {
    SCOPED_TRACE(std::string("async_checkpoints=") + async);
    const std::string out = out_ + "/async_" + async;
    ASSERT_EQ(RunCommand(Train(out, "--max_iters=5 --save_every=5")).exit_code, 0);
    const CliResult r = RunCommand(
        Train(out, std::string("--resume=latest --max_iters=20 --learning_rate=1e30 --min_lr=0 "
                               "--save_every=1 --keep_last=1 --async_checkpoints=") +
                       async));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("training loss is"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("resume from the newest checkpoint at or before step-00000005"),
              std::string::npos)
        << r.output;
    absl::StatusOr<CheckpointData> good =
        ReadCheckpoint(out + "/checkpoints/" + CheckpointDirName(5));
    ASSERT_TRUE(good.ok()) << good.status();
    EXPECT_EQ(good->step, 5);
    // A synchronous save committed the diverged parameters as LATEST (a
    // background one in flight is left invisible): resuming from it says so.
    if (std::string(async) == "false") {
      ASSERT_EQ(ReadAll(out + "/checkpoints/LATEST"), CheckpointDirName(6) + "\n");
      const CliResult again = RunCommand(Train(out, "--resume=latest --max_iters=20"));
      EXPECT_EQ(again.exit_code, 1) << again.output;
      EXPECT_NE(again.output.find("already give it: resume from an earlier checkpoint"),
                std::string::npos)
          << again.output;
    }
  }
}

// A signal during the first evaluation of a fresh run said "checkpoint
// saved; resume with --resume=latest", and there was none.
TEST_F(CheckpointCliTest, ASignalBeforeTheFirstStepSaysNothingWasSaved) {
  const std::string log = out_ + ".log";
  fs::create_directories(out_);
  // 10000 batches (the most eval_iters allows) per split: seconds, far
  // longer than the 300 ms the test waits.
  const pid_t pid =
      Spawn(Train(out_, "--max_iters=100000 --eval_interval=7 --eval_iters=10000"), log);
  ASSERT_TRUE(WaitUntil([&] { return ReadAll(log).find("parameters") != std::string::npos; }))
      << ReadAll(log);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto [status, output] = SignalAndWait(pid, SIGTERM, log);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), kExitStopped) << output;
  EXPECT_NE(output.find("stopped by signal before the first step; nothing was saved"),
            std::string::npos)
      << output;
  EXPECT_FALSE(fs::exists(out_ + "/checkpoints/LATEST"));
}

// With gradient accumulation a step can outlast a preemption's grace
// period; a stop signal waited for the whole step (here, 65536 micro-batches,
// the most a step may have: minutes). The step's micro-batches are now
// abandoned, nothing updated, and the steps done so far saved.
TEST_F(CheckpointCliTest, SigtermDuringALongAccumulatedStepSavesWithoutFinishingIt) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=3 --save_every=0")).exit_code, 0);
  const std::string log = out_ + ".log";
  const pid_t pid = Spawn(Train(out_,
                                "--resume=latest --max_iters=65536 --save_every=0 "
                                "--gradient_accumulation_steps=65536"),
                          log);
  ASSERT_TRUE(WaitUntil([&] { return ReadAll(log).find("resumed from") != std::string::npos; }))
      << ReadAll(log);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pid, SIGTERM);
  int status = 0;
  const bool exited = WaitForExit(pid, &status);
  const std::string output = ReadAll(log);
  fs::remove(log);
  ASSERT_TRUE(exited) << "still in its step 60 s after SIGTERM: " << output;
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), kExitStopped) << output;
  EXPECT_NE(output.find("stop signal during step 3: its micro-batches abandoned"),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("stopped by signal after step 3"), std::string::npos) << output;
  EXPECT_EQ(ReadAll(out_ + "/checkpoints/LATEST"), CheckpointDirName(3) + "\n");
}

// A token file shortened in place while training reads it (it is
// memory-mapped) killed the run with "Bus error" (exit 135) and no word of
// why. It is now one line naming the likely cause, exit 1, and the
// checkpoints saved so far stay intact.
TEST_F(CheckpointCliTest, ATokenFileShortenedDuringTrainingIsNamedNotABusError) {
  const std::string data = out_ + "/data";
  fs::create_directories(out_);
  fs::copy(*data_, data, fs::copy_options::recursive);
  const std::string log = out_ + ".log";
  const std::string run = out_ + "/run";
  const pid_t pid = Spawn(Train(run, "--max_iters=100000 --save_every=3 --data_dir=" + data), log);
  // Once step 3's save has committed (saves are asynchronous).
  ASSERT_TRUE(WaitUntil([&] { return fs::exists(run + "/checkpoints/LATEST"); }));
  fs::resize_file(data + "/train.bin", 64);
  int status = 0;
  const bool exited = WaitForExit(pid, &status);
  const std::string output = ReadAll(log);
  fs::remove(log);
  ASSERT_TRUE(exited) << "still training on a file of 64 bytes: " << output;
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << ": " << output;
  EXPECT_EQ(WEXITSTATUS(status), 1) << output;
  EXPECT_NE(output.find("dropk-train: bus error reading a memory-mapped file: most likely a "
                        "token file in data_dir was shortened"),
            std::string::npos)
      << output;
  EXPECT_EQ(RunCommand(Dropk("ckpt verify " + run + "/checkpoints")).exit_code, 0);
}

TEST_F(CheckpointCliTest, SigtermSavesTheCurrentStepAndExits75) {
  ExpectSignalSavesTheCurrentStep(out_, SIGTERM,
                                  [&](const std::string& a) { return Train(out_, a); });
}

// A stop signal was acted on only after the evaluation in progress, which
// for a large model (eval_iters of 1024-token batches) can outlast the
// grace period a preemption gives, leaving no checkpoint of the steps
// trained since the last save. The evaluation is now abandoned and those
// steps saved at once.
TEST_F(CheckpointCliTest, SigtermDuringAnEvaluationSavesWithoutWaitingForIt) {
  ASSERT_EQ(RunCommand(Train(out_, "--max_iters=5 --save_every=5")).exit_code, 0);
  const std::string log = out_ + ".log";
  // Resumed at step 5, it trains steps 5 and 6, then evaluates at step 7
  // for far longer than the test waits (10000 batches per split, the most
  // eval_iters allows: seconds).
  const pid_t pid = Spawn(Train(out_,
                                "--resume=latest --max_iters=100000 --save_every=0 "
                                "--eval_interval=7 --eval_iters=10000"),
                          log);
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadAll(out_ + "/metrics.jsonl").find("\"step\":6,") != std::string::npos; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto signalled = std::chrono::steady_clock::now();
  kill(pid, SIGTERM);
  int status = 0;
  const bool exited = WaitForExit(pid, &status);
  ASSERT_TRUE(exited) << "still evaluating 60 s after SIGTERM";
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, std::chrono::seconds(10));
  const std::string output = ReadAll(log);
  fs::remove(log);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), kExitStopped) << output;
  EXPECT_NE(output.find("evaluation at step 7: evaluation abandoned"), std::string::npos) << output;
  EXPECT_NE(output.find("stopped by signal after step 7"), std::string::npos) << output;
  EXPECT_EQ(ReadAll(out_ + "/checkpoints/LATEST"), CheckpointDirName(7) + "\n");
  absl::StatusOr<CheckpointData> data =
      ReadCheckpoint(out_ + "/checkpoints/" + CheckpointDirName(7));
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->step, 7);
}

// Two jobs on one out_dir, both resuming (a job started twice; an MPIJob
// restarted while its old launcher lingers) appended to one metrics.jsonl
// and saved into one checkpoint directory. The second is now refused,
// naming the first, and the first trains on undisturbed.
TEST_F(CheckpointCliTest, ASecondJobOnTheSameOutDirIsRefused) {
  const std::string log = out_ + ".log";
  fs::create_directories(out_);
  const pid_t pid = Spawn(Train(out_, "--resume=latest --max_iters=100000 --save_every=0"), log);
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadAll(out_ + "/metrics.jsonl").find("\"step\":2,") != std::string::npos; }));
  const CliResult second = RunCommand(Train(out_, "--resume=latest --max_iters=100000"));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string first_output = ReadAll(log);
  fs::remove(log);
  EXPECT_EQ(second.exit_code, 1) << second.output;
  EXPECT_NE(second.output.find("out_dir=" + out_ + " is in use by another dropk-train job (pid " +
                               std::to_string(pid) + " on this host"),
            std::string::npos)
      << second.output;
  ASSERT_TRUE(WIFEXITED(status)) << first_output;
  EXPECT_EQ(WEXITSTATUS(status), kExitStopped) << first_output;
  EXPECT_NE(first_output.find("stopped by signal after step "), std::string::npos) << first_output;
}

// A second job waiting for the first's out_dir to be free, stopped by a
// signal: it ended exit 1, and recorded "stopped by a signal" in the first
// job's failure record, where that job's launcher would name it as a
// failure. It is a stop: exit 75, and nothing recorded.
TEST_F(CheckpointCliTest, ASignalWhileWaitingForTheRunDirectoryIsAStopNotAFailure) {
  const std::string log = out_ + ".log";
  const std::string second_log = out_ + ".second.log";
  fs::create_directories(out_);
  const pid_t first = Spawn(Train(out_, "--resume=latest --max_iters=100000 --save_every=0"), log);
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadAll(out_ + "/metrics.jsonl").find("\"step\":2,") != std::string::npos; }));
  const pid_t second = Spawn(Train(out_, "--resume=latest --max_iters=100000"), second_log);
  ASSERT_TRUE(WaitUntil([&] {
    return ReadAll(second_log).find("is locked by") != std::string::npos;
  })) << ReadAll(second_log);
  const auto [status, output] = SignalAndWait(second, SIGTERM, second_log);
  SignalAndWait(first, SIGTERM, log);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), kExitStopped) << output;
  EXPECT_NE(output.find("stopped by a signal while waiting for out_dir=" + out_), std::string::npos)
      << output;
  EXPECT_FALSE(fs::exists(out_ + "/failures")) << ReadAll(out_ + "/failures/rank-00000.log");
}

// A real kill -9 while saving every step a model whose checkpoint takes a
// while to write: whatever moment it lands, LATEST names a checkpoint that
// verifies, and training resumes from it.
TEST_F(CheckpointCliTest, KillNineMidSaveLeavesLoadableLatest) {
  const std::string log = out_ + ".log";
  fs::create_directories(out_);
  const std::string ckpts = out_ + "/checkpoints";
  const std::string big =
      "--n_layer=4 --n_embd=256 --n_head=4 --batch_size=1 --block_size=16 "
      "--save_every=1 --keep_last=2 --max_iters=100000 --eval_interval=100000";
  for (int attempt = 0; attempt < 3; ++attempt) {
    const pid_t pid = Spawn(Train(out_, big + (attempt > 0 ? " --resume=latest" : "")), log);
    // After at least two more checkpoints, kill at a moment that moves
    // between attempts (inside or between saves).
    ASSERT_TRUE(WaitUntil([&] {
      std::vector<std::string> skipped;
      absl::StatusOr<std::string> latest = FindLatestValidCheckpoint(ckpts, &skipped);
      const std::string text = ReadAll(log);
      return latest.ok() && text.find("checkpoint: step") != std::string::npos &&
             std::count(text.begin(), text.end(), '\n') > 6;
    })) << ReadAll(log);
    std::this_thread::sleep_for(std::chrono::milliseconds(7 + 13 * attempt));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "attempt " << attempt << ": " << ReadAll(log);
    const std::string latest = ReadAll(ckpts + "/LATEST");
    ASSERT_FALSE(latest.empty()) << "attempt " << attempt << ": " << ReadAll(log);
    const std::string dir = ckpts + "/" + latest.substr(0, latest.size() - 1);
    EXPECT_TRUE(VerifyCheckpoint(dir).ok()) << VerifyCheckpoint(dir);
  }
  fs::remove(log);
}

}  // namespace
}  // namespace dropk
