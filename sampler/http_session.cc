// One HTTP connection of dropk-serve (Session): reading requests within
// their limits, dispatching them to the API, answering, streaming
// completions as server-sent events, and watching the client while a
// completion runs, so one that is gone cancels its work.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/check.h"
#include "base/cut_for_message.h"
#include "http_server_impl.h"
#include "sampler/completions.h"
#include "sampler/http_api.h"

namespace dropk {

namespace {

// Where a session is. Exactly one at a time; every handler first checks that
// the session is still where the operation it completes left it.
enum class State {
  kReadingHeader,  // reading a request's header (or idle between requests)
  kReadingBody,    // header read, reading the body
  kPreparing,      // a completion request is parsed and tokenized off the I/O threads
  kGenerating,     // a non-streaming completion runs; the peer is watched
  kProbing,        // the peer sent EOF while generating: is it half-closed or gone?
                   // (a 1xx, or for HTTP/1.0 the answer's first bytes, was written)
  kStreamWriting,  // streaming: a write (header, event or end) is in flight
  kStreamIdle,     // streaming: waiting for the next event
  kWriting,        // a complete response is being written
  kAbandoned,      // the client is gone: waiting for the job to let go
  kLingering,      // answered and half-closed: discarding a body left unread
  kClosed,
};

// States in which a request is in flight (counted in Impl::busy_, which
// Stop waits on).
bool InFlight(State s) {
  return s != State::kReadingHeader && s != State::kReadingBody && s != State::kLingering &&
         s != State::kClosed;
}

// An unsolicited interim response: every HTTP/1.1 client must accept 1xx
// responses before the final one (RFC 9110 15.2).
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// How long after the probe a peer that closed fully has surely answered it
// with a reset (loopback: microseconds; a WAN round trip: well under this).
constexpr auto kProbeWait = std::chrono::milliseconds(250);
// How far a stream's client may fall behind (events waiting past the
// socket's own buffers) before it counts as gone and its generation is
// cancelled.
constexpr size_t kMaxStreamBacklogBytes = size_t{4} << 20;
// How long, at most, a connection answered before its body was read (a
// 413) reads on to discard what the client still sends, and how much
// silence ends that sooner (nginx's lingering_time and lingering_timeout).
constexpr auto kLingerLimit = std::chrono::seconds(30);
constexpr auto kLingerQuiet = std::chrono::seconds(5);

// Whether the kernel saw the peer reset the connection. Linux: TCP_INFO.
bool PeerReset(tcp::socket& socket) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(socket.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return true;
  return info.tcpi_state == TCP_CLOSE;
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  // Counted in server->open_connections_ (by the acceptor) until destroyed.
  Session(tcp::socket&& socket, HttpServer::Impl* server)
      : stream_(std::move(socket)),
        timer_(stream_.get_executor()),
        server_(server),
        buffer_(server->read_buffer_limit_) {}
  ~Session() {
    --server_->open_connections_;
    --server_->metrics_->open_connections;
  }

  void Run() {
    // Sessions run on their own strand; dispatch there before the first read.
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&Session::DoRead, shared_from_this()));
  }

  // Called (via post) from the scheduler thread's listener.
  void OnJobEvent(std::string event);
  void OnJobDone(CompletionResult result);

 private:
  void SetState(State next);
  // Reading a request.
  void DoRead();
  // Reads the next request's header with a fresh parser, within the
  // deadline DoRead armed.
  void ReadHeader();
  void ArmReadDeadline(std::chrono::milliseconds limit);
  void OnReadDeadline(beast::error_code ec);
  void OnReadHeader(beast::error_code ec, size_t bytes);
  void ReadBody();
  void OnRead(beast::error_code ec, size_t bytes);
  void OnReadError(beast::error_code ec);
  // Answering it.
  void Dispatch();
  void OnRouted(RouteResult routed);
  // Answers a request that could not be read (then closes).
  void SendError(const ApiError& error);
  // Writes `res`; keeps the connection when allowed and the request asked.
  void Send(HttpResponse res, bool may_keep_alive = true);
  // Writes what is left of `response` through `serializer`, each piece the
  // socket takes within the write timeout, then ends the request. One
  // deadline over the whole answer cut a large one (logprobs of n
  // completions, tens of MB) off mid-body, unlogged, for a client on a slow
  // link that read steadily; a client that stops reading still loses the
  // connection after the timeout.
  // Writes `rest` from byte `written` on, as WriteSomeOf writes an answer,
  // then ends the request (closing: the client half-closed).
  void WriteRestOf(std::shared_ptr<std::string> rest, size_t written);
  void WriteSomeOf(std::shared_ptr<HttpResponse> response,
                   std::shared_ptr<http::response_serializer<http::string_body>> serializer,
                   bool keep_alive);
  void EndRequest(bool keep_alive);
  void Close();
  // Closes a connection whose request was answered with its body unread:
  // ends the sending side, then reads and discards what the client still
  // sends (within kLingerLimit, kLingerQuiet of silence) before closing.
  // Closed at once with those bytes unread, the kernel reset the
  // connection, and the reset threw the answer away before a client that
  // sends its whole body first read it: Python's urllib got "Broken pipe",
  // not the 413.
  void Linger();
  void DiscardUnread();
  // Watching the client while a completion runs.
  void WatchPeer();
  void OnPeerReadable(beast::error_code ec);
  void Probe();
  void OnProbeTimer(beast::error_code ec);
  void ProbeStream();
  void WatchPeerReset();
  void SendAnswerAfterProbe();
  void ClientGone();
  // Streaming server-sent events.
  void StartStream();
  void PumpStream();
  void OnStreamWritten(beast::error_code ec, size_t bytes);
  bool Chunked() const { return req_.version() >= 11; }

