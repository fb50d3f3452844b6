// The HTTP/1.1 front end of the sampling service, on Boost.Beast and
// Boost.Asio: a listener that accepts and a session per connection
// (DoRead/OnRead pairs, an error_code on every handler; a failure ends only
// that session). Several I/O threads run the sessions; generation runs on
// the scheduler's thread, never on an I/O thread.
//
// Routing and the endpoints live in http_api.h (socket-free); this file
// reads requests, writes what HttpApi::Route answers, streams server-sent
// events, and answers the failures of the connection itself: 408 for a
// client that stops mid-request, 400 for malformed HTTP (Transfer-Encoding
// in HTTP/1.0 included), 413, 414 for a request line past the header
// limit, 431, each as
// a JSON error before the connection closes (413 also for a chunk's size
// line, and 431 for a trailer, longer than max_header_bytes + 64 KiB: the
// read buffer is bounded, so no line the parser waits on can grow without
// end). Empty lines before a request line are skipped (RFC 9112 2.2); a
// request waiting on "Expect: 100-continue" that its header already
// refuses (HttpApi::RefuseEarly) gets the refusal instead of the 100, then
// the close. A connection past max_connections gets a 503; when accepting fails
// for want of descriptors or memory, the server logs it once and retries
// with a growing pause (50 ms to 500 ms) instead of spinning. A client
// that leaves while its completion is queued or running (a reset, or an end
// of stream that a probe write shows to be a full close) has it cancelled
// at once, whatever its HTTP version or Connection header; one that only
// half-closed is answered.
#ifndef DROPK_SAMPLER_HTTP_SERVER_H_
#define DROPK_SAMPLER_HTTP_SERVER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/log.h"
#include "sampler/api_key_file.h"
#include "sampler/http_api.h"
#include "sampler/metrics.h"
#include "sampler/scheduler.h"

namespace dropk {

struct HttpServerOptions {
  std::string address = "127.0.0.1";  // loopback unless asked otherwise
  uint16_t port = 8080;               // 0: any free port (see HttpServer::port)
  int io_threads = 2;
  size_t max_body_bytes = 1 << 20;  // larger bodies get 413
  size_t max_header_bytes = 16 << 10;
  // A client that stops mid-header or mid-body gets 408 after these; an idle
  // keep-alive connection (no byte of a next request) is closed silently.
  std::chrono::milliseconds header_timeout{10000};  // also the keep-alive idle limit
  std::chrono::milliseconds body_timeout{30000};
  std::chrono::milliseconds write_timeout{30000};
  std::string api_key{};        // non-empty: every route but /healthz needs "Bearer <key>"
  std::shared_ptr<ApiKeyFile> api_key_file{};  // set: the key is this file's, re-read on change
  int retry_after_seconds = 1;  // Retry-After on 429, and on 503 past max_connections
  // Open connections at most. Each may hold up to max_body_bytes for up to
  // body_timeout, so this bounds the memory clients can pin (about
  // max_connections x max_body_bytes). A connection past it is answered 503
  // (JSON, Retry-After) and closed at once; those under it are served as usual.
  int max_connections = 512;
  LogSink* log = nullptr;  // the server's own troubles (e.g. accept failing); null: nowhere
};

// OK when `address` is one HttpServer can bind: a numeric IPv4 or IPv6
// address (names are not resolved: a slow resolver would stall the start).
// Else InvalidArgument naming --address and the value, so a binary can
// refuse the flag (exit 2) before it loads a model.
absl::Status CheckListenAddress(const std::string& address);

// "address:port" as a URL writes it: an IPv6 address in brackets
// ("[::1]:8080"), so that the listening line can be pasted into curl.
std::string HostPortText(const std::string& address, int port);

class HttpServer {
 public:
  // Binds, listens and starts the I/O threads. scheduler and metrics must
  // outlive the server. Errors name the address and port.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           Scheduler* scheduler,
                                                           ServiceMetrics* metrics);
  ~HttpServer();  // Stop()

  uint16_t port() const;

  // Stops accepting connections; requests already accepted keep going.
  void StopAccepting();
  // Waits up to `deadline` for in-flight responses to be written, then stops
  // the I/O threads and closes every connection. Idempotent.
  void Stop(std::chrono::milliseconds deadline = std::chrono::milliseconds(0));

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dropk

#endif  // DROPK_SAMPLER_HTTP_SERVER_H_
