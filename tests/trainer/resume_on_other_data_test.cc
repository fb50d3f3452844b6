// --resume with data_dir holding other prepared data than the checkpoint was
// trained on (same tokenizer): refused naming both, unless
// --allow_data_change. Resuming used to go on silently, drawing batches
// from the new tokens as if the run had always trained on them.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "support/temp_dir.h"
#include "support/tiny_smoke_run.h"
#include "trainer/config.h"
#include "trainer/data_checksums.h"
#include "trainer/prepare_data.h"
#include "trainer/token_dataset.h"
#include "trainer/tokenizer_file.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

// What one `dropk data prepare` wrote.
struct Prepared {
  std::string dir;
  uint32_t dataset_id = 0;
  PrepareSummary summary;
};

class ResumeOnOtherDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Tiny Shakespeare split two ways: the same characters, so the same
    // tokenizer, but other train and val tokens.
    original_ = Prepare("data", 0.1);
    other_ = Prepare("other_data", 0.2);
    ASSERT_NE(original_.dataset_id, other_.dataset_id);
  }

  Prepared Prepare(const std::string& name, double val_fraction,
                   uint64_t shard_tokens = kDefaultShardTokens,
                   Tokenizer::Kind kind = Tokenizer::CHAR) {
    Prepared p;
    p.dir = tmp_.Path(name);
    PrepareOptions options;
    options.kind = kind;
    options.inputs = {DROPK_SOURCE_DIR "/data/tinyshakespeare.txt"};
    options.out_dir = p.dir;
    options.val_fraction = val_fraction;
    options.shard_tokens = shard_tokens;
    options.threads = 1;
    absl::StatusOr<PrepareSummary> summary = PrepareData(options);
    EXPECT_TRUE(summary.ok()) << summary.status();
    if (summary.ok()) p.summary = *summary;
    EXPECT_TRUE(LoadTokenizer(p.dir + "/tokenizer.pb", Env::Default(), &p.dataset_id).ok());
    return p;
  }

  // The tiny smoke model on `data`, trained to max_iters into tmp/run,
  // saving every step.
  TrainConfig Config(const Prepared& data, int max_iters) {
    TrainConfig c = test_util::TinySmokeEveryStepConfig(data.dir, tmp_.Path("run"), max_iters);
    c.set_lr_decay_iters(4);  // the straight run's schedule, whatever max_iters
    EXPECT_TRUE(ValidateTrainConfig(c).ok());
    return c;
  }

  absl::StatusOr<TrainSummary> Train(const TrainConfig& c, std::ostringstream* log) {
    return RunTraining(c, *comm_, *log);
  }

  // Trains 4 steps on original_, then again in a fresh run directory
  // stopping after 2 and resuming on `resume_on` up to 4 (log in
  // *resume_log). Expects both to succeed and the resume to start from
  // step 2 and end with the straight run's parameters, bit for bit.
  void ExpectResumeOnToMatchStraight(const Prepared& resume_on, std::ostringstream* resume_log) {
    std::ostringstream log;
    absl::StatusOr<TrainSummary> straight = Train(Config(original_, 4), &log);
    ASSERT_TRUE(straight.ok()) << straight.status() << "\n" << log.str();
    std::filesystem::remove_all(tmp_.Path("run"));

    ASSERT_TRUE(Train(Config(original_, 2), &log).ok()) << log.str();
    TrainConfig resume = Config(resume_on, 4);
    resume.set_resume("latest");
    absl::StatusOr<TrainSummary> resumed = Train(resume, resume_log);
    ASSERT_TRUE(resumed.ok()) << resumed.status() << "\n" << resume_log->str();
    EXPECT_EQ(resumed->resumed_from, Checkpoint(2));
    EXPECT_EQ(resumed->final_params, straight->final_params);
  }

  std::string Checkpoint(int64_t step) {
    return tmp_.Path("run") + "/checkpoints/" + CheckpointDirName(step);
  }

  std::string Latest() {
    std::ifstream latest(tmp_.Path("run") + "/checkpoints/LATEST");
    return std::string(std::istreambuf_iterator<char>(latest), {});
  }

  // "dataset id N, T train and V val tokens", as the messages write it.
  static std::string Described(const Prepared& p) {
    return absl::StrCat("dataset id ", p.dataset_id, ", ", p.summary.train_tokens, " train and ",
                        p.summary.val_tokens, " val tokens");
  }

  test_util::ScopedTempDir tmp_{"resume_other_data"};
  std::unique_ptr<Communicator> comm_ = MakeSingleProcessCommunicator();
  Prepared original_, other_;
};

