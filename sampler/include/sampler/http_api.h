// The HTTP API of the sampling service without sockets, as Beast's examples
// keep handle_request(request) -> response: authentication, routing and one
// small function per endpoint. The server's sessions read a request, call
// Route and write what it returns, so every endpoint and every error status
// can be tested without a connection.
//
// Routes: POST /v1/completions; GET (and HEAD) / (the playground page,
// playground.h), /v1/models, /v1/models/{model}, /healthz, /readyz, /metrics. Before
// routing: an HTTP/1.1 request without a Host header, or any with two or a
// malformed one, is a 400 (RFC 9112 3.2); a method other than GET, HEAD and
// POST is a 501 on every target (CONNECT, OPTIONS * included); a target
// that is neither a path nor an http:// URL is a 400. A known route asked
// with the wrong one of those three methods is a 405 with Allow. /healthz and
// /readyz answer 503 (code device_failed, naming the error) once the GPU
// failed (Scheduler::DeviceFailure). Every error is an
// OpenAI-style JSON body (completions.h ErrorBody). With an API key set,
// every route but /healthz and the page needs "Authorization: Bearer <key>"
// (the page's own API calls send the key its user types).
#ifndef DROPK_SAMPLER_HTTP_API_H_
#define DROPK_SAMPLER_HTTP_API_H_

#include <boost/beast/http.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sampler/api_key_file.h"
#include "sampler/completions.h"
#include "sampler/metrics.h"
#include "sampler/scheduler.h"

namespace dropk {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// A complete JSON response with `status` in HTTP `version` (10 or 11;
// anything else is answered in 1.1); payload prepared, keep-alive unset.
HttpResponse JsonResponse(boost::beast::http::status status, unsigned version, std::string body);

// A complete JSON error response for `error` in HTTP `version` (10 or 11;
// anything else is answered in 1.1), with extra headers; payload prepared.
HttpResponse ErrorResponse(const ApiError& error, unsigned version,
                           const HttpHeaders& headers = {});

// What Route decided: either a complete response, or a completion that
// started (job set): its output goes to the listener given to Route, and
// the answer is 200 with one JSON body, or server-sent events when stream.
struct RouteResult {
  HttpResponse response;  // when job == nullptr: final, payload prepared
  std::shared_ptr<CompletionJob> job;
  bool stream = false;
};

struct HttpApiOptions {
  std::string api_key;          // non-empty: every route but /healthz and / needs it
  // When set, the key is this file's, as it is now (api_key is then unused).
  std::shared_ptr<ApiKeyFile> api_key_file{};
  int retry_after_seconds = 1;  // Retry-After on 429
};

// Thread-safe (const); scheduler and metrics must outlive it.
class HttpApi {
 public:
  HttpApi(HttpApiOptions options, Scheduler* scheduler, ServiceMetrics* metrics);

  // Answers one complete request. A HEAD gets the GET route's status and
  // headers (Content-Length included) without the body; its errors (401,
  // 404, 405...) too are headers alone. Only a valid POST
  // /v1/completions starts a job, with `listener`; it is not used otherwise.
  // The response's keep-alive is left to the caller, which knows the
  // connection.
  RouteResult Route(const HttpRequest& request,
                    const std::shared_ptr<CompletionListener>& listener) const;

  // Route's answer when the request's header alone refuses it (version,
  // Host, method, target, API key, route, the route's method: the 400,
  // 401, 404, 405 and 501 above), else nullopt. Reads no body: a session
  // answers with it a request that waits on "Expect: 100-continue", whose
  // body would be sent only to be ignored.
  std::optional<HttpResponse> RefuseEarly(const HttpRequest& request) const;

 private:
  // RefuseEarly's answer, with a HEAD's body still in it.
  std::optional<HttpResponse> Refusal(const HttpRequest& request) const;
  // The error for a missing or wrong API key, or nullopt when allowed:
  // "Bearer KEY", the scheme in any case and followed by one or more spaces.
  std::optional<ApiError> Authorize(const HttpRequest& request, std::string_view path) const;
  // Route's answer with its body, for any method; Route drops a HEAD's.
  RouteResult RouteAny(const HttpRequest& request,
                       const std::shared_ptr<CompletionListener>& listener) const;
  HttpResponse Playground(unsigned version) const;
  // The 503 that /healthz and /readyz answer once the GPU failed
  // (Scheduler::DeviceFailure, code device_failed), else nullopt.
  std::optional<ApiError> DeviceFailed() const;
  HttpResponse Healthz(unsigned version) const;
  HttpResponse Readyz(unsigned version) const;
  HttpResponse Metrics(unsigned version) const;
  HttpResponse Models(unsigned version) const;
  // GET /v1/models/{id}: the served model's object when `id` is its id, else
  // a 404 model_not_found naming `id` and the served id (a 503
  // model_not_ready while nothing is loaded).
  HttpResponse Model(std::string_view id, unsigned version) const;
  RouteResult Completions(const HttpRequest& request,
                          const std::shared_ptr<CompletionListener>& listener) const;

  const HttpApiOptions options_;
  Scheduler* scheduler_;
  ServiceMetrics* metrics_;
};

// Compares in time that depends only on the lengths, not the contents.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace dropk

#endif  // DROPK_SAMPLER_HTTP_API_H_
