// Which peers of a job can this rank still reach? When a collective times
// out, MPI cannot say who is missing (the call is still blocked), so every
// rank keeps a TCP listening socket that the kernel answers for it, and the
// rank whose collective timed out tries to connect to each peer's: no answer
// means the peer's host is unreachable (a cut link, a dead host), a refusal
// means the host is up but the process is gone. Connecting needs no thread
// on the peer: the kernel completes the handshake for a listening socket.
#ifndef DROPK_COMM_PEER_PROBE_H_
#define DROPK_COMM_PEER_PROBE_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dropk {

// Where a rank can be probed: its IPv4 addresses (network byte order, not
// loopback) and the port it listens on.
struct ProbeAddress {
  static constexpr int kMaxAddresses = 8;
  uint32_t port = 0;
  uint32_t num_addresses = 0;
  uint32_t addresses[kMaxAddresses] = {};
};

// How a probed peer answered.
enum class PeerState { kReachable, kRefused, kUnreachable };

// A listening socket on every interface (port chosen by the kernel), closed
// on destruction. Not copyable.
class ProbeListener {
 public:
  static absl::StatusOr<ProbeListener> Open();
  ProbeListener(ProbeListener&& other) noexcept;
  ProbeListener& operator=(ProbeListener&&) = delete;
  ProbeListener(const ProbeListener&) = delete;
  ~ProbeListener();

  // This host's addresses and the listening port, to share with the peers.
  const ProbeAddress& address() const { return address_; }

 private:
  ProbeListener(int fd, ProbeAddress address) : fd_(fd), address_(address) {}
  int fd_;
  ProbeAddress address_;
};

// Connects to each of `peers` (all their addresses, in parallel) and waits
// at most `timeout` for the answers: kReachable if any address accepted,
// else kRefused if any refused, else kUnreachable.
std::vector<PeerState> ProbePeers(const std::vector<ProbeAddress>& peers,
                                  std::chrono::milliseconds timeout);

// "10.77.0.2" (the first address), or "no address" when it has none.
std::string FirstAddressText(const ProbeAddress& address);

}  // namespace dropk

#endif  // DROPK_COMM_PEER_PROBE_H_
