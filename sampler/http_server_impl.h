// HttpServer's implementation, shared by the server (http_server.cc: the
// listener, accept loop and shutdown) and its connections (http_session.cc:
// one Session per accepted socket). Internal to dropk_sampler.
#ifndef DROPK_SAMPLER_HTTP_SERVER_IMPL_H_
#define DROPK_SAMPLER_HTTP_SERVER_IMPL_H_

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sampler/http_api.h"
#include "sampler/http_server.h"

namespace dropk {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

// Room in a session's read buffer past the header limit: one read's worth
// (Beast reads up to 64 KiB at a time). Only bytes the parser has not
// consumed stay there: a header not yet whole (bounded by the header
// limit), or a chunk's size line or a trailer not yet ended, which Beast
// bounds by nothing else.
constexpr size_t kReadBufferSlack = size_t{64} << 10;

// The server's state: options, the API it routes to, the acceptor, the I/O
// loop and its threads, and the counts its sessions keep.
class HttpServer::Impl {
 public:
  Impl(const HttpServerOptions& options, Scheduler* scheduler, ServiceMetrics* metrics)
      : options_(options),
        api_({options.api_key, options.api_key_file, options.retry_after_seconds}, scheduler, metrics),
        metrics_(metrics),
        log_(OrDiscard(options.log)),
        read_buffer_limit_(options.max_header_bytes + kReadBufferSlack),
        over_capacity_response_(OverCapacityResponse(options)),
        ioc_(std::max(1, options.io_threads)),
        acceptor_(net::make_strand(ioc_)),
        accept_retry_(acceptor_.get_executor()),
        prepare_pool_(std::max(1, options.io_threads)) {}

  absl::Status Listen();
  void DoAccept();
  // After an accept that failed for want of descriptors or memory: one log
  // line per episode, then DoAccept after a growing pause.
  void BackOffAccepting(const beast::error_code& ec);
  // Answers a connection past max_connections with over_capacity_response_
  // and closes it, without waiting on the client.
  void Refuse(tcp::socket socket);
  // Runs the I/O loop on this thread until it is stopped. A handler that
  // throws (an allocation that fails mid-request) loses its own connection,
  // which closes when its session is released, and the loop runs on:
  // Asio's run() may be called again after a handler's exception.
  void RunGuarded() {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "dropk-serve: a connection failed (%s); serving on\n", e.what());
      }
    }
  }
  void OnAccept(beast::error_code ec, tcp::socket socket);

  // The 503 for a connection past max_connections, serialized once.
  static std::string OverCapacityResponse(const HttpServerOptions& options) {
    HttpResponse res = ErrorResponse(
        {503,
         absl::StrCat("the server is at its connection limit (", options.max_connections,
                      " open connections, --max-connections); retry later"),
         "service_unavailable", "", "too_many_connections"},
        11, {{"Retry-After", std::to_string(options.retry_after_seconds)}});
    res.keep_alive(false);
    std::ostringstream out;
    out << res;
    return std::move(out).str();
  }

  const HttpServerOptions options_;
  const HttpApi api_;
  ServiceMetrics* metrics_;
  LogSink* log_;
  // The most a session's read buffer holds (Session::buffer_).
  const size_t read_buffer_limit_;
  const std::string over_capacity_response_;
  // Sessions alive, each holding a descriptor. Declared before ioc_: the
  // sessions that ioc_'s destruction releases still count themselves out.
  std::atomic<int> open_connections_{0};
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  // On the acceptor's strand, like accept_backoff_ and failed_accepts_.
  net::steady_timer accept_retry_;
  std::chrono::milliseconds accept_backoff_{0};  // 0: accepting normally
  int failed_accepts_ = 0;                       // in the current episode
  // Where completion requests are parsed and their prompts tokenized, off
  // the I/O threads (Session::Dispatch).
  net::thread_pool prepare_pool_;
  std::vector<std::thread> threads_;
  std::atomic<int> busy_{0};  // sessions with a request in flight
  std::atomic<bool> stopped_{false};
  uint16_t port_ = 0;
};

// Serves one accepted connection until it closes: reads its requests,
// answers them through server->api_, streams completions. The session
// counts itself out of server->open_connections_ when it ends; the caller
// counted it in. Runs on `socket`'s strand.
void StartHttpSession(tcp::socket socket, HttpServer::Impl* server);

}  // namespace dropk

#endif  // DROPK_SAMPLER_HTTP_SERVER_IMPL_H_
