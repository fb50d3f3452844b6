// Checkpoint writer and reader: round trip, every corruption a reader must
// refuse (naming checkpoint, file and tensor), fault injection at every
// write of a save, retention, LATEST fallback, resume config checks.
#include <grp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/exit_codes.h"
#include "checkpoint/async_writer.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "comm/communicator.h"
#include "model/gpt.h"
#include "model/kernels.h"
#include "support/fault_injection_env.h"
#include "support/fifo.h"
#include "support/forwarding_env.h"
#include "support/tiny_config.h"
#include "trainer/config.h"
#include "trainer/optimizer.h"
#include "trainer/training_checkpoints.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A tiny model with distinct parameters and moments, saved through a writer.
class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) /
            ("dropk_ckpt_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
             std::to_string(getpid())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    config_ = test_util::TinyTrainConfig(/*n_layer=*/2, /*n_head=*/2, /*n_embd=*/16,
                                         /*block_size=*/8);
    config_.set_dropout(0.1f);
    tokenizer_.set_kind(Tokenizer::BYTE);
    kernels_ = *MakeKernels(Device::kCpu, 1);
    gpt_ = *Gpt::Create(test_util::ShapeOf(config_, 256), 1, kernels_.get());
    gpt_->InitWeights(42);
    optimizer_ = std::make_unique<AdamWOptimizer>(gpt_.get(), AdamWOptions{});
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    std::vector<float> m(gpt_->num_params()), v(gpt_->num_params());
    for (size_t i = 0; i < m.size(); ++i) {
      m[i] = normal(rng);
      v[i] = std::abs(normal(rng));
    }
    kernels_->CopyToDevice(optimizer_->first_moment(), m.data(), m.size() * 4);
    kernels_->CopyToDevice(optimizer_->second_moment(), v.data(), v.size() * 4);
    comm_ = MakeSingleProcessCommunicator();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<float> Host(const float* device) {
    std::vector<float> out(gpt_->num_params());
    kernels_->CopyToHost(out.data(), device, out.size() * 4);
    return out;
  }

  CheckpointState State(int64_t step) {
    CheckpointState s;
    s.config = &config_;
    s.tokenizer = &tokenizer_;
    s.step = step;
    s.tokens_seen = step * 100;
    s.optimizer_step = step;
    s.last_train_loss = 1.5f;
    s.kernels = kernels_.get();
    s.params = gpt_->params();
    s.adam_m = optimizer_->first_moment();
    s.adam_v = optimizer_->second_moment();
    s.num_params = gpt_->num_params();
    return s;
  }

  absl::StatusOr<std::string> Save(int64_t step, Env* env = nullptr, int keep_last = 3,
                                   int keep_every = 0, size_t buffer = 1000) {
    // A small odd buffer makes every tensor cross chunk boundaries.
    CheckpointWriter writer({.checkpoints_dir = dir_ + "/ckpt",
                             .keep_last = keep_last,
                             .keep_every = keep_every,
                             .buffer_bytes = buffer,
                             .env = env},
                            comm_.get());
    return writer.Save(State(step));
  }

  std::string Latest() { return ReadAll(dir_ + "/ckpt/LATEST"); }

  // Expects ReadCheckpoint(dir) to fail with every one of `parts` in the message.
  void ExpectRefused(const std::string& dir, std::vector<std::string> parts) {
    absl::StatusOr<CheckpointData> data = ReadCheckpoint(dir);
    ASSERT_FALSE(data.ok());
    for (const std::string& part : parts) {
      EXPECT_NE(data.status().message().find(part), std::string::npos)
          << "missing \"" << part << "\" in: " << data.status().message();
    }
    EXPECT_FALSE(VerifyCheckpoint(dir).ok());
  }

  std::string dir_;
  TrainConfig config_;
  Tokenizer tokenizer_;
  std::unique_ptr<Kernels> kernels_;
  std::unique_ptr<Gpt> gpt_;
  std::unique_ptr<AdamWOptimizer> optimizer_;
  std::unique_ptr<Communicator> comm_;
};

TEST_F(CheckpointTest, RoundTripIsBitwise) {
  absl::StatusOr<std::string> saved = Save(7);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(*saved, dir_ + "/ckpt/step-00000007");
  EXPECT_EQ(Latest(), "step-00000007\n");
  absl::StatusOr<CheckpointData> data = ReadCheckpoint(*saved);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->step, 7);
  EXPECT_EQ(data->tokens_seen, 700);
  EXPECT_EQ(data->optimizer_step, 7);
  EXPECT_EQ(data->world_size, 1);
  EXPECT_EQ(data->config.n_embd(), 16);
  EXPECT_EQ(data->tokenizer.kind(), Tokenizer::BYTE);
  EXPECT_EQ(data->params, Host(gpt_->params()));
  EXPECT_EQ(data->adam_m, Host(optimizer_->first_moment()));
  EXPECT_EQ(data->adam_v, Host(optimizer_->second_moment()));
  ReadCheckpointOptions weights_only;
  weights_only.weights_only = true;
  absl::StatusOr<CheckpointData> weights = ReadCheckpoint(*saved, weights_only);
  ASSERT_TRUE(weights.ok());
  EXPECT_EQ(weights->params, data->params);
  EXPECT_TRUE(weights->adam_m.empty());
  EXPECT_TRUE(VerifyCheckpoint(*saved).ok());

  // Streaming load into device memory of a fresh model gives the same bits.
  std::unique_ptr<Gpt> other = *Gpt::Create(gpt_->config(), 1, kernels_.get());
  AdamWOptimizer other_opt(other.get(), AdamWOptions{});
  CheckpointLoadTarget target{kernels_.get(), other->params(), other_opt.first_moment(),
                              other_opt.second_moment(), other->num_params()};
  ASSERT_TRUE(LoadCheckpointInto(*saved, target, nullptr, 4096).ok());
  std::vector<float> p(other->num_params());
  kernels_->CopyToHost(p.data(), other->params(), p.size() * 4);
  EXPECT_EQ(p, data->params);
}

