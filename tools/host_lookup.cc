#include "tools/host_lookup.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include <boost/asio/io_context.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dropk {

using boost::asio::ip::tcp;

absl::StatusOr<std::vector<tcp::endpoint>> SystemHostLookup(const std::string& host,
                                                            const std::string& port) {
  boost::asio::io_context ioc;
  tcp::resolver resolver(ioc);
  boost::system::error_code ec;
  // numeric_service: the port is a number, never a service name to look up.
  const tcp::resolver::results_type results =
      resolver.resolve(host, port, tcp::resolver::numeric_service, ec);
  if (ec) {
    const std::string message = absl::StrCat(host, ": ", ec.message());
    if (ec == boost::asio::error::host_not_found || ec == boost::asio::error::no_data) {
      return absl::NotFoundError(message);
    }
    return absl::UnavailableError(message);
  }
  std::vector<tcp::endpoint> endpoints;
  for (const auto& entry : results) endpoints.push_back(entry.endpoint());
  if (endpoints.empty()) return absl::NotFoundError(absl::StrCat(host, ": no address"));
  return endpoints;
}

absl::StatusOr<std::vector<tcp::endpoint>> LookUpWithin(const std::string& host,
                                                        const std::string& port,
                                                        std::chrono::milliseconds timeout,
                                                        const HostLookup& lookup) {
  // Shared with the lookup's thread, which may outlive this call.
  struct Answer {
    std::mutex mu;
    std::condition_variable done;
    std::optional<absl::StatusOr<std::vector<tcp::endpoint>>> result;  // guarded by mu
  };
  auto answer = std::make_shared<Answer>();
  std::thread([answer, lookup, host, port] {
    absl::StatusOr<std::vector<tcp::endpoint>> result = lookup(host, port);
    std::lock_guard<std::mutex> lock(answer->mu);
    answer->result = std::move(result);
    answer->done.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(answer->mu);
  if (!answer->done.wait_for(lock, timeout, [&] { return answer->result.has_value(); })) {
    return absl::DeadlineExceededError(
        absl::StrCat(host, ": no answer from the name lookup within ", timeout.count(), " ms"));
  }
  return *std::move(answer->result);
}

}  // namespace dropk
