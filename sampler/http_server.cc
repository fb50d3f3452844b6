#include "sampler/http_server.h"

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <future>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sampler/completions.h"

namespace dropk {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Every byte of the longer string is visited whatever the contents.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

class HttpServer::Impl {
 public:
  Impl(const HttpServerOptions& options, Scheduler* scheduler, ServiceMetrics* metrics)
      : options_(options),
        scheduler_(scheduler),
        metrics_(metrics),
        ioc_(std::max(1, options.io_threads)),
        acceptor_(net::make_strand(ioc_)) {}

  absl::Status Listen();
  void DoAccept();
  void OnAccept(beast::error_code ec, tcp::socket socket);

  const HttpServerOptions options_;
  Scheduler* scheduler_;
  ServiceMetrics* metrics_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  std::atomic<int> busy_{0};  // sessions with a request in flight
  std::atomic<bool> stopped_{false};
  uint16_t port_ = 0;
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpServer::Impl* server)
      : stream_(std::move(socket)), server_(server) {}

  void Run() {
    // Sessions run on their own strand; dispatch there before the first read.
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&Session::DoRead, shared_from_this()));
  }

  // Called (via post) from the scheduler thread's listener.
  void OnJobEvent(std::string event);
  void OnJobDone(std::string body);

 private:
  void DoRead();
  void OnReadHeader(beast::error_code ec, size_t bytes);
  void OnContinueWritten(beast::error_code ec, size_t bytes);
  void OnRead(beast::error_code ec, size_t bytes);
  void Handle();
  void HandleCompletions();
  void SendJson(http::status status, std::string body,
                const std::vector<std::pair<std::string, std::string>>& headers = {});
  void SendError(const ApiError& error,
                 const std::vector<std::pair<std::string, std::string>>& headers = {});
  void SendText(http::status status, std::string body, std::string content_type);
  void Send(http::response<http::string_body> res);
  void OnWrite(bool keep_alive, beast::error_code ec, size_t bytes);
  void WatchPeer();
  void OnPeerReadable(beast::error_code ec);
  void OnStreamHeaderWritten(beast::error_code ec, size_t bytes);
  void PumpStream();
  void OnChunkWritten(beast::error_code ec, size_t bytes);
  void EndRequest(bool keep_alive);
  void Close();

  beast::tcp_stream stream_;
  HttpServer::Impl* server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  bool in_flight_ = false;  // counted in server_->busy_
  bool closed_ = false;

  // The completion in progress.
  std::shared_ptr<CompletionJob> job_;
  bool streaming_ = false;
  bool stream_header_done_ = false;
  bool writing_ = false;
  bool job_done_ = false;
  bool watching_ = false;
  std::deque<std::string> pending_;  // SSE events not yet written
  std::string writing_event_;
  std::optional<http::response<http::empty_body>> stream_res_;
  std::optional<http::response_serializer<http::empty_body>> stream_sr_;
};

// Forwards a job's output to its session's strand.
class SessionListener final : public CompletionListener {
 public:
  explicit SessionListener(std::shared_ptr<Session> session) : session_(std::move(session)) {}
  void OnEvent(std::string event) override {
    auto s = session_;
    net::post(executor(), [s, e = std::move(event)]() mutable { s->OnJobEvent(std::move(e)); });
  }
  void OnDone(std::string body) override {
    auto s = session_;
    net::post(executor(), [s, b = std::move(body)]() mutable { s->OnJobDone(std::move(b)); });
    session_.reset();
  }
  void SetExecutor(net::any_io_executor ex) { ex_ = std::move(ex); }

 private:
  const net::any_io_executor& executor() const { return ex_; }
  std::shared_ptr<Session> session_;
  net::any_io_executor ex_;
};

void Session::DoRead() {
  if (server_->stopped_) return Close();
  // A fresh parser per request: a parser is single-use.
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(server_->options_.max_header_bytes));
  parser_->body_limit(server_->options_.max_body_bytes);
  stream_.expires_after(server_->options_.header_timeout);
  http::async_read_header(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&Session::OnReadHeader, shared_from_this()));
}