// On the CPU a load writes parameters in place, behind the kernels' back; with
// precision bf16 the kernels keep bf16 copies of the weights, which must not
// outlive the load. A model that ran before the load then computes what a
// fresh model loaded from the same checkpoint computes.
TEST_F(CheckpointTest, LoadingIntoAModelThatRanDropsItsBf16WeightCopies) {
  KernelOptions options;
  options.precision = MatmulPrecision::kBf16;
  absl::StatusOr<std::unique_ptr<Kernels>> bf16 = MakeKernels(Device::kCpu, options);
  ASSERT_TRUE(bf16.ok()) << bf16.status();  // every CPU has bf16 (widened where needed)
  absl::StatusOr<std::string> saved = Save(3);
  ASSERT_TRUE(saved.ok()) << saved.status();
  const std::vector<int32_t> tokens = {1, 7, 42, 9, 200, 3, 3, 17};
  const int T = static_cast<int>(tokens.size()), V = 256;
  auto logits_after_load = [&](bool ran_before) {
    std::unique_ptr<Gpt> model = *Gpt::Create(gpt_->config(), 1, bf16->get());
    model->InitWeights(7);  // other weights than the checkpoint's
    if (ran_before) model->Forward(tokens.data(), nullptr, 1, T, nullptr);
    CheckpointLoadTarget target{bf16->get(), model->params(), nullptr, nullptr,
                                model->num_params()};
    EXPECT_TRUE(LoadCheckpointInto(*saved, target).ok());
    model->Forward(tokens.data(), nullptr, 1, T, nullptr);
    std::vector<float> logits(V);
    model->LogitsToHost(0, T - 1, logits.data());
    return logits;
  };
  EXPECT_EQ(logits_after_load(true), logits_after_load(false));
}

TEST_F(CheckpointTest, OptimizerSlicesOfAnyWorldSizeTileTheParameters) {
  for (int world : {1, 2, 3, 8}) {
    size_t next = 0;
    for (int r = 0; r < world; ++r) {
      const auto [begin, end] = OptimizerSlice(1001, r, world);
      EXPECT_EQ(begin, next);
      next = end;
    }
    EXPECT_EQ(next, 1001u);
  }
  EXPECT_EQ(OptimizerDataFileName(3, 8), "optim-rank00003-of-00008.data");
}

TEST_F(CheckpointTest, FlippedByteIsCrcMismatchNamingFileAndTensor) {
  const std::string ckpt = *Save(1);
  std::string bytes = ReadAll(ckpt + "/model.data");
  bytes[bytes.size() - 3] ^= 0x10;  // inside the last tensor, ln_f.bias
  WriteAll(ckpt + "/model.data", bytes);
  ExpectRefused(ckpt, {ckpt, "model.data", "model/transformer.ln_f.bias", "CRC32C mismatch"});
}

TEST_F(CheckpointTest, FlippedByteInOptimizerState) {
  const std::string ckpt = *Save(1);
  const std::string file = ckpt + "/optim-rank00000-of-00001.data";
  std::string bytes = ReadAll(file);
  bytes[bytes.size() - 1] ^= 1;
  WriteAll(file, bytes);
  ExpectRefused(ckpt, {"optim-rank00000-of-00001.data", "optimizer/adam_v", "CRC32C mismatch"});
  // Weights-only readers (serving) do not need the optimizer state.
  ReadCheckpointOptions weights_only;
  weights_only.weights_only = true;
  EXPECT_TRUE(ReadCheckpoint(ckpt, weights_only).ok());
  // Nor does their verification (what dropk-serve's scan runs); the full
  // one (resume, `dropk ckpt verify`) still refuses it.
  EXPECT_TRUE(VerifyCheckpoint(ckpt, nullptr, weights_only).ok());
  std::vector<std::string> skipped;
  EXPECT_EQ(FindLatestValidCheckpoint(dir_ + "/ckpt", &skipped, weights_only).value_or(""), ckpt);
  EXPECT_FALSE(FindLatestValidCheckpoint(dir_ + "/ckpt", &skipped).ok());
}

// Weights-only verification still checks the weights and the whole manifest.
TEST_F(CheckpointTest, WeightsOnlyVerificationRefusesBadWeightsAndSizes) {
  ReadCheckpointOptions weights_only;
  weights_only.weights_only = true;
  const std::string ckpt = *Save(1);
  std::string bytes = ReadAll(ckpt + "/model.data");
  bytes[bytes.size() - 3] ^= 0x10;
  WriteAll(ckpt + "/model.data", bytes);
  const absl::Status bad_weights = VerifyCheckpoint(ckpt, nullptr, weights_only);
  EXPECT_NE(bad_weights.message().find("CRC32C mismatch"), std::string::npos) << bad_weights;
  const std::string other = *Save(2);
  const std::string optim = other + "/optim-rank00000-of-00001.data";
  WriteAll(optim, ReadAll(optim) + "x");  // a size the manifest does not pin
  EXPECT_FALSE(VerifyCheckpoint(other, nullptr, weights_only).ok());
}

TEST_F(CheckpointTest, TruncatedDataFile) {
  const std::string ckpt = *Save(1);
  fs::resize_file(ckpt + "/model.data", 1000);
  ExpectRefused(ckpt, {"model.data", "past the end of the file", "truncated"});
}

// Issue 9 item 7: bytes past the last entry used to pass every check.
TEST_F(CheckpointTest, BytesAppendedToADataFileAreRefused) {
  for (const char* file : {"model.data", "optim-rank00000-of-00001.data"}) {
    SCOPED_TRACE(file);
    const std::string ckpt = *Save(1);
    const uint64_t size = fs::file_size(ckpt + "/" + file);
    {
      std::ofstream out(ckpt + "/" + file, std::ios::binary | std::ios::app);
      out.write("\0\0\0\0\0\0\0", 7);
    }
    ExpectRefused(ckpt, {file, absl::StrCat("is ", size + 7, " bytes, the manifest says ", size),
                         "appended"});
    fs::remove_all(dir_ + "/ckpt");
  }
}

