#include "comm/peer_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dropk {

absl::StatusOr<ProbeListener> ProbeListener::Open() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("probe socket: ", std::strerror(errno)));
  sockaddr_in any = {};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof(any);
  if (bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&any), &len) != 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::InternalError(absl::StrCat("probe socket: ", error));
  }
  ProbeAddress address;
  address.port = ntohs(any.sin_port);
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) == 0) {
    for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
      if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
      const uint32_t a = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr;
      if ((ntohl(a) >> 24) == 127) continue;  // loopback answers on every host
      if (address.num_addresses < ProbeAddress::kMaxAddresses) {
        address.addresses[address.num_addresses++] = a;
      }
    }
    freeifaddrs(list);
  }
  return ProbeListener(fd, address);
}

ProbeListener::ProbeListener(ProbeListener&& other) noexcept
    : fd_(other.fd_), address_(other.address_) {
  other.fd_ = -1;
}

ProbeListener::~ProbeListener() {
  if (fd_ >= 0) close(fd_);
}

std::vector<PeerState> ProbePeers(const std::vector<ProbeAddress>& peers,
                                  std::chrono::milliseconds timeout) {
  std::vector<PeerState> states(peers.size(), PeerState::kUnreachable);
  std::vector<bool> refused(peers.size(), false);
  std::vector<pollfd> fds;
  std::vector<size_t> owner;  // fds[i] probes peers[owner[i]]
  for (size_t p = 0; p < peers.size(); ++p) {
    for (uint32_t k = 0; k < peers[p].num_addresses && k < ProbeAddress::kMaxAddresses; ++k) {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      sockaddr_in to = {};
      to.sin_family = AF_INET;
      to.sin_port = htons(static_cast<uint16_t>(peers[p].port));
      to.sin_addr.s_addr = peers[p].addresses[k];
      if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0) {
        states[p] = PeerState::kReachable;
        close(fd);
        continue;
      }
      if (errno != EINPROGRESS) {
        if (errno == ECONNREFUSED) refused[p] = true;
        close(fd);
        continue;
      }
      fds.push_back({fd, POLLOUT, 0});
      owner.push_back(p);
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t pending = fds.size();
  while (pending > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    const int n = poll(fds.data(), fds.size(), static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      int error = 0;
      socklen_t len = sizeof(error);
      getsockopt(fds[i].fd, SOL_SOCKET, SO_ERROR, &error, &len);
      if (error == 0) {
        states[owner[i]] = PeerState::kReachable;
      } else if (error == ECONNREFUSED) {
        refused[owner[i]] = true;
      }
      close(fds[i].fd);
      fds[i].fd = -1;  // poll ignores negative descriptors
      --pending;
    }
  }
  for (pollfd& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  for (size_t p = 0; p < peers.size(); ++p) {
    if (states[p] != PeerState::kReachable && refused[p]) states[p] = PeerState::kRefused;
  }
  return states;
}

std::string FirstAddressText(const ProbeAddress& address) {
  if (address.num_addresses == 0) return "no address";
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &address.addresses[0], text, sizeof(text));
  return text;
}

}  // namespace dropk