  beast::tcp_stream stream_;
  net::steady_timer timer_;  // the read deadline, or the wait after a probe
  HttpServer::Impl* server_;
  State state_ = State::kReadingHeader;
  // Bounded (read_buffer_limit_): a chunk extension or trailer that never
  // ends was read into it without limit (1 GiB in 4.5 s). A read past the
  // bound fails with http::error::buffer_overflow (OnReadError).
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest req_;
  bool body_unread_ = false;  // the answer being written left the request's body unread
  std::chrono::steady_clock::time_point linger_until_;
  std::array<char, 4096> discarded_;  // what Linger reads, thrown away

  // The completion in progress; null when there is none or it has finished.
  std::shared_ptr<CompletionJob> job_;
  CompletionResult answer_;  // a non-streaming answer that came while probing or preparing
  // The first bytes of the answer, written early as an HTTP/1.0 client's
  // probe (Probe); Send writes the rest. Empty when none were.
  std::string answer_prefix_sent_;
  bool probe_writing_ = false;      // Probe's write is in flight
  bool finished_early_ = false;     // the job finished before OnRouted ran
  std::deque<std::string> events_;  // SSE events not yet written
  size_t events_bytes_ = 0;         // their total size
  std::string writing_;             // the event being written
  std::optional<http::response<http::empty_body>> stream_res_;
  std::optional<http::response_serializer<http::empty_body>> stream_sr_;
};

namespace {
// A finished non-streaming job's answer: its body as a 200, or its error.
HttpResponse AnswerResponse(CompletionResult result, unsigned version) {
  if (auto* error = std::get_if<ApiError>(&result)) return ErrorResponse(*error, version);
  return JsonResponse(http::status::ok, version, std::get<std::string>(std::move(result)));
}
}  // namespace

// Forwards a job's output to its session's strand.
class SessionListener final : public CompletionListener {
 public:
  SessionListener(std::shared_ptr<Session> session, net::any_io_executor ex)
      : session_(std::move(session)), ex_(std::move(ex)) {}
  void OnEvent(std::string event) override {
    auto s = session_;
    net::post(ex_, [s, e = std::move(event)]() mutable { s->OnJobEvent(std::move(e)); });
  }
  void OnDone(CompletionResult result) override {
    auto s = session_;
    net::post(ex_, [s, r = std::move(result)]() mutable { s->OnJobDone(std::move(r)); });
    session_.reset();
  }

 private:
  std::shared_ptr<Session> session_;
  net::any_io_executor ex_;
};

// The bytes read into `buffer` and not yet consumed.
std::string_view BufferedText(const beast::flat_buffer& buffer) {
  return std::string_view(static_cast<const char*>(buffer.data().data()), buffer.size());
}

// Whether the bytes a chunked body's parse left in `buffer` are its
// trailer: the last chunk's line ("0", extensions, CRLF) is whole and what
// follows has not ended. Otherwise they are a chunk's size line that has
// not ended (after the CRLF closing the previous chunk's data).
bool InTrailer(const beast::flat_buffer& buffer) {
  std::string_view data = BufferedText(buffer);
  if (data.starts_with("\r\n")) data.remove_prefix(2);
  return data.find("\r\n") != std::string_view::npos;
}

// Drops the CR and LF bytes at the start of `buffer`; whether there were
// any.
bool SkipEmptyLines(beast::flat_buffer* buffer) {
  const std::string_view data = BufferedText(*buffer);
  const size_t n = std::min(data.find_first_not_of("\r\n"), data.size());
  buffer->consume(n);
  return n > 0;
}

// Whether the bytes in `buffer` hold a line's end: a header read that
// overflowed without one never saw the end of its request line.
bool HasLineEnd(const beast::flat_buffer& buffer) {
  return BufferedText(buffer).find("\r\n") != std::string_view::npos;
}