TEST_F(CheckpointTest, ManifestPinsEveryDataFileItsEntriesUse) {
  const std::string ckpt = *Save(1);
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(ckpt);
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_EQ(vm->manifest.data_files_size(), 2);
  for (const DataFileInfo& f : vm->manifest.data_files()) {
    EXPECT_EQ(f.size(), fs::file_size(ckpt + "/" + f.name())) << f.name();
  }
  // A version-2 manifest without the list, or one that leaves a file out,
  // is refused; a version-1 manifest (before sizes were pinned) is read.
  CheckpointManifest m = vm->manifest;
  m.mutable_data_files()->RemoveLast();
  WriteAll(ckpt + "/manifest.pb", SerializeManifestFile(m));
  ExpectRefused(ckpt, {"not among the manifest's data files"});
  m.clear_data_files();
  WriteAll(ckpt + "/manifest.pb", SerializeManifestFile(m));
  ExpectRefused(ckpt, {"manifest.pb", "lists no data files"});
  CheckpointManifestFile v1;
  v1.set_magic(kCheckpointMagic);
  v1.set_format_version(1);
  v1.set_manifest(m.SerializeAsString());
  v1.set_manifest_crc32c(crc32c::Value(v1.manifest().data(), v1.manifest().size()));
  WriteAll(ckpt + "/manifest.pb", v1.SerializeAsString());
  EXPECT_TRUE(VerifyCheckpoint(ckpt).ok()) << VerifyCheckpoint(ckpt);
}

TEST_F(CheckpointTest, MissingDataFile) {
  const std::string ckpt = *Save(1);
  fs::remove(ckpt + "/optim-rank00000-of-00001.data");
  ExpectRefused(ckpt, {"optim-rank00000-of-00001.data", "optimizer/adam_m", "missing"});
}

// A checkpoint directory under one that may not be searched (no x bit, or
// a link into another user's directory) read "does not exist", DataLoss,
// which --resume passes over like a corrupt checkpoint before its saves
// replace it. reader.h promises PermissionDenied for what the OS will not
// let this user read. Opened in a child, as nobody when root (root may
// search anything).
TEST_F(CheckpointTest, ACheckpointDirectoryThatMayNotBeReachedIsPermissionDenied) {
  const std::string ckpt = *Save(1);
  const std::string parent = dir_ + "/ckpt";
  fs::permissions(parent, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                              fs::perms::others_read);
  const auto open_as_a_user = [&] {
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      std::fprintf(stderr, "cannot become nobody\n");
      std::_Exit(2);
    }
    const absl::Status s = OpenCheckpoint(ckpt).status();
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    const bool named = absl::StrContains(s.message(), "checkpoint " + ckpt) &&
                       absl::StrContains(s.message(), "Permission denied");
    std::_Exit(absl::IsPermissionDenied(s) && named ? 0 : 1);
  };
  EXPECT_EXIT(open_as_a_user(), ::testing::ExitedWithCode(0), "");
  fs::permissions(parent, fs::perms::owner_all);
}

// A step-* entry this user may not look at (here a link into a directory
// of mode 000) was left out of the candidates in silence: without a
// readable LATEST, --resume took the one before and its save of that step
// replaced the link. It is a candidate (found by listing: LATEST names step
// 1 here), which OpenCheckpoint names as PermissionDenied. Run as nobody
// when root.
TEST_F(CheckpointTest, AStepEntryThatMayNotBeReachedIsACandidate) {
  ASSERT_TRUE(Save(1).ok());
  const std::string newest = *Save(2);
  const std::string hidden = dir_ + "/hidden";
  fs::create_directories(hidden);
  fs::rename(newest, hidden + "/step-00000002");
  fs::create_directory_symlink(hidden + "/step-00000002", newest);
  WriteAll(dir_ + "/ckpt/LATEST", "step-00000001");
  fs::permissions(hidden, fs::perms::none);
  const auto list_as_a_user = [&] {
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      std::fprintf(stderr, "cannot become nobody\n");
      std::_Exit(2);
    }
    const std::vector<std::string> candidates = CheckpointCandidates(dir_ + "/ckpt", nullptr);
    for (const std::string& c : candidates) std::fprintf(stderr, "candidate %s\n", c.c_str());
    const bool listed = std::find(candidates.begin(), candidates.end(), newest) != candidates.end();
    std::_Exit(listed && absl::IsPermissionDenied(OpenCheckpoint(newest).status()) ? 0 : 1);
  };
  EXPECT_EXIT(list_as_a_user(), ::testing::ExitedWithCode(0), "");
  fs::permissions(hidden, fs::perms::owner_all);
}

// What a checkpoint file does to a reader when it goes away or shrinks
// after its manifest was read (a running trainer's keep_last pruning the
// checkpoint): its first read of model.data runs `change` first.
class ChangingBeforeFirstReadEnv : public ForwardingEnv {
 public:
  ChangingBeforeFirstReadEnv(Env* base, std::function<void(const std::string&)> change)
      : ForwardingEnv(base), change_(std::move(change)) {}
  absl::Status ReadFileRange(const std::string& path, uint64_t offset, size_t n,
                             void* out) override {
    if (!changed_ && absl::EndsWith(path, "/model.data")) {
      changed_ = true;
      change_(path);
    }
    return base_->ReadFileRange(path, offset, n, out);
  }

 private:
  std::function<void(const std::string&)> change_;
  std::atomic<bool> changed_{false};
};

