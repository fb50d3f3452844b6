// SetNcclEnvironmentDefaults: NCCL_RUNTIME_CONNECT=0 unless the user chose.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "comm/nccl_communicator.h"

namespace dropk {
namespace {

constexpr const char* kVariable = "NCCL_RUNTIME_CONNECT";

TEST(NcclEnvironmentTest, SetsEagerConnectionWhereUnset) {
  unsetenv(kVariable);
  SetNcclEnvironmentDefaults();
  ASSERT_NE(std::getenv(kVariable), nullptr);
  EXPECT_EQ(std::string(std::getenv(kVariable)), "0");
  unsetenv(kVariable);
}

TEST(NcclEnvironmentTest, KeepsTheUsersChoice) {
  setenv(kVariable, "1", 1);
  SetNcclEnvironmentDefaults();
  EXPECT_EQ(std::string(std::getenv(kVariable)), "1");
  unsetenv(kVariable);
}

}  // namespace
}  // namespace dropk
