// The host name lookup of `dropk sample --url` (tools/sample_command.cc),
// bounded by a deadline. The system resolver (getaddrinfo) cannot be
// cancelled or given a deadline, and Asio's asynchronous resolver runs it on
// a thread whose result it waits for even when cancelled: with DNS dead, one
// lookup took the resolver's own timeout and retries (10 s and more), past
// any --timeout.
#ifndef DROPK_TOOLS_HOST_LOOKUP_H_
#define DROPK_TOOLS_HOST_LOOKUP_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "absl/status/statusor.h"

namespace dropk {

// Looks up a host name and port (a number) as TCP endpoints; blocks for as
// long as it takes. An error names the host.
using HostLookup = std::function<absl::StatusOr<std::vector<boost::asio::ip::tcp::endpoint>>(
    const std::string& host, const std::string& port)>;

// The system resolver's lookup (getaddrinfo, through Asio). NotFound when
// the name has no address, Unavailable for another failure; the message is
// "HOST: the resolver's words".
absl::StatusOr<std::vector<boost::asio::ip::tcp::endpoint>> SystemHostLookup(
    const std::string& host, const std::string& port);

// Runs `lookup` for host:port on a thread of its own and waits at most
// `timeout` for its answer. DeadlineExceeded when it has not answered by
// then: the thread is left to finish on its own (a lookup cannot be
// stopped) and its answer is dropped; it holds no reference to the caller.
// Otherwise lookup's answer. Thread-safe.
absl::StatusOr<std::vector<boost::asio::ip::tcp::endpoint>> LookUpWithin(
    const std::string& host, const std::string& port, std::chrono::milliseconds timeout,
    const HostLookup& lookup = SystemHostLookup);

}  // namespace dropk

#endif  // DROPK_TOOLS_HOST_LOOKUP_H_