TEST_F(ResumeOnOtherDataTest, CheckpointsRecordTheDataTheyWereTrainedOn) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config(original_, 1), &log).ok()) << log.str();
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(Checkpoint(1));
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->manifest.has_data());
  EXPECT_EQ(vm->manifest.data().dataset_id(), original_.dataset_id);
  EXPECT_EQ(vm->manifest.data().train_tokens(), original_.summary.train_tokens);
  EXPECT_EQ(vm->manifest.data().val_tokens(), original_.summary.val_tokens);
  absl::StatusOr<TokenDataset> train = TokenDataset::Open(original_.dir, "train");
  absl::StatusOr<TokenDataset> val = TokenDataset::Open(original_.dir, "val");
  ASSERT_TRUE(train.ok() && val.ok());
  ASSERT_TRUE(vm->manifest.data().has_tokens_crc32c());
  EXPECT_EQ(vm->manifest.data().tokens_crc32c(), TokensCrc(*train, *val));
}

// The same tokens prepared again in other shards have another dataset id,
// but batches are drawn from the tokens alone: the run resumes as if
// nothing changed, bit for bit, saying so in one line. It used to be
// refused as other data.
TEST_F(ResumeOnOtherDataTest, SameTokensInOtherShardsResumeExactly) {
  const Prepared resharded = Prepare("resharded", 0.1, /*shard_tokens=*/300'000);
  ASSERT_NE(resharded.dataset_id, original_.dataset_id);
  ASSERT_TRUE(std::filesystem::exists(resharded.dir + "/train-00001.bin"));
  std::ostringstream resume_log;
  ExpectResumeOnToMatchStraight(resharded, &resume_log);
  const std::string out = resume_log.str();
  EXPECT_EQ(out.find("warning"), std::string::npos) << out;
  EXPECT_NE(out.find(absl::StrCat("dropk-train: resume: data_dir=", resharded.dir,
                                  " holds the tokens checkpoint ", Checkpoint(2),
                                  " was trained on, from another preparation (dataset id ",
                                  original_.dataset_id, " -> ", resharded.dataset_id, ")")),
            std::string::npos)
      << out;
}

TEST_F(ResumeOnOtherDataTest, IsRefusedNamingBothDataDirsAndIdentities) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config(original_, 2), &log).ok()) << log.str();
  TrainConfig resume = Config(other_, 3);
  resume.set_resume("latest");
  std::ostringstream resume_log;
  const absl::StatusOr<TrainSummary> s = Train(resume, &resume_log);
  ASSERT_FALSE(s.ok()) << resume_log.str();
  const absl::Status& status = s.status();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;  // exit 2
  for (const std::string& part :
       {"checkpoint " + Checkpoint(2), "data_dir=" + original_.dir, "data_dir=" + other_.dir,
        Described(original_), Described(other_), std::string("--allow_data_change")}) {
    EXPECT_NE(status.message().find(part), std::string::npos) << part << "\n" << status;
  }
  EXPECT_EQ(resume_log.str().find("resumed from"), std::string::npos) << resume_log.str();
  EXPECT_EQ(Latest(), CheckpointDirName(2) + "\n");
}

// Data of another tokenizer kind is named by its kind: a byte tokenizer has
// no code points, and read "(BYTE, 0 code points)".
TEST_F(ResumeOnOtherDataTest, AnotherTokenizerKindIsRefusedNamingBoth) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config(original_, 2), &log).ok()) << log.str();
  const Prepared bytes = Prepare("byte_data", 0.1, kDefaultShardTokens, Tokenizer::BYTE);
  TrainConfig resume = Config(bytes, 3);
  resume.set_resume("latest");
  std::ostringstream resume_log;
  const absl::Status s = Train(resume, &resume_log).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("the tokenizer of data_dir=" + bytes.dir +
                             " (BYTE) differs from "
                             "checkpoint " +
                             Checkpoint(2) + "'s (CHAR, 65 code points)"),
            std::string::npos)
      << s;
}