// Such a read is DataLoss naming the checkpoint and the file (exit 1 in
// dropk ckpt), not NotFound or InvalidArgument, which the tools report as
// a usage error (exit 2).
TEST_F(CheckpointTest, AFileThatVanishesOrShrinksMidReadIsDataLossNamingIt) {
  const std::string ckpt = *Save(1);
  const std::function<void(const std::string&)> changes[] = {
      [](const std::string& path) { fs::remove(path); },
      [](const std::string& path) { fs::resize_file(path, 100); },
  };
  const char* const reasons[] = {"No such file or directory", "file ends at byte 100"};
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(reasons[i]);
    const std::string copy = dir_ + "/copy";
    fs::remove_all(copy);
    fs::copy(ckpt, copy);
    ChangingBeforeFirstReadEnv env(Env::Default(), changes[i]);
    const absl::Status s = VerifyCheckpoint(copy, &env);
    EXPECT_TRUE(absl::IsDataLoss(s)) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "checkpoint " + copy + ": file model.data")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), reasons[i])) << s;
  }
}

TEST_F(CheckpointTest, ManifestProblems) {
  const std::string ckpt = *Save(1);
  const std::string manifest_path = ckpt + "/manifest.pb";
  const std::string good = ReadAll(manifest_path);
  CheckpointManifestFile file;
  ASSERT_TRUE(file.ParseFromString(good));

  WriteAll(manifest_path, "");
  ExpectRefused(ckpt, {"manifest.pb", "empty"});
  WriteAll(manifest_path, "this is not a protobuf \xff\xff\xff");
  ExpectRefused(ckpt, {"manifest.pb"});
  {
    CheckpointManifestFile bad = file;
    bad.set_magic("not-dropk");
    WriteAll(manifest_path, bad.SerializeAsString());
    ExpectRefused(ckpt, {"manifest.pb", "wrong magic"});
  }
  {
    CheckpointManifestFile bad = file;
    bad.set_format_version(99);
    WriteAll(manifest_path, bad.SerializeAsString());
    ExpectRefused(ckpt, {"manifest.pb", "format version 99"});
  }
  {
    CheckpointManifestFile bad = file;
    bad.mutable_manifest()->back() ^= 1;
    WriteAll(manifest_path, bad.SerializeAsString());
    ExpectRefused(ckpt, {"manifest.pb", "manifest CRC32C mismatch"});
  }
  fs::remove(manifest_path);
  ExpectRefused(ckpt, {ckpt, "manifest.pb"});
}

// Rewrites the manifest of ckpt after `edit`, with a correct manifest CRC,
// so only the entry checks can catch it.
void EditManifest(const std::string& ckpt, const std::function<void(CheckpointManifest&)>& edit) {
  absl::StatusOr<CheckpointManifest> m = ParseManifestFile(ReadAll(ckpt + "/manifest.pb"), ckpt);
  ASSERT_TRUE(m.ok());
  edit(*m);
  WriteAll(ckpt + "/manifest.pb", SerializeManifestFile(*m));
}

// manifest_crc32c does not cover format_version: a flipped bit there (2 ->
// 3) read as "written by a newer dropk", which --resume refuses instead of
// skipping a corrupt checkpoint. format_version_crc32c covers it now; a
// manifest without it (what dropk wrote before) is still read, and a
// version above 2 without it is a corrupt field, since every dropk that
// writes such a version writes its CRC.
TEST_F(CheckpointTest, AFlippedFormatVersionIsCorruptionNotANewerFormat) {
  const std::string ckpt = *Save(1);
  const std::string manifest_path = ckpt + "/manifest.pb";
  CheckpointManifestFile file;
  ASSERT_TRUE(file.ParseFromString(ReadAll(manifest_path)));
  ASSERT_TRUE(file.has_format_version_crc32c());
  EXPECT_EQ(DeclaredFormatVersion(ReadAll(manifest_path)), kCheckpointFormatVersion);

  CheckpointManifestFile flipped = file;
  flipped.set_format_version(kCheckpointFormatVersion ^ 1);  // 2 -> 3
  WriteAll(manifest_path, flipped.SerializeAsString());
  EXPECT_EQ(DeclaredFormatVersion(ReadAll(manifest_path)), 0u);
  ExpectRefused(ckpt, {"manifest.pb", "does not match its CRC32C", "corrupt version field"});

  // As dropk wrote it before format_version_crc32c: still read, and a
  // flipped version is corrupt there too.
  CheckpointManifestFile before = file;
  before.clear_format_version_crc32c();
  WriteAll(manifest_path, before.SerializeAsString());
  EXPECT_TRUE(VerifyCheckpoint(ckpt).ok()) << VerifyCheckpoint(ckpt);
  EXPECT_EQ(DeclaredFormatVersion(ReadAll(manifest_path)), kCheckpointFormatVersion);
  before.set_format_version(kCheckpointFormatVersion ^ 1);
  WriteAll(manifest_path, before.SerializeAsString());
  EXPECT_EQ(DeclaredFormatVersion(ReadAll(manifest_path)), 0u);
  ExpectRefused(ckpt, {"manifest.pb", "without the CRC32C", "corrupt version field"});

  // What a newer dropk writes: a higher version with its CRC.
  CheckpointManifestFile newer = file;
  newer.set_format_version(kCheckpointFormatVersion + 1);
  newer.set_format_version_crc32c(FormatVersionCrc32c(kCheckpointFormatVersion + 1));
  WriteAll(manifest_path, newer.SerializeAsString());
  EXPECT_EQ(DeclaredFormatVersion(ReadAll(manifest_path)), kCheckpointFormatVersion + 1);
  ExpectRefused(ckpt, {"manifest.pb", "is not supported"});
}

