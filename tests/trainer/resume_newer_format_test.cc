// --resume beside a checkpoint that a newer dropk wrote (a format version
// this build cannot read): refused before training, with nothing changed.
// It used to be skipped like a corrupt one, and the resumed run's save of
// the same step replaced it: going back to an older build lost the run's
// newest checkpoint.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "checkpoint.pb.h"
#include "checkpoint/format.h"
#include "support/shakespeare_data.h"
#include "support/temp_dir.h"
#include "support/tiny_smoke_run.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Trains two steps into tmp's run/ (a save after each) and parses step 2's
// manifest.pb into *file.
void TrainTwoStepsAndParseTheNewestManifest(const test_util::ScopedTempDir& tmp, Communicator& comm,
                                            CheckpointManifestFile* file) {
  ASSERT_TRUE(test_util::PrepareShakespeareData(tmp.Path("data")).ok());
  std::ostringstream log;
  ASSERT_TRUE(RunTraining(test_util::TinySmokeEveryStepConfig(tmp.Path("data"), tmp.Path("run"), 2),
                          comm, log)
                  .ok())
      << log.str();
  ASSERT_TRUE(file->ParseFromString(
      ReadAll(tmp.Path("run") + "/checkpoints/step-00000002/" + kManifestFileName)));
}

TEST(ResumeNewerFormatTest, ACheckpointOfANewerFormatIsNamedAndKept) {
  test_util::ScopedTempDir tmp("resume_newer_format");
  std::unique_ptr<Communicator> comm = MakeSingleProcessCommunicator();
  CheckpointManifestFile file;
  ASSERT_NO_FATAL_FAILURE(TrainTwoStepsAndParseTheNewestManifest(tmp, *comm, &file));
  // Step 2 as a newer dropk would write it: the same bytes, a higher version
  // (with its CRC32C, which every version above 2 carries).
  const std::string newer = tmp.Path("run") + "/checkpoints/step-00000002";
  const std::string manifest_path = newer + "/" + kManifestFileName;
  file.set_format_version(kCheckpointFormatVersion + 1);
  file.set_format_version_crc32c(FormatVersionCrc32c(kCheckpointFormatVersion + 1));
  const std::string newer_manifest = file.SerializeAsString();
  std::ofstream(manifest_path, std::ios::binary | std::ios::trunc) << newer_manifest;

  for (const std::string& resume :
       {std::string("latest"), tmp.Path("run") + "/checkpoints/step-00000001"}) {
    TrainConfig c = test_util::TinySmokeEveryStepConfig(tmp.Path("data"), tmp.Path("run"), 3);
    c.set_resume(resume);
    std::ostringstream resume_log;
    const absl::Status s = RunTraining(c, *comm, resume_log).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << resume << ": " << s << "\n" << resume_log.str();
    EXPECT_NE(s.message().find("checkpoint " + newer + " was written by a newer dropk"),
              std::string::npos)
        << s;
    EXPECT_EQ(resume_log.str().find("| loss "), std::string::npos) << resume_log.str();
    EXPECT_EQ(ReadAll(manifest_path), newer_manifest) << "the newer checkpoint was replaced";
  }
}

// A bit flipped in the newest checkpoint's format version (2 -> 3), which
// its manifest CRC does not cover, read as a newer dropk's checkpoint: the
// resume was refused instead of skipping the corrupt checkpoint. It is
// skipped now, naming it, and the run resumes from the one before.
TEST(ResumeNewerFormatTest, AFlippedFormatVersionIsSkippedAsCorrupt) {
  test_util::ScopedTempDir tmp("resume_flipped_format");
  std::unique_ptr<Communicator> comm = MakeSingleProcessCommunicator();
  CheckpointManifestFile file;
  ASSERT_NO_FATAL_FAILURE(TrainTwoStepsAndParseTheNewestManifest(tmp, *comm, &file));
  const std::string flipped = tmp.Path("run") + "/checkpoints/step-00000002";
  const std::string manifest_path = flipped + "/" + kManifestFileName;
  file.set_format_version(kCheckpointFormatVersion ^ 1);
  std::ofstream(manifest_path, std::ios::binary | std::ios::trunc) << file.SerializeAsString();

  TrainConfig c = test_util::TinySmokeEveryStepConfig(tmp.Path("data"), tmp.Path("run"), 3);
  c.set_resume("latest");
  std::ostringstream resume_log;
  const absl::Status s = RunTraining(c, *comm, resume_log).status();
  EXPECT_TRUE(s.ok()) << s << "\n" << resume_log.str();
  EXPECT_NE(resume_log.str().find("dropk-train: skipped checkpoint " + flipped), std::string::npos)
      << resume_log.str();
  EXPECT_NE(resume_log.str().find("corrupt version field"), std::string::npos) << resume_log.str();
  EXPECT_NE(resume_log.str().find("resumed from " + tmp.Path("run") +
                                  "/checkpoints/step-00000001 at step 1"),
            std::string::npos)
      << resume_log.str();
}

}  // namespace
}  // namespace dropk
