#include "sampler/http_api.h"

#include <algorithm>
#include <optional>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/cut_for_message.h"
#include "nlohmann/json.hpp"
#include "sampler/playground.h"

namespace dropk {

namespace http = boost::beast::http;
using json = nlohmann::json;

namespace {

unsigned AnswerVersion(unsigned version) { return version == 10 ? 10 : 11; }

struct Endpoint {
  std::string_view path;
  http::verb method;
};
constexpr Endpoint kEndpoints[] = {
    {"/", http::verb::get},          {"/v1/completions", http::verb::post},
    {"/v1/models", http::verb::get}, {"/healthz", http::verb::get},
    {"/readyz", http::verb::get},    {"/metrics", http::verb::get}};
// OpenAI's "retrieve model", GET /v1/models/{model}: every path under it.
constexpr std::string_view kModelPrefix = "/v1/models/";
constexpr Endpoint kModelEndpoint = {kModelPrefix, http::verb::get};

// The model id of a /v1/models/{model} path, else nullopt.
std::optional<std::string_view> ModelIdOf(std::string_view path) {
  if (path.size() <= kModelPrefix.size() || path.substr(0, kModelPrefix.size()) != kModelPrefix) {
    return std::nullopt;
  }
  return path.substr(kModelPrefix.size());
}

const Endpoint* FindEndpoint(std::string_view path) {
  for (const Endpoint& e : kEndpoints) {
    if (e.path == path) return &e;
  }
  if (ModelIdOf(path)) return &kModelEndpoint;
  return nullptr;
}

// The OpenAI model object of `s`, as /v1/models lists it.
json ModelObject(const ModelSnapshot& s) {
  return {{"id", s.id},
          {"object", "model"},
          {"created", 0},
          {"owned_by", "dropk"},
          {"checkpoint_step", s.step},
          {"context_length", s.config.block_size},
          {"vocab_size", s.config.vocab_size}};
}

// Whether the server implements `method` for some route (RFC 9110 9.1):
// GET, HEAD and POST. Any other (PUT, OPTIONS, CONNECT, an unknown token)
// is a 501 on every target; a 405 is for one of these on a route that
// does not take it.
bool Implemented(http::verb method) {
  return method == http::verb::get || method == http::verb::head || method == http::verb::post;
}

// Whether `c` may appear in a Host field value: uri-host [ ":" port ] is
// made of unreserved, pct-encoded and sub-delims characters, ':' and, for an
// IP literal, '[' and ']' (RFC 3986 3.2.2).
bool IsHostChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("-._~%!$&'()*+,;=:[]").find(c) != std::string_view::npos;
}

// The 400 for a request whose Host fields break RFC 9112 3.2, else nullopt:
// an HTTP/1.1 request without one (HTTP/1.0 clients need not send it), any
// request with more than one, or one whose value is not a host[:port].
std::optional<ApiError> CheckHost(const HttpRequest& request) {
  const size_t count = request.count(http::field::host);
  if (count == 0 && request.version() == 11) {
    return ApiError{400,
                    "the request has no Host header, which every HTTP/1.1 request must carry "
                    "(RFC 9112 3.2); send 'Host: <host>[:<port>]'",
                    "invalid_request_error", "", "missing_host_header"};
  }
  if (count > 1) {
    return ApiError{
        400,
        absl::StrCat("the request has ", count, " Host headers (RFC 9112 3.2 allows exactly one)"),
        "invalid_request_error", "", "invalid_host_header"};
  }
  if (count == 1) {
    const auto value = request[http::field::host];
    const std::string_view host(value.data(), value.size());
    if (!std::all_of(host.begin(), host.end(), IsHostChar)) {
      return ApiError{400,
                      absl::StrCat("the Host header '", CutAndEscapeForMessage(host, 100),
                                   "' is not a host[:port] (RFC 9112 3.2)"),
                      "invalid_request_error", "", "invalid_host_header"};
    }
  }
  return std::nullopt;
}

// The request's method as it was sent ("PUT", or an unknown token).
std::string_view MethodName(const HttpRequest& request) {
  const auto name = request.method_string();
  return std::string_view(name.data(), name.size());
}

// The target of `request` with an absolute form's scheme and authority
// dropped: RFC 9112 3.2.2 says a server must accept the absolute form (what
// a client configured with a proxy sends): "http://host:port/v1/models" is
// the route /v1/models. Other targets are returned as they are.
std::string_view RouteTarget(const HttpRequest& request) {
  std::string_view target(request.target().data(), request.target().size());
  for (const std::string_view scheme : {"http://", "https://"}) {
    // Debian's absl::string_view is its own type, not std::string_view.
    if (target.size() > scheme.size() &&
        absl::EqualsIgnoreCase(absl::string_view(target.data(), scheme.size()),
                               absl::string_view(scheme.data(), scheme.size()))) {
      const size_t slash = target.find('/', scheme.size());
      target = slash == std::string_view::npos ? "/" : target.substr(slash);
    }
  }
  return target;
}

// What a route accepts, for the 405 message and the Allow header.
std::string Allowed(const Endpoint& e) {
  return e.method == http::verb::get ? "GET, HEAD" : std::string(http::to_string(e.method));
}

// A HEAD answer: the status and headers the request would get as a GET,
// Content-Length included (prepared before), and no body.
HttpResponse WithoutBody(HttpResponse res) {
  res.body().clear();
  return res;
}

RouteResult Reply(HttpResponse response) {
  RouteResult out;
  out.response = std::move(response);
  return out;
}

}  // namespace

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

