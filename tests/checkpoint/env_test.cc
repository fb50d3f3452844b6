// The POSIX Env (checkpoint/env.cc) where the OS fails it. readdir failing
// part way (EIO, a stale NFS handle) ended the listing as if the directory
// held no more: ListDir answered OK with what it had, maybe nothing, and a
// checkpoints directory read "holds no checkpoint". A seccomp filter makes
// getdents64 fail in a child, which works as root too (root ignores mode
// bits, not a filter).
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "checkpoint/env.h"
#include "support/temp_dir.h"

namespace dropk {
namespace {

// Makes every later getdents64 of this process fail with `err`; false when
// the kernel refuses the filter.
bool FailGetdents(int err) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getdents64, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & 0xFFFF)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program = {static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
}

TEST(PosixEnvTest, ADirectoryWhoseReadFailsIsAnErrorNotAnEmptyListing) {
  test_util::ScopedTempDir dir("posix_env");
  std::filesystem::create_directory(dir.Path("step-00000001"));
  // Listed before the filter: the directory and its entry are there.
  absl::StatusOr<std::vector<std::string>> names = Env::Default()->ListDir(dir.path());
  ASSERT_TRUE(names.ok()) << names.status();
  ASSERT_EQ(names->size(), 1u);
  const auto list_failing = [&] {
    if (!FailGetdents(EIO)) {
      std::fprintf(stderr, "the kernel refused the seccomp filter\n");
      std::_Exit(2);
    }
    const absl::StatusOr<std::vector<std::string>> listed = Env::Default()->ListDir(dir.path());
    std::fprintf(stderr, "%s\n", listed.status().ToString().c_str());
    const bool named = absl::StrContains(listed.status().message(), dir.path()) &&
                       absl::StrContains(listed.status().message(), "Input/output error");
    std::_Exit(!listed.ok() && named ? 0 : 1);
  };
  EXPECT_EXIT(list_failing(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace dropk