void Session::OnReadHeader(beast::error_code ec, size_t) {
  if (ec == http::error::body_limit) {
    return SendError({413, absl::StrCat("request body exceeds the limit of ",
                                        server_->options_.max_body_bytes, " bytes"),
                      "invalid_request_error", "", "request_too_large"});
  }
  if (ec == http::error::header_limit) {
    return SendError({431, "request headers are too large", "invalid_request_error", "",
                      "headers_too_large"});
  }
  if (ec == beast::error::timeout && buffer_.size() > 0) {
    return SendError({408, "timed out reading the request headers", "invalid_request_error", "",
                      "request_timeout"});
  }
  if (ec) return Close();  // end of stream, idle timeout, reset: nothing to answer
  auto& header = parser_->get();
  const auto cl = parser_->content_length();
  if (cl && *cl > server_->options_.max_body_bytes) {
    return SendError({413, absl::StrCat("request body exceeds the limit of ",
                                        server_->options_.max_body_bytes, " bytes"),
                      "invalid_request_error", "", "request_too_large"});
  }
  stream_.expires_after(server_->options_.body_timeout);
  if (beast::iequals(header[http::field::expect], "100-continue")) {
    static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    return net::async_write(
        stream_, net::buffer(kContinue),
        beast::bind_front_handler(&Session::OnContinueWritten, shared_from_this()));
  }
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&Session::OnRead, shared_from_this()));
}

void Session::OnContinueWritten(beast::error_code ec, size_t) {
  if (ec) return Close();
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&Session::OnRead, shared_from_this()));
}

void Session::OnRead(beast::error_code ec, size_t) {
  if (ec == http::error::body_limit) {
    return SendError({413, absl::StrCat("request body exceeds the limit of ",
                                        server_->options_.max_body_bytes, " bytes"),
                      "invalid_request_error", "", "request_too_large"});
  }
  if (ec == beast::error::timeout) {
    return SendError({408, "timed out reading the request body", "invalid_request_error", "",
                      "request_timeout"});
  }
  if (ec == http::error::end_of_stream || ec == net::error::eof ||
      ec == net::error::connection_reset) {
    return Close();
  }
  if (ec) {
    return SendError({400, absl::StrCat("malformed HTTP request: ", ec.message()),
                      "invalid_request_error", "", "bad_request"});
  }
  req_ = parser_->release();
  Handle();
}