TEST_F(CheckpointTest, EntryProblemsAreRefusedBeforeAnyAllocation) {
  const std::string ckpt = *Save(1);
  const std::string good = ReadAll(ckpt + "/manifest.pb");
  struct Case {
    const char* what;
    std::function<void(CheckpointManifest&)> edit;
    std::vector<std::string> expected;
  };
  const std::vector<Case> cases = {
      {"shape x dtype != length",
       [](CheckpointManifest& m) { m.mutable_tensors(0)->set_length(12); },
       {"model/transformer.wte.weight", "length is 12"}},
      {"offset past the end",
       [](CheckpointManifest& m) { m.mutable_tensors(1)->set_offset(uint64_t{1} << 40); },
       {"model.data", "model/transformer.wpe.weight", "past the end"}},
      {"offset overflow",
       [](CheckpointManifest& m) { m.mutable_tensors(1)->set_offset(~uint64_t{0} - 10); },
       {"model/transformer.wpe.weight", "past the end"}},
      {"absurd shape",
       [](CheckpointManifest& m) {
         m.mutable_tensors(0)->set_shape(0, int64_t{1} << 40);
         m.mutable_tensors(0)->set_shape(1, int64_t{1} << 40);
       },
       {"model/transformer.wte.weight", "absurd"}},
      {"absurd model",
       [](CheckpointManifest& m) { m.mutable_config()->set_n_embd(1 << 30); },
       {"absurdly large"}},
      {"absurd layer count",
       [](CheckpointManifest& m) { m.mutable_config()->set_n_layer(1 << 30); },
       {"n_layer=1073741824"}},
      {"overlapping entries",
       [](CheckpointManifest& m) {
         m.mutable_tensors(2)->set_offset(m.tensors(1).offset());
         m.mutable_tensors(2)->set_crc32c(0);
       },
       {"model.data", "overlap"}},
      {"missing file",
       [](CheckpointManifest& m) { m.mutable_tensors(2)->set_file("nope.data"); },
       {"nope.data", "missing"}},
      {"path escape",
       [](CheckpointManifest& m) { m.mutable_tensors(2)->set_file("../../etc/passwd"); },
       {"plain file name"}},
      {"wrong dtype",
       [](CheckpointManifest& m) { m.mutable_tensors(3)->set_dtype(BFLOAT16); },
       {"dtype"}},
      {"unknown tensor",
       [](CheckpointManifest& m) { m.mutable_tensors(3)->set_name("model/x"); },
       {"model/x", "unknown tensor"}},
      {"duplicate tensor",
       [](CheckpointManifest& m) { *m.mutable_tensors(3) = m.tensors(2); },
       {"listed twice"}},
      {"missing tensor",
       [](CheckpointManifest& m) {
         m.mutable_tensors()->RemoveLast();
         m.mutable_tensors()->SwapElements(0, m.tensors_size() - 1);
         m.mutable_tensors()->RemoveLast();
       },
       {"missing from the manifest"}},
      {"slice gap",
       [](CheckpointManifest& m) {
         for (auto& e : *m.mutable_tensors()) {
           if (e.name() == kAdamMName) e.set_slice_start(4);
         }
       },
       {"optimizer/adam_m", "slice"}},
      {"negative step", [](CheckpointManifest& m) { m.set_step(-5); }, {"step=-5"}},
      {"world size", [](CheckpointManifest& m) { m.set_world_size(0); }, {"world_size=0"}},
      // Positions a resume starts from, and a rank count the optimizer
      // files contradict, verified when their CRCs matched.
      {"negative data_step", [](CheckpointManifest& m) { m.set_data_step(-1); }, {"data_step=-1"}},
      {"negative schedule_step",
       [](CheckpointManifest& m) { m.set_schedule_step(-2); },
       {"schedule_step=-2"}},
      {"negative dropout_step",
       [](CheckpointManifest& m) { m.set_dropout_step(-3); },
       {"dropout_step=-3"}},
      {"world size its optimizer files contradict",
       [](CheckpointManifest& m) { m.set_world_size(m.world_size() + 1); },
       {"optimizer/adam_", "not an optimizer file of the world_size="}},
      {"num_params", [](CheckpointManifest& m) { m.set_num_params(3); }, {"num_params=3"}},
      {"bad tokenizer",
       [](CheckpointManifest& m) { m.mutable_tokenizer()->set_kind(Tokenizer::KIND_UNSPECIFIED); },
       {"model shape"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    WriteAll(ckpt + "/manifest.pb", good);
    EditManifest(ckpt, c.edit);
    std::vector<std::string> expected = c.expected;
    expected.push_back(ckpt);
    ExpectRefused(ckpt, expected);
  }
  WriteAll(ckpt + "/manifest.pb", good);
  EXPECT_TRUE(ReadCheckpoint(ckpt).ok());
}

TEST_F(CheckpointTest, RetentionKeepsLastAndEveryMth) {
  for (int step = 1; step <= 9; ++step) ASSERT_TRUE(Save(step, nullptr, 2, 4).ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_ + "/ckpt")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"LATEST", "step-00000004", "step-00000008",
                                             "step-00000009"}));
  // A leftover temporary directory of a crashed save is cleaned up.
  fs::create_directories(dir_ + "/ckpt/step-00000010.tmp-deadbeef");
  ASSERT_TRUE(Save(10, nullptr, 2, 4).ok());
  EXPECT_FALSE(fs::exists(dir_ + "/ckpt/step-00000010.tmp-deadbeef"));
  EXPECT_FALSE(fs::exists(dir_ + "/ckpt/step-00000008") && false);
}

// step-N directories without a manifest (a copy of a run cut short, a
// directory made by hand) counted toward keep_last: newer than the
// checkpoints, they were kept and the checkpoints deleted, leaving one.
// They are neither counted nor deleted.
TEST_F(CheckpointTest, RetentionCountsOnlyCheckpoints) {
  ASSERT_TRUE(Save(1, nullptr, 2).ok());
  ASSERT_TRUE(Save(2, nullptr, 2).ok());
  fs::create_directories(dir_ + "/ckpt/step-00000003");
  fs::create_directories(dir_ + "/ckpt/step-00000004");
  std::ofstream(dir_ + "/ckpt/step-00000004/notes.txt") << "mine\n";
  ASSERT_TRUE(Save(5, nullptr, 2).ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_ + "/ckpt")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"LATEST", "step-00000002", "step-00000003",
                                             "step-00000004", "step-00000005"}));
  EXPECT_TRUE(VerifyCheckpoint(dir_ + "/ckpt/step-00000002").ok());
  EXPECT_EQ(ReadAll(dir_ + "/ckpt/step-00000004/notes.txt"), "mine\n");
}