HttpResponse JsonResponse(http::status status, unsigned version, std::string body) {
  HttpResponse res{status, AnswerVersion(version)};
  res.set(http::field::server, "dropk-serve");
  res.set(http::field::content_type, "application/json");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

HttpResponse ErrorResponse(const ApiError& error, unsigned version, const HttpHeaders& headers) {
  HttpResponse res =
      JsonResponse(static_cast<http::status>(error.status), version, ErrorBody(error));
  for (const auto& [k, v] : headers) res.set(k, v);
  return res;
}

HttpApi::HttpApi(HttpApiOptions options, Scheduler* scheduler, ServiceMetrics* metrics)
    : options_(std::move(options)), scheduler_(scheduler), metrics_(metrics) {}

std::optional<ApiError> HttpApi::Authorize(const HttpRequest& request,
                                           std::string_view path) const {
  // Liveness probes carry no credentials; the playground page holds no
  // data (a browser cannot send a bearer token when it opens a page), and
  // every API call it makes carries the key the user types.
  if (path == "/healthz" || path == "/") return std::nullopt;
  const std::string key =
      options_.api_key_file != nullptr ? options_.api_key_file->Current() : options_.api_key;
  if (key.empty()) return std::nullopt;
  const auto auth = request[http::field::authorization];
  absl::string_view given(auth.data(), auth.size());
  // RFC 9110 11.4: the scheme is case-insensitive and one or more spaces
  // follow it; "bearer KEY" (as some clients write it) was a 401.
  constexpr absl::string_view kBearer = "Bearer ";
  if (given.size() > kBearer.size() &&
      absl::EqualsIgnoreCase(given.substr(0, kBearer.size()), kBearer)) {
    given.remove_prefix(kBearer.size());
    while (!given.empty() && given.front() == ' ') given.remove_prefix(1);
    if (ConstantTimeEquals(std::string_view(given.data(), given.size()), key)) {
      return std::nullopt;
    }
  }
  return ApiError{401, "missing or invalid API key (Authorization: Bearer <key>)",
                  "authentication_error", "", "invalid_api_key"};
}

RouteResult HttpApi::Route(const HttpRequest& request,
                           const std::shared_ptr<CompletionListener>& listener) const {
  RouteResult routed = RouteAny(request, listener);
  // RFC 9110 9.3.2: no answer to a HEAD carries content, an error's
  // included. A 404, 405 or 401 sent its JSON body, which a client reading
  // the answer's header alone took for the start of the next answer on the
  // connection (Go's and Node's clients read it as a malformed response).
  // HEAD never starts a job (POST /v1/completions is its only route).
  if (request.method() == http::verb::head)
    routed.response = WithoutBody(std::move(routed.response));
  return routed;
}

std::optional<HttpResponse> HttpApi::RefuseEarly(const HttpRequest& request) const {
  std::optional<HttpResponse> refused = Refusal(request);
  if (refused && request.method() == http::verb::head) *refused = WithoutBody(std::move(*refused));
  return refused;
}

std::optional<HttpResponse> HttpApi::Refusal(const HttpRequest& request) const {
  const unsigned version = request.version();
  if (version != 10 && version != 11) {
    return ErrorResponse({400,
                          absl::StrCat("HTTP/", version / 10, ".", version % 10,
                                       " is not supported; use HTTP/1.1 or HTTP/1.0"),
                          "invalid_request_error", "", "unsupported_http_version"},
                         11);
  }
  if (std::optional<ApiError> bad_host = CheckHost(request)) {
    return ErrorResponse(*bad_host, version);
  }
  // RFC 9110 9.1 and 15.6.2: a method the server supports for no target is
  // a 501, whatever the target; CONNECT (authority form, "host:port") and
  // OPTIONS (asterisk form, "*") were 404s naming the target as a route.
  if (!Implemented(request.method())) {
    return ErrorResponse(
        {501,
         absl::StrCat("the method ", CutAndEscapeForMessage(MethodName(request), 40),
                      " is not implemented; dropk-serve answers GET, HEAD and POST"),
         "invalid_request_error", "", "method_not_implemented"},
        version);
  }
  const std::string_view target = RouteTarget(request);
  // RFC 9112 3.2: GET, HEAD and POST take a path (origin form) or an
  // absolute URL; "*" and "host:port" belong to OPTIONS and CONNECT.
  if (!target.starts_with('/')) {
    return ErrorResponse({400,
                          absl::StrCat("the request target '", CutAndEscapeForMessage(target, 200),
                                       "' is neither a path starting with '/' nor an http:// URL"),
                          "invalid_request_error", "", "bad_request"},
                         version);
  }
  const std::string_view path = target.substr(0, target.find('?'));
  if (std::optional<ApiError> denied = Authorize(request, path)) {
    return ErrorResponse(*denied, version, {{"WWW-Authenticate", "Bearer"}});
  }
  const Endpoint* endpoint = FindEndpoint(path);
  if (endpoint == nullptr) {
    // The path at most 200 bytes (a 15 KB path made a 15 KB line), escaped:
    // a U+202E in it turned the rest of the message around.
    return ErrorResponse({404, absl::StrCat("no route ", CutAndEscapeForMessage(path, 200)),
                          "invalid_request_error", "", "not_found"},
                         version);
  }
  const http::verb method = request.method();
  const bool head = method == http::verb::head && endpoint->method == http::verb::get;
  if (method != endpoint->method && !head) {
    return ErrorResponse(
        {405, absl::StrCat(CutAndEscapeForMessage(path, 200), " accepts only ", Allowed(*endpoint)),
         "invalid_request_error", "", "method_not_allowed"},
        version, {{"Allow", Allowed(*endpoint)}});
  }
  return std::nullopt;
}

RouteResult HttpApi::RouteAny(const HttpRequest& request,
                              const std::shared_ptr<CompletionListener>& listener) const {
  if (std::optional<HttpResponse> refused = Refusal(request)) return Reply(std::move(*refused));
  // Refusal saw a path: an endpoint's, with its method.
  const std::string_view target = RouteTarget(request);
  const std::string_view path = target.substr(0, target.find('?'));
  const unsigned version = request.version();
  if (path == "/v1/completions") return Completions(request, listener);
  if (std::optional<std::string_view> id = ModelIdOf(path)) return Reply(Model(*id, version));
  HttpResponse res = path == "/"          ? Playground(version)
                     : path == "/healthz" ? Healthz(version)
                     : path == "/readyz"  ? Readyz(version)
                     : path == "/metrics" ? Metrics(version)
                                          : Models(version);
  return Reply(std::move(res));  // a HEAD's body is dropped by Route
}

HttpResponse HttpApi::Playground(unsigned version) const {
  HttpResponse res{http::status::ok, AnswerVersion(version)};
  res.set(http::field::server, "dropk-serve");
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.set(http::field::cache_control, "no-cache");
  res.set("Content-Security-Policy", kPlaygroundContentSecurityPolicy);
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::string(PlaygroundHtml());
  res.prepare_payload();
  return res;
}

std::optional<ApiError> HttpApi::DeviceFailed() const {
  std::string failure = scheduler_->DeviceFailure();
  if (failure.empty()) return std::nullopt;
  return ApiError{503, absl::StrCat(failure, "; restart dropk-serve (it exits to be restarted)"),
                  "service_unavailable", "", "device_failed"};
}

HttpResponse HttpApi::Healthz(unsigned version) const {
  // Liveness: a process whose GPU failed is not alive in any useful sense
  // (the CUDA context cannot recover); a probe must restart it.
  if (std::optional<ApiError> failed = DeviceFailed()) return ErrorResponse(*failed, version);
  return JsonResponse(http::status::ok, version, R"({"status":"ok"})");
}

HttpResponse HttpApi::Readyz(unsigned version) const {
  if (std::optional<ApiError> failed = DeviceFailed()) return ErrorResponse(*failed, version);
  const std::shared_ptr<ServingModel> model = scheduler_->CurrentModel();
  const std::string refusal = metrics_->ReloadRefusal();
  if (model == nullptr) {
    return ErrorResponse({503,
                          refusal.empty() ? "no checkpoint is loaded yet"
                                          : "no checkpoint is loaded yet: " + refusal,
                          "service_unavailable", "", "model_not_ready"},
                         version);
  }
  // Ready on the model served, though a newer checkpoint was refused: the
  // answer says which and why, for whoever watches the rollout.
  json ready{{"status", "ready"},
             {"model", model->snapshot().id},
             {"checkpoint_step", model->snapshot().step}};
  if (!refusal.empty()) ready["reload_refused"] = refusal;
  return JsonResponse(http::status::ok, version, ready.dump());
}

HttpResponse HttpApi::Metrics(unsigned version) const {
  HttpResponse res{http::status::ok, AnswerVersion(version)};
  res.set(http::field::server, "dropk-serve");
  res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.body() = metrics_->Render();
  res.prepare_payload();
  return res;
}

HttpResponse HttpApi::Models(unsigned version) const {
  const std::shared_ptr<ServingModel> model = scheduler_->CurrentModel();
  json data = json::array();
  if (model != nullptr) data.push_back(ModelObject(model->snapshot()));
  return JsonResponse(http::status::ok, version, json{{"object", "list"}, {"data", data}}.dump());
}

HttpResponse HttpApi::Model(std::string_view id, unsigned version) const {
  const std::shared_ptr<ServingModel> model = scheduler_->CurrentModel();
  if (model == nullptr) {
    return ErrorResponse(
        {503, "no checkpoint is loaded yet", "service_unavailable", "", "model_not_ready"},
        version);
  }
  const ModelSnapshot& s = model->snapshot();
  if (id != s.id) {
    return ErrorResponse({404,
                          absl::StrCat("the model '", CutAndEscapeForMessage(id, 100),
                                       "' does not exist; this server serves '", s.id, "'"),
                          "invalid_request_error", "model", "model_not_found"},
                         version);
  }
  return JsonResponse(http::status::ok, version, ModelObject(s).dump());
}

RouteResult HttpApi::Completions(const HttpRequest& request,
                                 const std::shared_ptr<CompletionListener>& listener) const {
  // RFC 9110 15.5.16: a content coding the server cannot decode is a 415. A
  // gzipped body was read as JSON and refused as "not valid JSON (... invalid
  // literal)", which named neither the header nor the fix.
  // Every Content-Encoding header counts (the codings apply in order): one
  // saying "identity" before another saying "gzip" let the gzipped body
  // through, as only the first was looked at.
  absl::string_view encoding;
  const auto headers = request.equal_range(http::field::content_encoding);
  for (auto it = headers.first; it != headers.second; ++it) {
    const absl::string_view value(it->value().data(), it->value().size());
    if (!value.empty() && !absl::EqualsIgnoreCase(value, "identity")) {
      encoding = value;
      break;
    }
  }
  if (!encoding.empty()) {
    return Reply(ErrorResponse(
        {415,
         absl::StrCat(
             "Content-Encoding '",
             CutAndEscapeForMessage(std::string_view(encoding.data(), encoding.size()), 40),
             "' is not supported; send the JSON body uncompressed"),
         "invalid_request_error", "", "unsupported_content_encoding"},
        request.version(), {{"Accept-Encoding", "identity"}}));
  }
  auto parsed = ParseCompletionRequest(request.body());
  if (auto* e = std::get_if<ApiError>(&parsed)) return Reply(ErrorResponse(*e, request.version()));
  const CompletionRequest& completion = std::get<CompletionRequest>(parsed);
  auto started = CompletionJob::Start(completion, scheduler_->CurrentModel(), scheduler_, listener);
  if (auto* e = std::get_if<ApiError>(&started)) {
    HttpHeaders headers;
    if (e->status == 429) {
      headers.emplace_back("Retry-After", std::to_string(options_.retry_after_seconds));
    }
    return Reply(ErrorResponse(*e, request.version(), headers));
  }
  RouteResult out;
  out.job = std::get<std::shared_ptr<CompletionJob>>(std::move(started));
  out.stream = completion.stream;
  return out;
}

}  // namespace dropk