// Whether the first line in `buffer` ends in a bare LF, not CRLF.
bool FirstLineEndsInBareLf(const beast::flat_buffer& buffer) {
  const std::string_view data = BufferedText(buffer);
  const size_t lf = data.find('\n');
  return lf != std::string_view::npos && (lf == 0 || data[lf - 1] != '\r');
}

// Every Transfer-Encoding field of `req`, joined as one list (RFC 9110 5.3).
std::string TransferEncodingOf(const http::fields& req) {
  std::string joined;
  const auto [first, last] = req.equal_range(http::field::transfer_encoding);
  for (auto it = first; it != last; ++it) {
    absl::StrAppend(&joined, joined.empty() ? "" : ", ",
                    absl::string_view(it->value().data(), it->value().size()));
  }
  return joined;
}

// Null when the request's Transfer-Encoding (if any) is one dropk reads:
// chunked, once, alone, in HTTP/1.1. `chunked` is the parser's view (the
// last coding is chunked). Otherwise the error names the header's whole
// value.
std::optional<ApiError> CheckTransferEncoding(const http::request_header<>& req, bool chunked) {
  const std::string full = TransferEncodingOf(req);
  if (full.empty()) return std::nullopt;
  constexpr size_t kMaxShown = 200;  // an error stays one readable line
  const std::string te = CutAndEscapeForMessage(full, kMaxShown);
  if (req.version() < 11) {
    // RFC 9112 6.1: HTTP/1.0 has no transfer codings, so such a request's
    // framing is faulty (a 1.0 proxy in between would have framed it by
    // Content-Length or the close: the smuggling RFC 9112 11.2 warns of).
    // Beast decoded its chunks as in 1.1.
    return ApiError{400,
                    absl::StrCat("Transfer-Encoding '", te,
                                 "' in an HTTP/1.0 request: HTTP/1.0 has no transfer codings; "
                                 "send the body with Content-Length"),
                    "invalid_request_error", "", "bad_request"};
  }
  if (!chunked) {
    // RFC 9112 6.3: a request whose last coding is not chunked has no
    // knowable length.
    return ApiError{400,
                    absl::StrCat("Transfer-Encoding '", te, "' is not supported; only chunked"),
                    "invalid_request_error", "", "bad_request"};
  }
  // The last coding is chunked, which Beast decodes. Any other coding in
  // the list (gzip, chunked) would be left on the body undecoded: Beast
  // ignored it, and the compressed bytes were parsed as JSON. RFC 9112 6.1:
  // a coding the server does not understand is a 501.
  int chunked_count = 0;
  for (absl::string_view coding : absl::StrSplit(full, ',')) {
    coding = absl::StripAsciiWhitespace(coding);
    if (coding.empty()) continue;  // empty list elements are allowed (RFC 9110 5.6.1)
    if (absl::EqualsIgnoreCase(coding, "chunked")) {
      ++chunked_count;
    } else {
      return ApiError{501,
                      absl::StrCat("Transfer-Encoding '", te, "' is not supported: coding '",
                                   CutAndEscapeForMessage(
                                       std::string_view(coding.data(), coding.size()), kMaxShown),
                                   "' cannot be decoded; send the body with only chunked"),
                      "invalid_request_error", "", "unsupported_transfer_coding"};
    }
  }
  if (chunked_count > 1) {
    // RFC 9112 7: a sender must not apply chunked more than once.
    return ApiError{400,
                    absl::StrCat("Transfer-Encoding '", te, "' applies chunked more than once"),
                    "invalid_request_error", "", "bad_request"};
  }
  return std::nullopt;
}

void Session::SetState(State next) {
  const bool was = InFlight(state_), is = InFlight(next);
  if (!was && is) ++server_->busy_;
  if (was && !is) --server_->busy_;
  state_ = next;
}

void Session::DoRead() {
  if (server_->stopped_) return Close();
  SetState(State::kReadingHeader);
  // Reads are bounded by timer_, not by the stream's own expiry, which would
  // close the socket before the 408 could be written.
  stream_.expires_never();
  ArmReadDeadline(server_->options_.header_timeout);
  ReadHeader();
}

void Session::ReadHeader() {
  // A fresh parser per request: a parser is single-use.
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(server_->options_.max_header_bytes));
  parser_->body_limit(server_->options_.max_body_bytes);
  http::async_read_header(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&Session::OnReadHeader, shared_from_this()));
}

void Session::ArmReadDeadline(std::chrono::milliseconds limit) {
  timer_.expires_after(limit);  // cancels the previous wait
  timer_.async_wait(beast::bind_front_handler(&Session::OnReadDeadline, shared_from_this()));
}