// What a resume compares its step with to tell that the run goes back: the
// step LATEST names, whatever else is on disk.
TEST_F(CheckpointTest, LatestCheckpointStepIsWhatLatestNames) {
  EXPECT_EQ(LatestCheckpointStep(dir_ + "/ckpt"), -1);
  ASSERT_TRUE(Save(3).ok());
  ASSERT_TRUE(Save(7).ok());
  EXPECT_EQ(LatestCheckpointStep(dir_ + "/ckpt"), 7);
  WriteAll(dir_ + "/ckpt/LATEST", "step-00000003\n");
  EXPECT_EQ(LatestCheckpointStep(dir_ + "/ckpt"), 3);
  WriteAll(dir_ + "/ckpt/LATEST", "garbage\n");
  EXPECT_EQ(LatestCheckpointStep(dir_ + "/ckpt"), -1);
}

TEST_F(CheckpointTest, SavingTheSameStepAgainReplacesIt) {
  ASSERT_TRUE(Save(3).ok());
  fs::resize_file(dir_ + "/ckpt/step-00000003/model.data", 10);  // corrupt
  ASSERT_TRUE(Save(3).ok());
  EXPECT_TRUE(VerifyCheckpoint(dir_ + "/ckpt/step-00000003").ok());
}

// A symbolic link to nothing, or a loop, where a checkpoint of the step is
// saved (the reader skips it: "not a directory"): the save failed on it
// ("Not a directory"), so a resumed run trained up to that step and then
// exited 1. It is replaced, as a corrupt checkpoint of the step is.
TEST_F(CheckpointTest, SavingOverALinkToNothingOrALoopReplacesIt) {
  ASSERT_TRUE(Save(1).ok());
  for (const std::string target : {"step-00000003", "nowhere"}) {
    SCOPED_TRACE(target);
    fs::remove_all(dir_ + "/ckpt/step-00000003");
    fs::create_directory_symlink(target, dir_ + "/ckpt/step-00000003");
    const absl::StatusOr<std::string> saved = Save(3);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_FALSE(fs::is_symlink(dir_ + "/ckpt/step-00000003"));
    EXPECT_TRUE(VerifyCheckpoint(dir_ + "/ckpt/step-00000003").ok());
    EXPECT_EQ(Latest(), "step-00000003\n");
  }
}

// A FIFO where the writer puts LATEST.tmp: opening it for writing waited for
// a reader, and the run hung at its save.
TEST_F(CheckpointTest, AFifoInTheWayFailsTheSaveWithoutBlockingAndKeepsLatest) {
  ASSERT_TRUE(Save(1).ok());
  test_util::FifoWithUnblocker fifo(dir_ + "/ckpt/LATEST.tmp", std::chrono::seconds(10));
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> saved = Save(2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5)) << "save blocked";
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.status().message().find("LATEST.tmp: not a regular file"), std::string::npos)
      << saved.status();
  EXPECT_EQ(Latest(), "step-00000001\n");
  EXPECT_TRUE(VerifyCheckpoint(dir_ + "/ckpt/step-00000001").ok());
  // Step 2 itself was saved whole, and the error says so: "the save
  // failed" alone read as if the step were lost.
  EXPECT_TRUE(VerifyCheckpoint(dir_ + "/ckpt/step-00000002").ok());
  EXPECT_NE(saved.status().message().find(
                "ckpt/step-00000002: saved whole, but LATEST could not be updated to name it (it "
                "names the checkpoint before): "),
            std::string::npos)
      << saved.status();
}

// Removes a file's directory just before the file is opened for writing,
// as a user's `rm -rf` of the checkpoints directory during a save does.
class DirectoryVanishesEnv : public ForwardingEnv {
 public:
  using ForwardingEnv::ForwardingEnv;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    fs::remove_all(fs::path(path).parent_path());
    return base_->NewWritableFile(path);
  }
};

// A directory that vanishes during a save (ENOENT, NotFound) failed the
// save with NotFound, and dropk-train exited 2, the code of a bad command
// line, for a failure of the run. Synchronous and background saves alike:
// exit 1, naming the file and the OS's reason, LATEST unchanged.
TEST_F(CheckpointTest, ADirectoryThatVanishesDuringASaveIsARunFailureNotUsage) {
  ASSERT_TRUE(Save(1).ok());
  DirectoryVanishesEnv env(Env::Default());
  const absl::StatusOr<std::string> saved = Save(2, &env);
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(ExitCodeFor(saved.status()), kExitFailure) << saved.status();
  EXPECT_NE(
      saved.status().message().find("model.data: open for writing: No such file or directory"),
      std::string::npos)
      << saved.status();
  EXPECT_EQ(Latest(), "step-00000001\n");

  AsyncCheckpointWriter background({.checkpoints_dir = dir_ + "/ckpt", .env = &env}, comm_.get());
  ASSERT_TRUE(background.Start(State(3)).ok());
  const absl::Status finished = background.Finish();
  ASSERT_FALSE(finished.ok());
  EXPECT_EQ(ExitCodeFor(finished), kExitFailure) << finished;
  EXPECT_NE(finished.message().find("No such file or directory"), std::string::npos) << finished;
  EXPECT_EQ(Latest(), "step-00000001\n");
}

// Fails every file of one step's save (a disk full for a while, a network
// file system that went away and came back).
class FailsOneStepEnv : public ForwardingEnv {
 public:
  FailsOneStepEnv(Env* base, std::string step_dir) : ForwardingEnv(base), step_dir_(step_dir) {}
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    if (path.find("/" + step_dir_ + ".tmp-") != std::string::npos) {
      return absl::ResourceExhaustedError(path + ": write: No space left on device");
    }
    return base_->NewWritableFile(path);
  }

 private:
  std::string step_dir_;
};