TEST_F(ResumeOnOtherDataTest, AllowDataChangeResumesWithOneWarning) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config(original_, 2), &log).ok()) << log.str();
  TrainConfig resume = Config(other_, 3);
  resume.set_resume(Checkpoint(2));
  resume.set_allow_data_change(true);
  std::ostringstream resume_log;
  const absl::StatusOr<TrainSummary> s = Train(resume, &resume_log);
  ASSERT_TRUE(s.ok()) << s.status() << "\n" << resume_log.str();
  EXPECT_EQ(s->resumed_from, Checkpoint(2));
  EXPECT_EQ(s->steps, 3);
  const std::string warning =
      "dropk-train: warning: --allow_data_change: the data changed since "
      "checkpoint " +
      Checkpoint(2) + " (" + Described(original_) + " -> " + Described(other_) +
      "); the data order will not match the original run's\n";
  const std::string out = resume_log.str();
  ASSERT_NE(out.find(warning), std::string::npos) << out;
  EXPECT_EQ(out.find(warning, out.find(warning) + 1), std::string::npos) << out;
  // The continuation records the data it trained on: resuming it on that
  // data needs no flag.
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(Checkpoint(3));
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ(vm->manifest.data().dataset_id(), other_.dataset_id);
  TrainConfig again = Config(other_, 4);
  again.set_resume("latest");
  std::ostringstream again_log;
  ASSERT_TRUE(Train(again, &again_log).ok()) << again_log.str();
  EXPECT_EQ(again_log.str().find("warning: --allow_data_change"), std::string::npos)
      << again_log.str();
}

TEST_F(ResumeOnOtherDataTest, SameDataResumesExactlyWithoutWarning) {
  std::ostringstream resume_log;
  ExpectResumeOnToMatchStraight(original_, &resume_log);
  EXPECT_EQ(resume_log.str().find("warning"), std::string::npos) << resume_log.str();
  EXPECT_EQ(resume_log.str().find("another preparation"), std::string::npos) << resume_log.str();
}

TEST_F(ResumeOnOtherDataTest, CheckpointWithoutTheRecordResumesUnchecked) {
  std::ostringstream log;
  ASSERT_TRUE(Train(Config(original_, 2), &log).ok()) << log.str();
  // A checkpoint as dropk wrote it before the data was recorded.
  const std::string manifest_path = Checkpoint(2) + "/" + kManifestFileName;
  absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(Checkpoint(2));
  ASSERT_TRUE(vm.ok()) << vm.status();
  CheckpointManifest manifest = vm->manifest;
  ASSERT_TRUE(manifest.has_data());
  manifest.clear_data();
  {
    std::ofstream out(manifest_path, std::ios::binary | std::ios::trunc);
    out << SerializeManifestFile(manifest);
    ASSERT_TRUE(out.good());
  }
  // Nothing to compare with: even other data resumes, with no warning.
  TrainConfig resume = Config(other_, 3);
  resume.set_resume("latest");
  std::ostringstream resume_log;
  absl::StatusOr<TrainSummary> s = Train(resume, &resume_log);
  ASSERT_TRUE(s.ok()) << s.status() << "\n" << resume_log.str();
  EXPECT_EQ(s->resumed_from, Checkpoint(2));
  EXPECT_EQ(resume_log.str().find("warning: --allow_data_change"), std::string::npos)
      << resume_log.str();
}

TEST(AllowDataChangeFlagTest, IsABoolFlagOffByDefault) {
  EXPECT_FALSE(DefaultTrainConfig().allow_data_change());
  std::string flag = "--allow_data_change";
  std::string program = "dropk-train";
  char* argv[] = {program.data(), flag.data()};
  absl::StatusOr<TrainCommandLine> parsed = ParseTrainCommandLine(2, argv);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->config.allow_data_change());
}

}  // namespace
}  // namespace dropk