void Session::OnReadDeadline(beast::error_code ec) {
  if (ec) return;  // re-armed or cancelled
  const bool header = state_ == State::kReadingHeader;
  if (!header && state_ != State::kReadingBody) return;  // the read finished meanwhile
  // The read's handler sees the state changed below and does nothing.
  beast::error_code ignored;
  stream_.socket().cancel(ignored);
  if (header && buffer_.size() == 0) return Close();  // an idle keep-alive connection
  SendError(
      {408,
       absl::StrCat(
           "timed out reading the request ", header ? "headers" : "body", " (limit ",
           (header ? server_->options_.header_timeout : server_->options_.body_timeout).count(),
           " ms)"),
       "invalid_request_error", "", "request_timeout"});
}

void Session::OnReadHeader(beast::error_code ec, size_t) {
  if (state_ != State::kReadingHeader) return;
  if (ec) return OnReadError(ec);
  const auto cl = parser_->content_length();
  const size_t limit = server_->options_.max_body_bytes;
  if (cl && *cl > limit) {
    return SendError({413, absl::StrCat("request body exceeds the limit of ", limit, " bytes"),
                      "invalid_request_error", "", "request_too_large"});
  }
  if (std::optional<ApiError> error = CheckTransferEncoding(parser_->get(), parser_->chunked())) {
    return SendError(*error);
  }
  // RFC 9110 10.1.1: an HTTP/1.0 request's 100-continue is ignored (such a
  // client knows no 1xx and would read "100 Continue" as its answer).
  const bool http11 = parser_->get().version() >= 11;
  const auto expect = parser_->get().find(http::field::expect);
  const bool expects_continue =
      http11 && expect != parser_->get().end() && beast::iequals(expect->value(), "100-continue");
  // Any other expectation is one dropk cannot meet: 417, before its body is
  // read (RFC 9110 10.1.1), rather than serving a request whose client waits
  // on something that never comes.
  if (http11 && expect != parser_->get().end() && !expects_continue) {
    constexpr size_t kMaxShown = 200;  // an error stays one readable line
    const std::string value = CutAndEscapeForMessage(
        std::string_view(expect->value().data(), expect->value().size()), kMaxShown);
    return SendError(
        ApiError{417,
                 absl::StrCat("Expect: ", value,
                              " is not an expectation this server meets; only 100-continue is"),
                 "invalid_request_error", "", "expectation_failed"});
  }
  if (expects_continue) {
    // A request its header refuses (no route, a wrong key, a missing Host...)
    // is answered now, its body never asked for: it got "100 Continue" and
    // then had its body, which a client holds back for the 100 (curl does
    // for a large one), sent only to be thrown away; one that sent nothing
    // more got a 408. The body is unread: close after.
    if (std::optional<HttpResponse> refused = server_->api_.RefuseEarly(parser_->get())) {
      timer_.cancel();
      body_unread_ = true;
      return Send(std::move(*refused), /*may_keep_alive=*/false);
    }
  }
  SetState(State::kReadingBody);
  ArmReadDeadline(server_->options_.body_timeout);
  if (expects_continue) {
    return net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (self->state_ != State::kReadingBody) return;
                              if (ec) return self->Close();
                              self->ReadBody();
                            });
  }
  ReadBody();
}

void Session::ReadBody() {
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&Session::OnRead, shared_from_this()));
}

void Session::OnRead(beast::error_code ec, size_t) {
  if (state_ != State::kReadingBody) return;
  if (ec) return OnReadError(ec);
  timer_.cancel();
  req_ = parser_->release();
  Dispatch();
}