void Session::Handle() {
  in_flight_ = true;
  ++server_->busy_;
  std::string_view target(req_.target().data(), req_.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  const http::verb method = req_.method();

  const auto& opt = server_->options_;
  if (!opt.api_key.empty() && path != "/healthz") {
    const auto auth = req_[http::field::authorization];
    const std::string_view given(auth.data(), auth.size());
    constexpr std::string_view kBearer = "Bearer ";
    const bool ok = given.size() > kBearer.size() && given.substr(0, kBearer.size()) == kBearer &&
                    ConstantTimeEquals(given.substr(kBearer.size()), opt.api_key);
    if (!ok) {
      return SendError({401, "missing or invalid API key (Authorization: Bearer <key>)",
                        "authentication_error", "", "invalid_api_key"},
                       {{"WWW-Authenticate", "Bearer"}});
    }
  }

  struct Route {
    std::string_view path;
    http::verb method;
  };
  static constexpr Route kRoutes[] = {{"/v1/completions", http::verb::post},
                                      {"/v1/models", http::verb::get},
                                      {"/healthz", http::verb::get},
                                      {"/readyz", http::verb::get},
                                      {"/metrics", http::verb::get}};
  const Route* route = nullptr;
  for (const Route& r : kRoutes) {
    if (r.path == path) route = &r;
  }
  if (route == nullptr) {
    return SendError({404, absl::StrCat("no route ", std::string(path)), "invalid_request_error",
                      "", "not_found"});
  }
  if (method != route->method) {
    return SendError({405,
                      absl::StrCat(std::string(path), " accepts only ",
                                   std::string(http::to_string(route->method))),
                      "invalid_request_error", "", "method_not_allowed"},
                     {{"Allow", std::string(http::to_string(route->method))}});
  }
  std::shared_ptr<ServingModel> model = server_->scheduler_->CurrentModel();
  if (path == "/healthz") return SendJson(http::status::ok, R"({"status":"ok"})");
  if (path == "/readyz") {
    if (model == nullptr) {
      return SendError({503, "no checkpoint is loaded yet", "service_unavailable", "",
                        "model_not_ready"});
    }
    return SendJson(http::status::ok, json{{"status", "ready"},
                                           {"model", model->snapshot().id},
                                           {"checkpoint_step", model->snapshot().step}}
                                          .dump());
  }
  if (path == "/metrics") {
    return SendText(http::status::ok, server_->metrics_->Render(),
                    "text/plain; version=0.0.4; charset=utf-8");
  }
  if (path == "/v1/models") {
    json data = json::array();
    if (model != nullptr) {
      const ModelSnapshot& s = model->snapshot();
      data.push_back({{"id", s.id},
                      {"object", "model"},
                      {"created", 0},
                      {"owned_by", "dropk"},
                      {"checkpoint_step", s.step},
                      {"context_length", s.config.block_size},
                      {"vocab_size", s.config.vocab_size}});
    }
    return SendJson(http::status::ok, json{{"object", "list"}, {"data", data}}.dump());
  }
  HandleCompletions();
}

void Session::HandleCompletions() {
  auto parsed = ParseCompletionRequest(req_.body());
  if (auto* e = std::get_if<ApiError>(&parsed)) return SendError(*e);
  const CompletionRequest& request = std::get<CompletionRequest>(parsed);
  auto listener = std::make_shared<SessionListener>(shared_from_this());
  listener->SetExecutor(stream_.get_executor());
  streaming_ = request.stream;
  stream_header_done_ = false;
  job_done_ = false;
  pending_.clear();
  auto started = CompletionJob::Start(request, server_->scheduler_->CurrentModel(),
                                      server_->scheduler_, listener);
  if (auto* e = std::get_if<ApiError>(&started)) {
    if (e->status == 429) {
      return SendError(*e, {{"Retry-After", std::to_string(server_->options_.retry_after_seconds)}});
    }
    return SendError(*e);
  }
  job_ = std::get<std::shared_ptr<CompletionJob>>(started);
  if (streaming_) {
    stream_res_.emplace(http::status::ok, req_.version());
    stream_res_->set(http::field::server, "dropk-serve");
    stream_res_->set(http::field::content_type, "text/event-stream");
    stream_res_->set(http::field::cache_control, "no-cache");
    stream_res_->keep_alive(req_.keep_alive());
    stream_res_->chunked(true);
    stream_sr_.emplace(*stream_res_);
    writing_ = true;
    stream_.expires_after(server_->options_.write_timeout);
    http::async_write_header(
        stream_, *stream_sr_,
        beast::bind_front_handler(&Session::OnStreamHeaderWritten, shared_from_this()));
  }
  WatchPeer();
}

// While generating, a readable socket means the client closed (or sent a
// pipelined request, which is left for the next read): cancel on close.
void Session::WatchPeer() {
  if (watching_) return;
  watching_ = true;
  stream_.socket().async_wait(
      tcp::socket::wait_read,
      beast::bind_front_handler(&Session::OnPeerReadable, shared_from_this()));
}

void Session::OnPeerReadable(beast::error_code ec) {
  watching_ = false;
  if (ec || job_ == nullptr || job_done_) return;
  char byte;
  beast::error_code peek_ec;
  // Peek without blocking: a readiness report with no data behind it must not
  // block this session's strand (the job's answer is posted to it), so the
  // socket is non-blocking here and "nothing yet" means watch again.
  tcp::socket& socket = stream_.socket();
  socket.non_blocking(true, peek_ec);
  size_t n = 0;
  if (!peek_ec) n = socket.receive(net::buffer(&byte, 1), tcp::socket::message_peek, peek_ec);
  if (peek_ec == net::error::would_block) {
    WatchPeer();
    return;
  }
  if (peek_ec || n == 0) {
    // The client is gone: stop its generation and free its slots.
    job_->Cancel();
    closed_ = true;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }
}

void Session::OnStreamHeaderWritten(beast::error_code ec, size_t) {
  writing_ = false;
  if (ec) {
    job_->Cancel();
    closed_ = true;
    return;
  }
  stream_header_done_ = true;
  PumpStream();
}

void Session::OnJobEvent(std::string event) {
  if (closed_) return;
  pending_.push_back(std::move(event));
  PumpStream();
}

void Session::PumpStream() {
  if (closed_ || writing_ || !stream_header_done_) return;
  if (pending_.empty()) {
    if (job_done_) {
      writing_ = true;
      stream_.expires_after(server_->options_.write_timeout);
      net::async_write(stream_, http::make_chunk_last(),
                       [self = shared_from_this()](beast::error_code ec, size_t) {
                         self->writing_ = false;
                         if (ec) {
                           self->closed_ = true;
                           return self->EndRequest(false);
                         }
                         self->server_->metrics_->CountRequest(200);
                         self->EndRequest(self->stream_res_->keep_alive());
                       });
    }
    return;
  }
  writing_event_ = std::move(pending_.front());
  pending_.pop_front();
  writing_ = true;
  stream_.expires_after(server_->options_.write_timeout);
  net::async_write(stream_, http::make_chunk(net::buffer(writing_event_)),
                   beast::bind_front_handler(&Session::OnChunkWritten, shared_from_this()));
}

void Session::OnChunkWritten(beast::error_code ec, size_t) {
  writing_ = false;
  if (ec) {
    // A client that stops reading or goes away: cancel its generation.
    if (job_) job_->Cancel();
    closed_ = true;
    if (job_done_) EndRequest(false);
    return;
  }
  PumpStream();
}

void Session::OnJobDone(std::string body) {
  job_done_ = true;
  if (streaming_) {
    if (closed_) return EndRequest(false);
    return PumpStream();
  }
  if (closed_ || job_->cancelled()) return EndRequest(false);
  SendJson(http::status::ok, std::move(body));
}

void Session::SendJson(http::status status, std::string body,
                       const std::vector<std::pair<std::string, std::string>>& headers) {
  http::response<http::string_body> res{status, req_.version() ? req_.version() : 11};
  res.set(http::field::content_type, "application/json");
  for (const auto& [k, v] : headers) res.set(k, v);
  res.body() = std::move(body);
  Send(std::move(res));
}

void Session::SendError(const ApiError& error,
                        const std::vector<std::pair<std::string, std::string>>& headers) {
  SendJson(static_cast<http::status>(error.status), ErrorBody(error), headers);
}

void Session::SendText(http::status status, std::string body, std::string content_type) {
  http::response<http::string_body> res{status, req_.version()};
  res.set(http::field::content_type, content_type);
  res.body() = std::move(body);
  Send(std::move(res));
}

void Session::Send(http::response<http::string_body> res) {
  if (!in_flight_) {
    in_flight_ = true;
    ++server_->busy_;
  }
  if (req_.version() == 0) res.version(11);
  res.set(http::field::server, "dropk-serve");
  // After a read error or a refused body the stream position is unknown:
  // answer and close. Otherwise honour keep-alive.
  const bool keep_alive = parser_.has_value() && parser_->is_done() && req_.keep_alive() &&
                          !server_->stopped_;
  res.keep_alive(keep_alive);
  res.prepare_payload();
  server_->metrics_->CountRequest(res.result_int());
  auto sp = std::make_shared<http::response<http::string_body>>(std::move(res));
  stream_.expires_after(server_->options_.write_timeout);
  http::async_write(stream_, *sp,
                    [self = shared_from_this(), sp, keep_alive](beast::error_code ec, size_t n) {
                      self->OnWrite(keep_alive, ec, n);
                    });
}

void Session::OnWrite(bool keep_alive, beast::error_code ec, size_t) {
  EndRequest(keep_alive && !ec);
}

void Session::EndRequest(bool keep_alive) {
  if (job_ != nullptr && !job_done_) return;  // wait for the job to let go
  job_.reset();
  stream_sr_.reset();
  stream_res_.reset();
  if (in_flight_) {
    in_flight_ = false;
    --server_->busy_;
  }
  if (watching_) {
    beast::error_code ignored;
    stream_.socket().cancel(ignored);  // the peer watch; nothing else is pending now
  }
  if (!keep_alive || closed_) return Close();
  // The next request on this connection; the parser must be fresh (DoRead).
  req_ = {};
  DoRead();
}

void Session::Close() {
  closed_ = true;
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream_.socket().close(ignored);
}

}  // namespace

absl::Status HttpServer::Impl::Listen() {
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options_.address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--address ", options_.address, ": ", ec.message()));
  }
  const tcp::endpoint endpoint(address, options_.port);
  auto fail = [&](const char* what) {
    return absl::UnavailableError(absl::StrCat(what, " ", options_.address, ":", options_.port,
                                               ": ", ec.message()));
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
  acceptor_.async_accept(net::make_strand(ioc_),
                         beast::bind_front_handler(&Impl::OnAccept, this));
}

void HttpServer::Impl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
  if (!ec) {
    // Streamed tokens are small writes: send each at once (no Nagle delay).
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::make_shared<Session>(std::move(socket), this)->Run();
  }
  // A failed accept (e.g. out of descriptors) ends only that connection.
  DoAccept();
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
    p->threads_.emplace_back([p] { p->ioc_.run(); });
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
}

}  // namespace dropk
