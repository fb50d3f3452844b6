// ResolveCheckpointFlag (sampler/model_snapshot.h): the checkpoint a
// command's --checkpoint names, and its errors.
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "sampler/model_snapshot.h"
#include "support/temp_dir.h"

namespace dropk {
namespace {

// `dropk sample --checkpoint /nonexistent` said "/nonexistent: does not
// exist" and, for an empty directory, "no valid checkpoint in DIR": neither
// named the flag, as every other error of the command does.
TEST(ResolveCheckpointFlagTest, ErrorsNameTheFlag) {
  test_util::ScopedTempDir dir("resolve_flag");
  const std::string missing = dir.Path("nonexistent");
  absl::StatusOr<std::string> r = ResolveCheckpointFlag(missing, "--checkpoint");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsNotFound(r.status())) << r.status();
  EXPECT_EQ(r.status().message(), "--checkpoint " + missing + ": does not exist");

  r = ResolveCheckpointFlag(dir.path(), "--checkpoint");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(std::string(r.status().message())
                .rfind("--checkpoint: no valid checkpoint in " + dir.path(), 0),
            0u)
      << r.status();
}

}  // namespace
}  // namespace dropk