void Session::OnReadError(beast::error_code ec) {
  // RFC 9112 2.2: empty lines before a request line should be ignored; a
  // client that ends a body with an extra CRLF (as old ones do) had its
  // next request refused as "bad method" and the connection closed. The
  // header deadline still runs: empty lines never hold a connection open.
  if (state_ == State::kReadingHeader && ec == http::error::bad_method &&
      SkipEmptyLines(&buffer_)) {
    return ReadHeader();
  }
  timer_.cancel();
  if (ec == http::error::body_limit) {
    return SendError({413,
                      absl::StrCat("request body exceeds the limit of ",
                                   server_->options_.max_body_bytes, " bytes"),
                      "invalid_request_error", "", "request_too_large"});
  }
  const bool header_too_long =
      ec == http::error::header_limit ||
      (ec == http::error::buffer_overflow && state_ == State::kReadingHeader);
  // Beast consumes the request line once it has parsed it, so a header
  // field too long to end in the buffer left no line end there either: the
  // parsed target tells them apart (a 100 KB header field was a 414 about
  // the request line).
  const bool request_line_read = !parser_->get().target().empty();
  if (header_too_long && !request_line_read && !HasLineEnd(buffer_)) {
    // RFC 9112 3: a target longer than the server parses is a 414; "request
    // headers are too large" (431) sent a client with a 20 KB URL looking
    // among its headers.
    return SendError({414,
                      absl::StrCat("the request line (its target) is longer than the limit of ",
                                   server_->options_.max_header_bytes, " bytes"),
                      "invalid_request_error", "", "uri_too_long"});
  }
  if (ec == http::error::header_limit) {
    return SendError(
        {431, "request headers are too large", "invalid_request_error", "", "headers_too_large"});
  }
  if (ec == http::error::buffer_overflow) {
    const size_t limit = server_->read_buffer_limit_;
    if (state_ == State::kReadingBody && !InTrailer(buffer_)) {
      return SendError({413,
                        absl::StrCat("a chunk's size line (with its extensions) is longer than the "
                                     "limit of ",
                                     limit, " bytes"),
                        "invalid_request_error", "", "request_too_large"});
    }
    return SendError(
        {431,
         absl::StrCat("request ",
                      state_ == State::kReadingBody ? "trailer fields are" : "headers are",
                      " longer than the limit of ", limit, " bytes"),
         "invalid_request_error", "", "headers_too_large"});
  }
  if (ec == http::error::partial_message) {
    // The client shut down its side mid-request; it may still read.
    return SendError({400, "the request ended before it was complete", "invalid_request_error", "",
                      "bad_request"});
  }
  if (ec == http::error::bad_version && state_ == State::kReadingHeader &&
      FirstLineEndsInBareLf(buffer_)) {
    // A request typed by hand (printf '...\n' | nc) read "bad version".
    return SendError({400,
                      "malformed HTTP request: the request line ends in a bare LF; HTTP/1.1 "
                      "lines end in CRLF (\\r\\n)",
                      "invalid_request_error", "", "bad_request"});
  }
  if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
      ec != http::error::end_of_stream) {
    // Malformed HTTP: bad request line, version, field, Content-Length or
    // Transfer-Encoding (conflicting ones included), a NUL in a header...
    return SendError({400, absl::StrCat("malformed HTTP request: ", ec.message()),
                      "invalid_request_error", "", "bad_request"});
  }
  Close();  // end of stream, reset: nobody to answer
}

void Session::Dispatch() {
  auto listener = std::make_shared<SessionListener>(shared_from_this(), stream_.get_executor());
  if (req_.method() != http::verb::post) {  // cheap routes answer here, even when the pool is busy
    return OnRouted(server_->api_.Route(req_, listener));
  }
  // A completion's body is parsed and its prompts tokenized in the
  // preparation pool: a megabyte of BPE prompt takes about a second, during
  // which an I/O thread doing it would answer no other connection, health
  // checks included. req_ is left alone here until OnRouted.
  SetState(State::kPreparing);
  net::post(server_->prepare_pool_, [self = shared_from_this(), listener] {
    RouteResult routed;
    try {
      routed = self->server_->api_.Route(self->req_, listener);
    } catch (const std::exception& e) {  // an allocation that failed: this request only
      routed.response =
          ErrorResponse({500, absl::StrCat("the request could not be prepared (", e.what(), ")"),
                         "server_error", "", "internal_error"},
                        self->req_.version());
    }
    net::post(self->stream_.get_executor(),
              [self, routed = std::move(routed)]() mutable { self->OnRouted(std::move(routed)); });
  });
}

void Session::OnRouted(RouteResult routed) {
  if (routed.job == nullptr) return Send(std::move(routed.response));
  // The job's output may have come first (posted by the scheduler while the
  // pool was still posting this): OnJobEvent and OnJobDone kept it.
  if (!finished_early_) job_ = std::move(routed.job);
  if (routed.stream) {
    StartStream();  // writes what was kept, and the end when it is done
  } else if (finished_early_) {
    return Send(AnswerResponse(std::move(answer_), req_.version()));
  } else {
    SetState(State::kGenerating);
  }
  WatchPeer();
}

void Session::SendError(const ApiError& error) {
  // Errors of the connection itself come before a request was read: its
  // version is whatever the parser saw, 1.1 when it saw none.
  const unsigned version = parser_ && parser_->is_header_done() ? parser_->get().version() : 11;
  // After a read error or a refused request the stream position is unknown:
  // answer and close.
  body_unread_ = true;
  Send(ErrorResponse(error, version), /*may_keep_alive=*/false);
}

void Session::Send(HttpResponse res, bool may_keep_alive) {
  const bool known_version = req_.version() == 10 || req_.version() == 11;
  const bool keep_alive =
      may_keep_alive && known_version && req_.keep_alive() && !server_->stopped_;
  res.keep_alive(keep_alive);
  server_->metrics_->CountRequest(res.result_int());
  SetState(State::kWriting);
  if (!answer_prefix_sent_.empty()) {
    // The probe wrote the status line's first bytes: the rest follows them,
    // and the client, which has half-closed, gets the end of the connection
    // as the end of the answer.
    res.keep_alive(false);
    std::ostringstream serialized;
    serialized << res;
    auto rest = std::make_shared<std::string>(std::move(serialized).str());
    DROPK_CHECK(rest->starts_with(answer_prefix_sent_))
        << "an answer does not begin with its probe '" << answer_prefix_sent_ << "'";
    rest->erase(0, answer_prefix_sent_.size());
    return WriteRestOf(std::move(rest), 0);
  }
  auto response = std::make_shared<HttpResponse>(std::move(res));
  WriteSomeOf(response, std::make_shared<http::response_serializer<http::string_body>>(*response),
              keep_alive);
}