// A background save that failed made the next save (the one due, the final
// one, the one a stop signal asks for) return that failure at once, so the
// run ended without saving the steps trained since the last checkpoint,
// though the disk took them fine. Now that state is saved, then the run
// still stops on the failure, saying which step it saved.
TEST_F(CheckpointTest, AFailedBackgroundSaveDoesNotCostTheNextOne) {
  config_.set_checkpoint_dir(dir_ + "/ckpt");
  config_.set_async_checkpoints(true);
  FailsOneStepEnv env(Env::Default(), "step-00000002");
  TrainingCheckpointer checkpointer(config_, gpt_->num_params(), comm_.get(), nullptr, &env);
  const DataIdentity data;
  std::ostringstream log;
  const auto save = [&](int64_t step) {
    return checkpointer.Save(config_, tokenizer_, data, *gpt_, *optimizer_, step, step * 100, 1.5f,
                             log);
  };
  ASSERT_TRUE(save(1).ok());
  ASSERT_TRUE(save(2).ok());  // started; its files fail in the background
  const absl::Status saved = save(3);
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.message().find("background save of step 2 failed"), std::string::npos) << saved;
  EXPECT_NE(saved.message().find("No space left on device"), std::string::npos) << saved;
  EXPECT_NE(saved.message().find("step 3 was saved after it"), std::string::npos) << saved;
  EXPECT_EQ(Latest(), "step-00000003\n");
  EXPECT_TRUE(VerifyCheckpoint(dir_ + "/ckpt/step-00000003").ok());
  EXPECT_TRUE(checkpointer.Finish(log).ok());
}

TEST_F(CheckpointTest, LatestFallsBackToNewestValid) {
  ASSERT_TRUE(Save(1).ok());
  ASSERT_TRUE(Save(2).ok());
  ASSERT_TRUE(Save(3).ok());
  std::vector<std::string> skipped;
  EXPECT_EQ(*FindLatestValidCheckpoint(dir_ + "/ckpt", &skipped), dir_ + "/ckpt/step-00000003");
  EXPECT_TRUE(skipped.empty());

  fs::resize_file(dir_ + "/ckpt/step-00000003/model.data", 100);
  skipped.clear();
  EXPECT_EQ(*FindLatestValidCheckpoint(dir_ + "/ckpt", &skipped), dir_ + "/ckpt/step-00000002");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("step-00000003"), std::string::npos) << skipped[0];
  EXPECT_NE(skipped[0].find("model.data"), std::string::npos) << skipped[0];

  for (const std::string latest : {"", "garbage\x01\x02", "../../etc"}) {
    WriteAll(dir_ + "/ckpt/LATEST", latest);
    skipped.clear();
    EXPECT_EQ(*FindLatestValidCheckpoint(dir_ + "/ckpt", &skipped), dir_ + "/ckpt/step-00000002");
    ASSERT_GE(skipped.size(), 2u);
    EXPECT_NE(skipped[0].find("LATEST"), std::string::npos) << skipped[0];
  }
  fs::remove(dir_ + "/ckpt/step-00000002/manifest.pb");
  fs::remove(dir_ + "/ckpt/step-00000001/optim-rank00000-of-00001.data");
  skipped.clear();
  absl::StatusOr<std::string> none = FindLatestValidCheckpoint(dir_ + "/ckpt", &skipped);
  EXPECT_TRUE(absl::IsNotFound(none.status()));
  EXPECT_EQ(skipped.size(), 4u);
}

// LATEST naming a checkpoint that was deleted (by hand, to free space) is
// skipped saying it does not exist; it read "not a directory".
TEST_F(CheckpointTest, LatestNamingADeletedCheckpointSaysItDoesNotExist) {
  ASSERT_TRUE(Save(1).ok());
  ASSERT_TRUE(Save(2).ok());
  fs::remove_all(dir_ + "/ckpt/step-00000002");
  std::vector<std::string> skipped;
  EXPECT_EQ(*FindLatestValidCheckpoint(dir_ + "/ckpt", &skipped), dir_ + "/ckpt/step-00000001");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0], "checkpoint " + dir_ + "/ckpt/step-00000002: does not exist");
  // A file in its place is still "not a directory".
  WriteAll(dir_ + "/ckpt/step-00000002", "x");
  EXPECT_EQ(OpenCheckpoint(dir_ + "/ckpt/step-00000002").status().message(),
            "checkpoint " + dir_ + "/ckpt/step-00000002: not a directory");
}

// A LATEST that is a symbolic link to its step directory (as other tools
// keep a "latest" link) read only "LATEST: not a regular file"; it now says
// what LATEST must hold and how to write it, for dropk-serve, --resume and
// dropk ckpt alike (all read it through ReadLatestFile).
TEST_F(CheckpointTest, ALatestLinkedToItsStepDirectorySaysWhatLatestMustBe) {
  ASSERT_TRUE(Save(2).ok());
  const std::string latest = dir_ + "/ckpt/LATEST";
  fs::remove(latest);
  fs::create_directory_symlink("step-00000002", latest);
  const std::string expected =
      latest +
      ": not a regular file but a directory (or a link to one); LATEST must be a file holding "
      "the checkpoint directory's name (e.g. \"step-00000100\"): remove it and write one, echo "
      "step-N > " +
      latest;
  EXPECT_EQ(ReadLatestFile(latest).status().message(), expected);
  std::vector<std::string> skipped;
  EXPECT_EQ(CheckpointCandidates(dir_ + "/ckpt", &skipped),
            std::vector<std::string>{dir_ + "/ckpt/step-00000002"});
  EXPECT_EQ(skipped, std::vector<std::string>{expected});
}

