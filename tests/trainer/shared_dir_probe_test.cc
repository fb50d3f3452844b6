// The checkpoint directory's probe before the first step says why rank 0
// cannot write there. On a full disk it said only "cannot write a file
// there" (its std::ofstream dropped the system's reason).
#include "trainer/shared_dir_probe.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "support/forwarding_env.h"
#include "support/temp_dir.h"
#include "support/thread_communicator.h"

namespace dropk {
namespace {

using ::testing::HasSubstr;

// A disk with no room left: files open, but no byte can be written.
class FullDiskEnv : public ForwardingEnv {
 public:
  FullDiskEnv() : ForwardingEnv(Env::Default()) {}

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    return std::unique_ptr<WritableFile>(new FullFile(path));
  }

 private:
  class FullFile : public WritableFile {
   public:
    explicit FullFile(std::string path) : path_(std::move(path)) {}
    absl::Status Append(const void*, size_t) override {
      return absl::ResourceExhaustedError(absl::StrCat(path_, ": write: No space left on device"));
    }
    absl::Status Sync() override { return absl::OkStatus(); }
    absl::Status Close() override { return absl::OkStatus(); }

   private:
    std::string path_;
  };
};

TEST(SharedDirProbeTest, AFullDiskIsNamedAsTheReasonOnOneRank) {
  test_util::ScopedTempDir tmp("shared_dir_probe");
  const std::string dir = tmp.Path("checkpoints");
  FullDiskEnv full;
  std::unique_ptr<Communicator> comm = MakeSingleProcessCommunicator();
  const absl::Status s = CheckDirectorySharedByAllRanks(dir, "checkpoint_dir", *comm, {}, &full);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("checkpoint_dir=", dir,
                                                  ": rank 0 cannot write there: ", dir, "/")));
  EXPECT_THAT(s.message(), HasSubstr("No space left on device"));
}

TEST(SharedDirProbeTest, AFullDiskIsNamedByRankZeroOfSeveral) {
  test_util::ScopedTempDir tmp("shared_dir_probe");
  const std::string dir = tmp.Path("checkpoints");
  FullDiskEnv full;
  std::vector<absl::Status> results(2);
  test_util::RunRanks(2, [&](Communicator& comm) {
    CollectiveOptions options;
    options.timeout = std::chrono::seconds(20);
    results[comm.Rank()] =
        CheckDirectorySharedByAllRanks(dir, "checkpoint_dir", comm, options, &full);
  });
  EXPECT_THAT(results[0].message(), HasSubstr("No space left on device")) << results[0];
  EXPECT_THAT(results[1].message(), HasSubstr("see rank 0's log")) << results[1];
}

}  // namespace
}  // namespace dropk