void Session::WriteRestOf(std::shared_ptr<std::string> rest, size_t written) {
  if (written == rest->size()) return EndRequest(false);
  stream_.expires_after(server_->options_.write_timeout);
  stream_.async_write_some(net::buffer(*rest) + written,
                           [self = shared_from_this(), rest, written](beast::error_code ec,
                                                                      size_t n) {
                             if (ec) return self->EndRequest(false);
                             self->WriteRestOf(rest, written + n);
                           });
}

void Session::WriteSomeOf(std::shared_ptr<HttpResponse> response,
                          std::shared_ptr<http::response_serializer<http::string_body>> serializer,
                          bool keep_alive) {
  stream_.expires_after(server_->options_.write_timeout);
  http::async_write_some(stream_, *serializer,
                         [self = shared_from_this(), response, serializer, keep_alive](
                             beast::error_code ec, size_t) {
                           if (ec) return self->EndRequest(false);
                           if (serializer->is_done()) return self->EndRequest(keep_alive);
                           self->WriteSomeOf(response, serializer, keep_alive);
                         });
}

void Session::EndRequest(bool keep_alive) {
  job_.reset();
  answer_ = std::string();
  answer_prefix_sent_.clear();
  probe_writing_ = false;
  finished_early_ = false;
  events_.clear();
  events_bytes_ = 0;
  stream_sr_.reset();
  stream_res_.reset();
  timer_.cancel();
  beast::error_code ignored;
  stream_.socket().cancel(ignored);  // the peer watch; nothing else is pending now
  if (body_unread_ && !server_->stopped_) return Linger();
  if (!keep_alive || server_->stopped_) return Close();
  // An idle keep-alive connection keeps no more buffer than the bytes of a
  // next request it has sent already (a long header left it tens of KiB).
  buffer_.shrink_to_fit();
  // The next request on this connection; the parser must be fresh (DoRead).
  req_ = {};
  DoRead();
}

void Session::Close() {
  SetState(State::kClosed);
  timer_.cancel();
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream_.socket().close(ignored);
}

void Session::Linger() {
  SetState(State::kLingering);
  body_unread_ = false;
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  linger_until_ = std::chrono::steady_clock::now() + kLingerLimit;
  DiscardUnread();
}

void Session::DiscardUnread() {
  const auto now = std::chrono::steady_clock::now();
  if (state_ != State::kLingering || server_->stopped_ || now >= linger_until_) return Close();
  // The stream's expiry closes the socket, and this read then fails.
  stream_.expires_after(std::min<std::chrono::steady_clock::duration>(kLingerQuiet,
                                                                     linger_until_ - now));
  stream_.async_read_some(net::buffer(discarded_),
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            if (self->state_ != State::kLingering) return;
                            if (ec) return self->Close();
                            self->DiscardUnread();
                          });
}

// While generating, a readable socket means the client closed or
// half-closed, or sent a pipelined request: its bytes are moved into the
// read buffer for the next read (while the buffer has room), and the watch
// goes on, so a client that pipelines and then leaves is still seen to
// leave. Before, the first pipelined byte ended the watch, and a client that
// left after it had its request generated to the end for nobody.
void Session::WatchPeer() {
  stream_.socket().async_wait(
      tcp::socket::wait_read,
      beast::bind_front_handler(&Session::OnPeerReadable, shared_from_this()));
}

void Session::OnPeerReadable(beast::error_code ec) {
  const bool watching = state_ == State::kGenerating || state_ == State::kStreamIdle ||
                        state_ == State::kStreamWriting;
  if (ec || !watching) return;
  char byte;
  beast::error_code peek_ec;
  // Peek without blocking: a readiness report with no data behind it must not
  // block this session's strand (the job's answer is posted to it), so the
  // socket is non-blocking here and "nothing yet" means watch again.
  tcp::socket& socket = stream_.socket();
  socket.non_blocking(true, peek_ec);
  size_t n = 0;
  if (!peek_ec) n = socket.receive(net::buffer(&byte, 1), tcp::socket::message_peek, peek_ec);
  if (peek_ec == net::error::would_block) return WatchPeer();
  if (peek_ec && peek_ec != net::error::eof) return ClientGone();
  if (n > 0 && !peek_ec) {
    // A pipelined request: keep its bytes for the next read, and keep
    // watching. A full buffer stops the watch (the next read finds the rest
    // in the socket), as every pipelined byte once did.
    const size_t room = buffer_.max_size() - buffer_.size();
    if (room == 0) return;
    beast::error_code read_ec;
    const size_t got = socket.read_some(buffer_.prepare(std::min<size_t>(room, 4096)), read_ec);
    if (read_ec == net::error::would_block) return WatchPeer();
    if (read_ec && read_ec != net::error::eof) return ClientGone();
    buffer_.commit(got);
    return WatchPeer();
  }
  // End of stream: a client that half-closed after its request still wants
  // the answer; one that closed fully does not. Only a write tells them
  // apart (a closed socket answers data with a reset): a plain answer's
  // probe does, and an SSE comment a stream's. The keep-alive and the
  // Connection: close cases are alike here: this watch runs for both.
  if (state_ == State::kGenerating) return Probe();
  ProbeStream();
}

