// dropk-serve's HTTP server: the listener, the accept loop (with its cap
// on open connections and its back-off when descriptors run out) and
// shutdown. Each accepted connection is a session (http_session.cc).
#include "sampler/http_server.h"

#include <sys/resource.h>

#include <algorithm>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "http_server_impl.h"

namespace dropk {

namespace {
// The pause before accepting again after an accept failed for want of
// descriptors or memory: doubled at each failure in a row, up to the cap.
constexpr auto kFirstAcceptBackoff = std::chrono::milliseconds(50);
constexpr auto kMaxAcceptBackoff = std::chrono::milliseconds(500);

// Whether a failed accept says the process or system ran out of something
// (retrying at once fails the same way) rather than that one connection
// went wrong.
bool OutOfResources(const beast::error_code& ec) {
  return ec == net::error::no_descriptors || ec == net::error::no_buffer_space ||
         ec == net::error::no_memory ||
         (ec.category() == boost::system::system_category() && ec.value() == ENFILE);
}
}  // namespace

absl::Status CheckListenAddress(const std::string& address) {
  beast::error_code ec;
  net::ip::make_address(address, ec);
  if (!ec) return absl::OkStatus();
  // Names are not resolved (a slow resolver would stall the start): say so.
  return absl::InvalidArgumentError(
      absl::StrCat("--address '", address,
                   "': not a numeric IPv4 or IPv6 address (e.g. 127.0.0.1, ::1, 0.0.0.0): ",
                   ec.message()));
}

std::string HostPortText(const std::string& address, int port) {
  // "::1:8080" is no URL (curl, dropk sample --url refuse it).
  const bool ipv6 = address.find(':') != std::string::npos;
  return absl::StrCat(ipv6 ? "[" : "", address, ipv6 ? "]:" : ":", port);
}

absl::Status HttpServer::Impl::Listen() {
  if (absl::Status s = CheckListenAddress(options_.address); !s.ok()) return s;
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options_.address, ec);
  const tcp::endpoint endpoint(address, options_.port);
  auto fail = [&](const char* what) {
    return absl::UnavailableError(
        absl::StrCat(what, " ", HostPortText(options_.address, options_.port), ": ", ec.message()));
  };
  acceptor_.open(endpoint.protocol(), ec);
  if (ec) return fail("open");
  acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (ec) return fail("set_option");
  acceptor_.bind(endpoint, ec);
  if (ec) return fail("bind");
  acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  port_ = acceptor_.local_endpoint(ec).port();
  return absl::OkStatus();
}

void HttpServer::Impl::DoAccept() {
  acceptor_.async_accept(net::make_strand(ioc_), beast::bind_front_handler(&Impl::OnAccept, this));
}

void HttpServer::Impl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
  // Out of descriptors, the connection waits in the kernel's queue and every
  // accept fails at once: retrying at once burned a core, and /healthz
  // timed out behind it.
  if (ec && OutOfResources(ec)) return BackOffAccepting(ec);
  if (!ec && accept_backoff_.count() > 0) {
    log_->Write(absl::StrCat("dropk-serve: accepting connections again (after ",
                             failed_accepts_, " failed attempts)"));
    accept_backoff_ = std::chrono::milliseconds(0);
    failed_accepts_ = 0;
  }
  if (!ec && open_connections_.load() >= options_.max_connections) {
    Refuse(std::move(socket));
  } else if (!ec) {
    ++open_connections_;  // only here, on the acceptor's strand: the cap holds
    ++metrics_->open_connections;
    // Streamed tokens are small writes: send each at once (no Nagle delay).
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    StartHttpSession(std::move(socket), this);
  }
  // Any other failed accept (a connection reset before it was accepted)
  // ends only that connection.
  DoAccept();
}

void HttpServer::Impl::BackOffAccepting(const beast::error_code& ec) {
  ++failed_accepts_;
  if (accept_backoff_.count() == 0) {
    accept_backoff_ = kFirstAcceptBackoff;
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    log_->Write(absl::StrCat(
        "dropk-serve: cannot accept connections: ", ec.message(), " (open-file limit ",
        limit.rlim_cur, ", ", open_connections_.load(),
        " connections open); retrying every ", kFirstAcceptBackoff.count(), " to ",
        kMaxAcceptBackoff.count(),
        " ms until it succeeds (lower --max-connections or raise the limit with ulimit -n)"));
  } else {
    accept_backoff_ = std::min(accept_backoff_ * 2, std::chrono::milliseconds(kMaxAcceptBackoff));
  }
  accept_retry_.expires_after(accept_backoff_);
  accept_retry_.async_wait([this](beast::error_code wait_ec) {
    if (wait_ec || !acceptor_.is_open()) return;  // cancelled: stopping
    DoAccept();
  });
}

void HttpServer::Impl::Refuse(tcp::socket socket) {
  ++metrics_->refused_connections;
  metrics_->CountRequest(503);
  beast::error_code ignored;
  // A new connection's send buffer is empty, so the answer fits whole and
  // a non-blocking write never waits on a client that does not read. The
  // client reads it even when its unread request makes the close a reset.
  socket.non_blocking(true, ignored);
  net::write(socket, net::buffer(over_capacity_response_), ignored);
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              Scheduler* scheduler,
                                                              ServiceMetrics* metrics) {
  auto impl = std::make_unique<Impl>(options, scheduler, metrics);
  if (absl::Status s = impl->Listen(); !s.ok()) return s;
  impl->DoAccept();
  Impl* p = impl.get();
  for (int i = 0; i < std::max(1, options.io_threads); ++i) {
    p->threads_.emplace_back([p] { p->RunGuarded(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::port() const { return impl_->port_; }

void HttpServer::StopAccepting() {
  Impl* p = impl_.get();
  std::promise<void> done;
  net::post(p->acceptor_.get_executor(), [p, &done] {
    beast::error_code ignored;
    p->acceptor_.close(ignored);
    p->accept_retry_.cancel();
    done.set_value();
  });
  if (!p->ioc_.stopped()) done.get_future().wait_for(std::chrono::seconds(5));
}

void HttpServer::Stop(std::chrono::milliseconds deadline) {
  Impl* p = impl_.get();
  if (p->threads_.empty()) return;
  StopAccepting();
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (p->busy_.load() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  p->stopped_ = true;
  p->ioc_.stop();
  for (std::thread& t : p->threads_) t.join();
  p->threads_.clear();
  // Requests still being prepared post their answers to the stopped loop,
  // where they are dropped with their sessions.
  p->prepare_pool_.join();
}

}  // namespace dropk
