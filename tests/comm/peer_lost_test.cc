// A lost peer's status keeps its mark through the context callers put
// before it, and no other Unavailable carries it (comm/peer_lost.h).
#include "comm/peer_lost.h"

#include <gtest/gtest.h>

namespace dropk {
namespace {

TEST(PeerLostTest, TheMarkSurvivesContextAndACodeChangeDropsIt) {
  const absl::Status lost = PeerLostError("allreduce on rank 0: rank 1 is unreachable");
  EXPECT_TRUE(absl::IsUnavailable(lost));
  EXPECT_TRUE(IsPeerLost(lost));

  const absl::Status wrapped = WithContext(WithContext(lost, "checkpoint allgather"), "step 5");
  EXPECT_TRUE(IsPeerLost(wrapped));
  EXPECT_EQ(wrapped.message(),
            "step 5: checkpoint allgather: allreduce on rank 0: rank 1 is unreachable");

  EXPECT_FALSE(IsPeerLost(WithContext(lost, "save", absl::StatusCode::kAborted)));
}

TEST(PeerLostTest, OtherFailuresAreNotALostPeer) {
  EXPECT_FALSE(IsPeerLost(absl::UnavailableError("cannot open token file 'x': Permission denied")));
  EXPECT_FALSE(IsPeerLost(absl::OkStatus()));
  EXPECT_TRUE(WithContext(absl::OkStatus(), "anything").ok());
  const absl::Status not_found =
      WithContext(absl::NotFoundError("gone"), "dir", absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::IsFailedPrecondition(not_found));
  EXPECT_EQ(not_found.message(), "dir: gone");
}

}  // namespace
}  // namespace dropk