// The probe of a plain answer: HTTP/1.1 clients accept (and skip) a 1xx
// before the answer. HTTP/1.0 knows no 1xx, so a 1.0 client gets the
// answer's own first bytes, "HTTP/1.0 ", which every answer begins with
// whatever its status: a half-closed client reads the answer whole, in two
// parts; before, the 1.0 client was not probed at all, and one that had
// left kept its place in the queue and its model time until its answer
// was written.
void Session::Probe() {
  SetState(State::kProbing);
  stream_.expires_after(server_->options_.write_timeout);
  std::string_view probe(kContinue);
  if (req_.version() < 11) {
    answer_prefix_sent_ = absl::StrCat("HTTP/", req_.version() / 10, ".", req_.version() % 10, " ");
    probe = answer_prefix_sent_;
  }
  probe_writing_ = true;
  net::async_write(
      stream_, net::buffer(probe.data(), probe.size()),
      [self = shared_from_this()](beast::error_code ec, size_t) {
        if (self->state_ != State::kProbing) return;
        self->probe_writing_ = false;
        if (ec) return self->ClientGone();
        if (self->job_ == nullptr) return self->SendAnswerAfterProbe();
        self->timer_.expires_after(kProbeWait);
        self->timer_.async_wait(beast::bind_front_handler(&Session::OnProbeTimer, self));
      });
}

void Session::OnProbeTimer(beast::error_code ec) {
  if (ec || state_ != State::kProbing) return;
  if (PeerReset(stream_.socket())) return ClientGone();
  // Half-closed: answer when the job is done (OnJobDone answers at once
  // while probing, so it is not done yet).
  if (job_ == nullptr) return SendAnswerAfterProbe();
  SetState(State::kGenerating);
  WatchPeerReset();
}

// The job ended while its client was probed: the answer goes now. Writing
// it tells a gone client as well as the probe's wait would, and the wait
// (kProbeWait) cost every request whose client half-closed a quarter
// second, 20 pipelined ones 2.8 s.
void Session::SendAnswerAfterProbe() {
  timer_.cancel();  // OnProbeTimer, if already due, finds the state moved on
  Send(AnswerResponse(std::move(answer_), req_.version()));
}

// A half-closed client reads nothing more of note until its answer, so its
// socket stays readable (at EOF) and a read watch would fire at once,
// forever. Only a reset still tells: a client that half-closed and then
// went away with the probe unread (or was killed) resets the connection.
// Decided: end of stream alone never means gone; a reset, an error or a
// failed write does.
void Session::WatchPeerReset() {
  stream_.socket().async_wait(
      tcp::socket::wait_error, [self = shared_from_this()](beast::error_code ec) {
        if (ec || self->state_ != State::kGenerating) return;
        tcp::socket& socket = self->stream_.socket();
        // Reading SO_ERROR also clears it, so a pending error is reported once.
        int error = 0;
        socklen_t len = sizeof(error);
        if (getsockopt(socket.native_handle(), SOL_SOCKET, SO_ERROR, &error, &len) != 0 ||
            error != 0 || PeerReset(socket)) {
          return self->ClientGone();
        }
        // Urgent (out-of-band) data wakes this wait too and stays reported
        // until read: a client that sent one byte with MSG_OOB kept this
        // thread spinning for as long as its request waited. Discard it.
        char urgent;
        if (recv(socket.native_handle(), &urgent, 1, MSG_OOB | MSG_DONTWAIT) == 1) {
          return self->WatchPeerReset();
        }
        // Woken for nothing known: look again after a pause, never in a loop.
        self->timer_.expires_after(kProbeWait);
        self->timer_.async_wait([self](beast::error_code timer_ec) {
          if (!timer_ec && self->state_ == State::kGenerating) self->WatchPeerReset();
        });
      });
}

