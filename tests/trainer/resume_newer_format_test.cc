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

TEST(ResumeNewerFormatTest, ACheckpointOfANewerFormatIsNamedAndKept) {
  test_util::ScopedTempDir tmp("resume_newer_format");
  ASSERT_TRUE(test_util::PrepareShakespeareData(tmp.Path("data")).ok());
  std::unique_ptr<Communicator> comm = MakeSingleProcessCommunicator();
  std::ostringstream log;
  ASSERT_TRUE(RunTraining(test_util::TinySmokeEveryStepConfig(tmp.Path("data"), tmp.Path("run"), 2),
                          *comm, log)
                  .ok())
      << log.str();
  // Step 2 as a newer dropk would write it: the same bytes, a higher version.
  const std::string newer = tmp.Path("run") + "/checkpoints/step-00000002";
  const std::string manifest_path = newer + "/" + kManifestFileName;
  CheckpointManifestFile file;
  ASSERT_TRUE(file.ParseFromString(ReadAll(manifest_path)));
  file.set_format_version(kCheckpointFormatVersion + 1);
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

}  // namespace
}  // namespace dropk