// A save cut off between its rename and LATEST's update leaves a complete
// checkpoint newer than LATEST's: found, the newest that opens; none when
// LATEST names the newest, is missing, or names nothing.
TEST_F(CheckpointTest, NewerCheckpointThanLatestIsTheNewestThatOpens) {
  ASSERT_TRUE(Save(1).ok());
  ASSERT_TRUE(Save(2).ok());
  ASSERT_TRUE(Save(3).ok());
  const std::string ckpt = dir_ + "/ckpt";
  EXPECT_EQ(NewerCheckpointThanLatest(ckpt), "");
  WriteAll(ckpt + "/LATEST", "step-00000001\n");
  EXPECT_EQ(NewerCheckpointThanLatest(ckpt), ckpt + "/step-00000003");
  fs::remove(ckpt + "/step-00000003/manifest.pb");
  EXPECT_EQ(NewerCheckpointThanLatest(ckpt), ckpt + "/step-00000002");
  WriteAll(ckpt + "/LATEST", "garbage");
  EXPECT_EQ(NewerCheckpointThanLatest(ckpt), "");
  fs::remove(ckpt + "/LATEST");
  EXPECT_EQ(NewerCheckpointThanLatest(ckpt), "");
}

// Fails the n-th mutating file operation of a save, for every n, then drops
// whatever was not fsynced: LATEST must still name a loadable checkpoint,
// the previous one unless the save got as far as replacing LATEST.
TEST_F(CheckpointTest, FaultAtEveryWriteLeavesLoadableLatest) {
  ASSERT_TRUE(Save(1).ok());
  const std::vector<float> params1 = Host(gpt_->params());
  // A 16 KiB buffer: several appends per file, fewer cases than 1000 bytes.
  constexpr size_t kBuffer = 16 << 10;
  FaultInjectionEnv counting(Env::Default());
  ASSERT_TRUE(Save(2, &counting, 3, 0, kBuffer).ok());
  const int64_t ops = counting.ops();
  ASSERT_GT(ops, 20);
  int kept_previous = 0;
  for (int64_t n = 0; n < ops; ++n) {
    SCOPED_TRACE(n);
    fs::remove_all(dir_ + "/ckpt");
    ASSERT_TRUE(Save(1).ok());
    // Different parameters for step 2, so a mix-up would show.
    kernels_->Scale(gpt_->params(), 2.0f, gpt_->num_params());
    FaultInjectionEnv env(Env::Default());
    env.FailWritesAfter(n);
    absl::StatusOr<std::string> saved = Save(2, &env, 3, 0, kBuffer);
    env.SimulateCrash();
    kernels_->Scale(gpt_->params(), 0.5f, gpt_->num_params());
    const std::string latest = Latest();
    absl::StatusOr<CheckpointData> data =
        ReadCheckpoint(dir_ + "/ckpt/" + latest.substr(0, latest.size() - 1));
    ASSERT_TRUE(data.ok()) << "after failing op " << n << ": " << data.status();
    if (!saved.ok()) {
      EXPECT_TRUE(data->step == 1 || data->step == 2);
    } else {
      EXPECT_EQ(data->step, 2);
    }
    if (data->step == 1) {
      ++kept_previous;
      EXPECT_EQ(data->params, params1);
    }
    std::vector<std::string> skipped;
    EXPECT_TRUE(FindLatestValidCheckpoint(dir_ + "/ckpt", &skipped).ok());
  }
  EXPECT_GT(kept_previous, ops / 2);
}

TEST_F(CheckpointTest, CrashWithoutAnyFailureKeepsEverythingSynced) {
  FaultInjectionEnv env(Env::Default());
  ASSERT_TRUE(Save(1, &env).ok());
  env.SimulateCrash();  // a save that returned OK is durable
  EXPECT_TRUE(ReadCheckpoint(dir_ + "/ckpt/step-00000001").ok());
  EXPECT_EQ(Latest(), "step-00000001\n");
}

TEST(CheckResumeConfigTest, ShapeAndRandomnessMustMatchOthersAreLogged) {
  TrainConfig a = DefaultTrainConfig();
  std::vector<std::string> changes;
  for (const char* field : {"n_layer", "n_head", "n_embd", "block_size"}) {
    TrainConfig b = a;
    ASSERT_TRUE(SetTrainConfigField(field, "96", &b).ok());
    absl::Status s = CheckResumeConfig(a, b, &changes);
    ASSERT_FALSE(s.ok()) << field;
    EXPECT_NE(s.message().find(std::string(field) + "=96"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("checkpoint's " + std::string(field) + "="), std::string::npos)
        << s.message();
  }
  TrainConfig b = a;
  b.set_seed(7);
  EXPECT_NE(CheckResumeConfig(a, b, &changes).message().find("seed=7"), std::string::npos);
  b = a;
  b.set_dropout_stream(TrainConfig::PER_SAMPLE);
  EXPECT_NE(CheckResumeConfig(a, b, &changes).message().find("dropout_stream"), std::string::npos);

  b = a;
  b.set_max_iters(5000);
  b.set_lr_decay_iters(5000);
  b.set_save_every(10);
  b.set_eval_interval(7);
  b.set_resume("latest");
  changes.clear();
  ASSERT_TRUE(CheckResumeConfig(a, b, &changes).ok());
  EXPECT_EQ(changes.size(), 4u);
  EXPECT_EQ(changes[0].rfind("lr_decay_iters", 0) == 0 || changes[0].rfind("max_iters", 0) == 0,
            true)
      << changes[0];
}

// An enum was logged by its proto name: "precision: PRECISION_UNSPECIFIED ->
// BF16". It is named as its flag takes it, and its unspecified value "unset".
TEST(CheckResumeConfigTest, EnumsAreNamedAsTheirFlagsTakeThem) {
  TrainConfig a = DefaultTrainConfig();
  a.clear_precision();
  TrainConfig b = a;
  b.set_precision(TrainConfig::BF16);
  std::vector<std::string> changes;
  ASSERT_TRUE(CheckResumeConfig(a, b, &changes).ok());
  EXPECT_EQ(changes, std::vector<std::string>{"precision: unset -> bf16"});
  b = a;
  b.set_dropout_stream(TrainConfig::PER_SAMPLE);
  EXPECT_TRUE(absl::StrContains(CheckResumeConfig(a, b, &changes).message(),
                                "dropout_stream=per_sample contradicts the checkpoint's "
                                "dropout_stream=per_rank"))
      << CheckResumeConfig(a, b, &changes);
}

}  // namespace
}  // namespace dropk