// A stream's next event would tell a gone client from a half-closed one, but
// a stream still waiting in the queue has none, maybe for minutes, while it
// holds its place there: write an SSE comment (clients ignore it) now and
// look for the peer's reset after kProbeWait.
void Session::ProbeStream() {
  constexpr std::string_view kComment = ": probe\n\n";
  events_bytes_ += kComment.size();
  events_.emplace_back(kComment);
  PumpStream();
  timer_.expires_after(kProbeWait);
  timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    const bool streaming =
        self->state_ == State::kStreamIdle || self->state_ == State::kStreamWriting;
    if (!ec && streaming && PeerReset(self->stream_.socket())) self->ClientGone();
  });
}

void Session::ClientGone() {
  if (state_ == State::kAbandoned || state_ == State::kClosed) return;
  if (job_ == nullptr) return Close();
  // Stop its generation and free its slots; close once the job lets go.
  job_->Cancel();
  SetState(State::kAbandoned);
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

void Session::OnJobDone(CompletionResult result) {
  job_.reset();
  switch (state_) {
    case State::kGenerating: return Send(AnswerResponse(std::move(result), req_.version()));
    case State::kProbing:
      answer_ = std::move(result);
      // Sent now, or when the probe's write ends.
      if (!probe_writing_) SendAnswerAfterProbe();
      return;
    case State::kPreparing:  // done before OnRouted ran
      answer_ = std::move(result);
      finished_early_ = true;
      return;
    case State::kStreamIdle: return PumpStream();  // writes what is left, then the end
    case State::kAbandoned: return Close();
    default: return;  // kStreamWriting: PumpStream follows the write
  }
}

// Streaming: the response header, then each server-sent event as it
// comes, then the end. HTTP/1.1 frames events as chunks and ends with the
// last chunk (the connection may stay open); HTTP/1.0 has no chunked coding,
// so the stream is close-delimited: raw events, then the server closes.
void Session::StartStream() {
  stream_res_.emplace(http::status::ok, req_.version());
  stream_res_->set(http::field::server, "dropk-serve");
  stream_res_->set(http::field::content_type, "text/event-stream");
  stream_res_->set(http::field::cache_control, "no-cache");
  stream_res_->keep_alive(Chunked() && req_.keep_alive() && !server_->stopped_);
  stream_res_->chunked(Chunked());
  stream_sr_.emplace(*stream_res_);
  SetState(State::kStreamWriting);
  stream_.expires_after(server_->options_.write_timeout);
  http::async_write_header(
      stream_, *stream_sr_,
      beast::bind_front_handler(&Session::OnStreamWritten, shared_from_this()));
}

void Session::OnJobEvent(std::string event) {
  if (state_ != State::kStreamIdle && state_ != State::kStreamWriting &&
      state_ != State::kPreparing) {
    return;  // client gone
  }
  events_bytes_ += event.size();
  events_.push_back(std::move(event));
  if (state_ == State::kPreparing) return;  // written once routed
  // Generation does not wait for the client: one that stops reading would
  // have every event of its stream (up to 8192 tokens, kilobytes each with
  // logprobs) held here until the write timeout, a slot busy all along.
  if (events_bytes_ > kMaxStreamBacklogBytes) return ClientGone();
  PumpStream();
}

// The one place that decides what a stream writes next.
void Session::PumpStream() {
  if (state_ != State::kStreamIdle) return;  // a write is in flight; its handler pumps again
  if (!events_.empty()) {
    writing_ = std::move(events_.front());
    events_.pop_front();
    events_bytes_ -= writing_.size();
    SetState(State::kStreamWriting);
    stream_.expires_after(server_->options_.write_timeout);
    auto on_written = beast::bind_front_handler(&Session::OnStreamWritten, shared_from_this());
    if (Chunked()) {
      net::async_write(stream_, http::make_chunk(net::buffer(writing_)), std::move(on_written));
    } else {
      net::async_write(stream_, net::buffer(writing_), std::move(on_written));
    }
    return;
  }
  if (job_ != nullptr) return;  // more events will come
  // Everything is written and the job is done: end the stream.
  server_->metrics_->CountRequest(200);
  if (!Chunked()) return EndRequest(false);  // close-delimited: closing ends it
  SetState(State::kWriting);
  stream_.expires_after(server_->options_.write_timeout);
  net::async_write(stream_, http::make_chunk_last(),
                   [self = shared_from_this()](beast::error_code ec, size_t) {
                     self->EndRequest(!ec && self->stream_res_->keep_alive());
                   });
}

void Session::OnStreamWritten(beast::error_code ec, size_t) {
  if (state_ != State::kStreamWriting) return;
  // A client that stops reading or goes away: cancel its generation.
  if (ec) return ClientGone();
  SetState(State::kStreamIdle);
  PumpStream();
}

}  // namespace

void StartHttpSession(tcp::socket socket, HttpServer::Impl* server) {
  std::make_shared<Session>(std::move(socket), server)->Run();
}

}  // namespace dropk
