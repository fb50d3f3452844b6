#include "comm/peer_probe.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace dropk {
namespace {

using std::chrono::milliseconds;

// The listener's port on 127.0.0.1 (the listener also reports the host's
// other addresses, which a sandbox may not have).
ProbeAddress OnLoopback(uint32_t port) {
  ProbeAddress a;
  a.port = port;
  a.num_addresses = 1;
  a.addresses[0] = htonl(INADDR_LOOPBACK);
  return a;
}

TEST(PeerProbeTest, AListeningPeerIsReachableAndAClosedOneRefuses) {
  absl::StatusOr<ProbeListener> listener = ProbeListener::Open();
  ASSERT_TRUE(listener.ok()) << listener.status();
  const uint32_t port = listener->address().port;
  ASSERT_NE(port, 0u);
  EXPECT_EQ(ProbePeers({OnLoopback(port)}, milliseconds(2000)),
            std::vector<PeerState>{PeerState::kReachable});
  { ProbeListener closed = *std::move(listener); }
  EXPECT_EQ(ProbePeers({OnLoopback(port)}, milliseconds(2000)),
            std::vector<PeerState>{PeerState::kRefused});
}

TEST(PeerProbeTest, APeerWithNoAddressIsUnreachable) {
  EXPECT_EQ(ProbePeers({ProbeAddress{}}, milliseconds(100)),
            std::vector<PeerState>{PeerState::kUnreachable});
}

TEST(PeerProbeTest, FirstAddressTextShowsDottedQuad) {
  EXPECT_EQ(FirstAddressText(OnLoopback(1)), "127.0.0.1");
  EXPECT_EQ(FirstAddressText(ProbeAddress{}), "no address");
}

}  // namespace
}  // namespace dropk
