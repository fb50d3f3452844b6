// The HTTP API without a connection: HttpApi::Route for every endpoint and
// every error status (auth, routing, methods, HEAD, versions, the
// completions outcomes), each error with its OpenAI JSON body.
#include "sampler/http_api.h"

#include <cstdio>
#include <string>
#include <thread>
#include <variant>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "support/completion_collector.h"
#include "support/temp_dir.h"
#include "test_util.h"

namespace dropk {
namespace {

namespace http = boost::beast::http;
using json = nlohmann::json;

using Collector = testing::CompletionCollector;

// The body a completion's result makes: the answer, or the error's JSON.
std::string BodyOf(CompletionResult result) {
  if (const auto* error = std::get_if<ApiError>(&result)) return ErrorBody(*error);
  return std::get<std::string>(std::move(result));
}

// A request as clients send it: with a Host header (RFC 9112 3.2).
HttpRequest Request(http::verb method, const std::string& target, unsigned version = 11) {
  HttpRequest req{method, target, version};
  req.set(http::field::host, "127.0.0.1:8080");
  return req;
}

struct Api {
  explicit Api(HttpApiOptions options = {}, SchedulerOptions sched = {}, bool load = true) {
    scheduler = Scheduler::Create(sched, &metrics).value();
    if (load) {
      EXPECT_TRUE(scheduler->SetModel(testing::TestSnapshot(3, 64)).ok());
    }
    api = std::make_unique<HttpApi>(options, scheduler.get(), &metrics);
  }
  RouteResult Route(http::verb method, const std::string& target, const std::string& body = "",
                    unsigned version = 11, const std::string& auth = "") {
    HttpRequest req = Request(method, target, version);
    if (!auth.empty()) req.set(http::field::authorization, auth);
    req.body() = body;
    req.prepare_payload();
    return api->Route(req, collector);
  }
  ServiceMetrics metrics;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<HttpApi> api;
  std::shared_ptr<Collector> collector = std::make_shared<Collector>();
};

// An answered (not started) route with `status` and an OpenAI error body.
void ExpectError(const RouteResult& r, int status, const std::string& code) {
  ASSERT_EQ(r.job, nullptr);
  EXPECT_EQ(r.response.result_int(), status) << r.response.body();
  EXPECT_EQ(r.response[http::field::content_type], "application/json");
  EXPECT_EQ(r.response[http::field::content_length], std::to_string(r.response.body().size()));
  const json j = json::parse(r.response.body(), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.response.body();
  for (const char* k : {"message", "type", "param", "code"}) {
    EXPECT_TRUE(j["error"].contains(k)) << r.response.body();
  }
  EXPECT_EQ(j["error"]["code"], code) << r.response.body();
}

// The error message of a route's answer.
std::string MessageOf(const RouteResult& r) {
  return json::parse(r.response.body())["error"]["message"].get<std::string>();
}

TEST(HttpApiTest, GetRoutes) {
  Api a;
  const RouteResult health = a.Route(http::verb::get, "/healthz");
  EXPECT_EQ(health.response.result_int(), 200);
  EXPECT_EQ(json::parse(health.response.body())["status"], "ok");
  const RouteResult ready = a.Route(http::verb::get, "/readyz?probe=1");
  EXPECT_EQ(ready.response.result_int(), 200);
  EXPECT_EQ(json::parse(ready.response.body())["checkpoint_step"], 100);
  const RouteResult models = a.Route(http::verb::get, "/v1/models");
  EXPECT_EQ(json::parse(models.response.body())["data"][0]["context_length"], 64);
  const RouteResult metrics = a.Route(http::verb::get, "/metrics");
  EXPECT_EQ(metrics.response.result_int(), 200);
  EXPECT_NE(metrics.response.body().find("dropk_checkpoint_step 100"), std::string::npos);
  EXPECT_EQ(metrics.response[http::field::content_type],
            "text/plain; version=0.0.4; charset=utf-8");
}

// A refused hot reload was in the log and a counter alone: /readyz said
// "ready" on the old model and gave no reason. It stays 200 (the old model
// serves) and names the refusal; with no model, the 503 says why; the
// dropk_reload_refused gauge is 1 while a refusal stands.
TEST(HttpApiTest, ReadyzNamesARefusedReload) {
  Api a;
  const std::string why = "/ckpt/step-00000200: weights.data: CRC mismatch";
  a.metrics.SetReloadRefusal(why);
  const RouteResult ready = a.Route(http::verb::get, "/readyz");
  EXPECT_EQ(ready.response.result_int(), 200);
  const json body = json::parse(ready.response.body());
  EXPECT_EQ(body["checkpoint_step"], 100);
  EXPECT_EQ(body["reload_refused"], why) << ready.response.body();
  EXPECT_NE(a.Route(http::verb::get, "/metrics").response.body().find("dropk_reload_refused 1\n"),
            std::string::npos);

  a.metrics.SetReloadRefusal("");
  const json cleared = json::parse(a.Route(http::verb::get, "/readyz").response.body());
  EXPECT_FALSE(cleared.contains("reload_refused")) << cleared.dump();
  EXPECT_NE(a.Route(http::verb::get, "/metrics").response.body().find("dropk_reload_refused 0\n"),
            std::string::npos);

  Api none({}, {}, /*load=*/false);
  none.metrics.SetReloadRefusal(why);
  const RouteResult not_ready = none.Route(http::verb::get, "/readyz");
  ExpectError(not_ready, 503, "model_not_ready");
  EXPECT_EQ(MessageOf(not_ready), "no checkpoint is loaded yet: " + why);
}

// Issue 9: HEAD was 405 on every route. Now each GET route answers HEAD with
// the GET status and headers, Content-Length included, and no body.
TEST(HttpApiTest, HeadOnEveryGetRoute) {
  Api a;
  for (const char* path : {"/", "/healthz", "/readyz", "/metrics", "/v1/models"}) {
    SCOPED_TRACE(path);
    const RouteResult get = a.Route(http::verb::get, path);
    const RouteResult head = a.Route(http::verb::head, path);
    EXPECT_EQ(head.response.result_int(), 200);
    EXPECT_TRUE(head.response.body().empty());
    EXPECT_EQ(head.response[http::field::content_type], get.response[http::field::content_type]);
    if (std::string(path) != "/metrics") {  // metrics change between the two calls
      EXPECT_EQ(head.response[http::field::content_length],
                std::to_string(get.response.body().size()));
    }
  }
  // HEAD is no way around a POST route.
  const RouteResult r = a.Route(http::verb::head, "/v1/completions");
  EXPECT_EQ(r.response.result_int(), 405);
  EXPECT_EQ(r.response[http::field::allow], "POST");
}

// A HEAD that ends in an error (no route, a POST route, no API key, an
// unknown version) sent the error's JSON body: a client that reads a HEAD
// answer's header alone, as RFC 9110 says it ends, took those bytes for the
// start of the next answer on the connection. Now the error's status and
// headers come alone, Content-Length as the GET's error would have it.
TEST(HttpApiTest, HeadErrorsAreHeadersAlone) {
  Api a({.api_key = "k3y"});
  const struct {
    const char* path;
    unsigned version;
    int status;
  } kCases[] = {{"/nope", 11, 404},
                {"/v1/models", 11, 401},
                {"/healthz", 12, 400},
                {"/v1/completions", 11, 405}};
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.path);
    const std::string auth = c.status == 401 ? "" : "Bearer k3y";
    const RouteResult head = a.Route(http::verb::head, c.path, "", c.version, auth);
    ASSERT_EQ(head.job, nullptr);
    EXPECT_EQ(head.response.result_int(), c.status);
    EXPECT_EQ(head.response.body(), "");
    EXPECT_EQ(head.response[http::field::content_type], "application/json");
    if (c.status == 405) {
      EXPECT_EQ(head.response[http::field::allow], "POST");
      continue;
    }
    const RouteResult get = a.Route(http::verb::get, c.path, "", c.version, auth);
    ExpectError(get, c.status,
                json::parse(get.response.body())["error"]["code"].get<std::string>());
    EXPECT_EQ(head.response[http::field::content_length],
              std::to_string(get.response.body().size()));
  }
}

// Issue 14: the playground page at /, self-contained (its CSP lets it load
// nothing from elsewhere), open without the key (a browser opening a page
// sends none) while the API it calls still needs it.
TEST(HttpApiTest, PlaygroundPageAtRoot) {
  Api a({.api_key = "k3y"});
  const RouteResult page = a.Route(http::verb::get, "/");
  ASSERT_EQ(page.response.result_int(), 200);
  EXPECT_EQ(page.response[http::field::content_type], "text/html; charset=utf-8");
  const std::string& html = page.response.body();
  EXPECT_EQ(html.rfind("<!doctype html>", 0), 0u);
  for (const char* id :
       {"id=\"prompt\"", "id=\"top_k\"", "id=\"top_p\"", "id=\"temperature\"", "id=\"seed\"",
        "id=\"max_tokens\"", "id=\"compare\"", "id=\"api_key\"", "/v1/completions"}) {
    EXPECT_NE(html.find(id), std::string::npos) << id;
  }
  // No CDN: nothing is fetched from another origin.
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_NE(std::string(page.response["Content-Security-Policy"]).find("default-src 'none'"),
            std::string::npos);
  ExpectError(a.Route(http::verb::post, "/", "{}"), 405, "method_not_allowed");
  ExpectError(a.Route(http::verb::get, "/v1/models"), 401, "invalid_api_key");
}

TEST(HttpApiTest, UnknownRouteAndWrongMethod) {
  Api a;
  ExpectError(a.Route(http::verb::get, "/nope"), 404, "not_found");
  const RouteResult r = a.Route(http::verb::post, "/healthz", "{}");
  ExpectError(r, 405, "method_not_allowed");
  EXPECT_EQ(r.response[http::field::allow], "GET, HEAD");
  ExpectError(a.Route(http::verb::get, "/v1/completions"), 405, "method_not_allowed");
  // A long path is named by its first 200 bytes (it was repeated whole).
  const RouteResult long_path = a.Route(http::verb::get, "/" + std::string(15000, 'x'));
  ExpectError(long_path, 404, "not_found");
  const std::string message =
      json::parse(long_path.response.body())["error"]["message"].get<std::string>();
  EXPECT_EQ(message, "no route /" + std::string(199, 'x') + "...");
  // A cut that falls inside a UTF-8 character keeps the character out
  // whole: it showed half of it, which the JSON body made U+FFFD.
  const RouteResult accented = a.Route(http::verb::get, "/" + std::string(198, 'x') + "\xc3\xa9z");
  EXPECT_EQ(MessageOf(accented), "no route /" + std::string(198, 'x') + "...");
}

// A request target in absolute form (what a client configured with a proxy
// sends) was a 404 "no route http://..."; RFC 9112 requires servers to
// accept it.
TEST(HttpApiTest, AbsoluteFormTargetsRouteByTheirPath) {
  Api a;
  EXPECT_EQ(a.Route(http::verb::get, "http://127.0.0.1:8080/healthz").response.result_int(), 200);
  EXPECT_EQ(a.Route(http::verb::get, "HTTP://x/readyz?probe=1").response.result_int(), 200);
  EXPECT_EQ(a.Route(http::verb::get, "http://x").response.result_int(), 200);  // the page at /
  ExpectError(a.Route(http::verb::get, "http://x/nope"), 404, "not_found");
  const RouteResult r =
      a.Route(http::verb::post, "http://x/v1/completions", R"({"prompt":"ab","max_tokens":2})");
  ASSERT_NE(r.job, nullptr);
  a.collector->Wait();
}

TEST(HttpApiTest, UnsupportedHttpVersionsAre400) {
  Api a;
  for (unsigned version : {9u, 12u, 20u}) {
    const RouteResult r = a.Route(http::verb::get, "/healthz", "", version);
    ExpectError(r, 400, "unsupported_http_version");
    EXPECT_EQ(r.response.version(), 11u);
  }
  EXPECT_EQ(a.Route(http::verb::get, "/healthz", "", 10).response.version(), 10u);
}

TEST(HttpApiTest, ApiKey) {
  Api a({.api_key = "k3y"});
  EXPECT_EQ(a.Route(http::verb::get, "/healthz").response.result_int(), 200);
  for (const char* path : {"/readyz", "/metrics", "/v1/models", "/v1/completions", "/nope"}) {
    SCOPED_TRACE(path);
    const RouteResult r = a.Route(http::verb::get, path);
    ExpectError(r, 401, "invalid_api_key");
    EXPECT_EQ(r.response[http::field::www_authenticate], "Bearer");
    ExpectError(a.Route(http::verb::get, path, "", 11, "Bearer k3"), 401, "invalid_api_key");
    ExpectError(a.Route(http::verb::get, path, "", 11, "k3y"), 401, "invalid_api_key");
  }
  EXPECT_EQ(a.Route(http::verb::get, "/v1/models", "", 11, "Bearer k3y").response.result_int(),
            200);
}

// RFC 9110 11.4: the auth scheme is case-insensitive and may be followed by
// several spaces; "bearer k3y" was a 401. The key itself is still exact.
TEST(HttpApiTest, ApiKeySchemeIsCaseInsensitive) {
  Api a({.api_key = "k3y"});
  for (const char* auth : {"bearer k3y", "BEARER k3y", "Bearer  k3y"}) {
    SCOPED_TRACE(auth);
    EXPECT_EQ(a.Route(http::verb::get, "/v1/models", "", 11, auth).response.result_int(), 200);
  }
  for (const char* auth : {"bearer K3Y", "Bearer", "Bearer ", "Bearerk3y", "Basic k3y"}) {
    SCOPED_TRACE(auth);
    ExpectError(a.Route(http::verb::get, "/v1/models", "", 11, auth), 401, "invalid_api_key");
  }
}

// An --api-key-file is read again when it changes: a rotated key was
// ignored until a restart, and the old one kept working without a word. A
// file that changes into no key (empty, removed) keeps the last good key.
TEST(HttpApiTest, ApiKeyFileRotatesWhenTheFileChanges) {
  test_util::ScopedTempDir dir("api_key_file");
  const std::string file = dir.Path("key");
  auto write = [](const std::string& path, const std::string& text) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fputs(text.c_str(), f);
    std::fclose(f);
  };
  write(file, "first-key\n");
  absl::StatusOr<std::shared_ptr<ApiKeyFile>> key = ApiKeyFile::Open(file);
  ASSERT_TRUE(key.ok()) << key.status();
  HttpApiOptions options;
  options.api_key_file = *key;
  Api a(options);
  auto status = [&](const std::string& auth) {
    return a.Route(http::verb::get, "/v1/models", "", 11, auth).response.result_int();
  };
  EXPECT_EQ(status("Bearer first-key"), 200);
  EXPECT_EQ(status(""), 401);

  write(file, "the-second-key\n");  // edited in place
  EXPECT_EQ(status("Bearer the-second-key"), 200);
  EXPECT_EQ(status("Bearer first-key"), 401);

  write(dir.Path("key.new"), "third\n");  // renamed over it, as a Secret is
  ASSERT_EQ(std::rename(dir.Path("key.new").c_str(), file.c_str()), 0);
  EXPECT_EQ(status("Bearer third"), 200);
  EXPECT_EQ(status("Bearer the-second-key"), 401);

  write(file, "");  // emptied: no key at all would let everyone in
  EXPECT_EQ(status("Bearer third"), 200);
  EXPECT_EQ(status(""), 401);
  ASSERT_EQ(std::remove(file.c_str()), 0);
  EXPECT_EQ(status("Bearer third"), 200);
  write(file, "fourth-key");
  EXPECT_EQ(status("Bearer fourth-key"), 200);
  EXPECT_EQ(status("Bearer third"), 401);
}

TEST(HttpApiTest, CompletionStartsAJobWhoseBodyIsTheAnswer) {
  Api a;
  const RouteResult r =
      a.Route(http::verb::post, "/v1/completions", R"({"prompt":"ab","max_tokens":5,"seed":1})");
  ASSERT_NE(r.job, nullptr);
  EXPECT_FALSE(r.stream);
  const json body = json::parse(BodyOf(a.collector->Wait()));
  EXPECT_EQ(body["usage"]["completion_tokens"], 5);
  EXPECT_EQ(body["seed"], 1);
}

TEST(HttpApiTest, StreamedCompletionSendsEventsEndingInDone) {
  Api a;
  const RouteResult r = a.Route(http::verb::post, "/v1/completions",
                                R"({"prompt":"ab","max_tokens":5,"stream":true})");
  ASSERT_NE(r.job, nullptr);
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(BodyOf(a.collector->Wait()), "");
  ASSERT_FALSE(a.collector->events().empty());
  EXPECT_EQ(a.collector->events().back(), "data: [DONE]\n\n");
}

TEST(HttpApiTest, CompletionErrors) {
  Api a;
  ExpectError(a.Route(http::verb::post, "/v1/completions", "{nope"), 400, "invalid_json");
  ExpectError(a.Route(http::verb::post, "/v1/completions", R"({"prompt":"a","temperature":1e7})"),
              400, "invalid_value");
  ExpectError(
      a.Route(http::verb::post, "/v1/completions", json{{"prompt", std::string(64, 'a')}}.dump()),
      400, "context_length_exceeded");
  ExpectError(a.Route(http::verb::post, "/v1/completions",
                      R"({"prompt":["a","b"],"n":16,"max_tokens":8192})"),
              400, "request_too_costly");
  Api none({}, {}, /*load=*/false);
  ExpectError(none.Route(http::verb::post, "/v1/completions", R"({"prompt":"a"})"), 503,
              "model_not_ready");
  ExpectError(none.Route(http::verb::get, "/readyz"), 503, "model_not_ready");
  EXPECT_EQ(json::parse(none.Route(http::verb::get, "/v1/models").response.body())["data"].size(),
            0u);
}

// A requested model name holding a U+202E (right-to-left override) was
// quoted raw: the rest of the 404's message showed backwards. It is escaped.
TEST(HttpApiTest, AnUnknownModelNameIsQuotedEscaped) {
  Api a;
  const RouteResult r =
      a.Route(http::verb::post, "/v1/completions",
              json{{"model", "gpt\u202E-4\u0085"}, {"prompt", "ab"}, {"max_tokens", 1}}.dump());
  ExpectError(r, 404, "model_not_found");
  EXPECT_EQ(MessageOf(r).rfind("the model 'gpt\\u202e-4\\u0085' does not exist; ", 0), 0u)
      << MessageOf(r);
}

// Client text that the routing errors quote (the Host header, the request
// target, a path with no route or the wrong method, a model id, a
// Content-Encoding) was quoted raw: a U+202E turned the rest of the message
// around and a control byte reached the log line. Each is escaped
// (EscapeForMessage) after being cut short.
TEST(HttpApiTest, ClientTextInRoutingErrorsIsQuotedEscaped) {
  Api a;
  HttpRequest host = Request(http::verb::get, "/healthz");
  host.set(http::field::host, "ev\u202Eil\x01:80");
  const RouteResult bad_host = a.api->Route(host, a.collector);
  ExpectError(bad_host, 400, "invalid_host_header");
  EXPECT_EQ(MessageOf(bad_host),
            "the Host header 'ev\\u202eil\\u0001:80' is not a host[:port] (RFC 9112 3.2)");
  const RouteResult target = a.Route(http::verb::get, "x\u202Ey");
  ExpectError(target, 400, "bad_request");
  EXPECT_EQ(MessageOf(target),
            "the request target 'x\\u202ey' is neither a path starting with '/' nor an "
            "http:// URL");
  const RouteResult route = a.Route(http::verb::get, "/a\u202Eb\u200B?q=\u2066");
  ExpectError(route, 404, "not_found");
  EXPECT_EQ(MessageOf(route), "no route /a\\u202eb\\u200b");
  const RouteResult method = a.Route(http::verb::post, "/v1/models/m\u202Ex");
  ExpectError(method, 405, "method_not_allowed");
  EXPECT_EQ(MessageOf(method), "/v1/models/m\\u202ex accepts only GET, HEAD");
  const RouteResult model = a.Route(http::verb::get, "/v1/models/m\u202Ex\u0085");
  ExpectError(model, 404, "model_not_found");
  EXPECT_EQ(MessageOf(model),
            "the model 'm\\u202ex\\u0085' does not exist; this server serves 'dropk-step-100'");
  // Cut first, then escaped: the escape is never split by the cut.
  const RouteResult long_model =
      a.Route(http::verb::get, "/v1/models/" + std::string(99, 'm') + "\u202E");
  EXPECT_EQ(MessageOf(long_model), "the model '" + std::string(99, 'm') +
                                       "...' does not exist; this server serves 'dropk-step-100'");
  HttpRequest coded = Request(http::verb::post, "/v1/completions");
  coded.set(http::field::content_encoding, "gz\u202Eip");
  coded.body() = R"({"prompt":"a","max_tokens":1})";
  coded.prepare_payload();
  const RouteResult encoding = a.api->Route(coded, a.collector);
  ExpectError(encoding, 415, "unsupported_content_encoding");
  EXPECT_EQ(MessageOf(encoding),
            "Content-Encoding 'gz\\u202eip' is not supported; send the JSON body uncompressed");
}

// 'model' was read for its type only: a request for a model the server does
// not serve ("gpt-4", a checkpoint replaced since) ran on whatever was
// loaded. OpenAI answers 404 model_not_found; so does dropk-serve, naming
// what was asked for and what is served. Left out, it means the served one.
TEST(HttpApiTest, AnUnknownModelIs404NamingBothModels) {
  Api a;
  const RouteResult r = a.Route(http::verb::post, "/v1/completions",
                                R"({"model":"gpt-4","prompt":"ab","max_tokens":2})");
  ExpectError(r, 404, "model_not_found");
  EXPECT_EQ(json::parse(r.response.body())["error"]["param"], "model");
  EXPECT_EQ(MessageOf(r),
            "the model 'gpt-4' does not exist; this server serves 'dropk-step-100' (GET "
            "/v1/models lists it; leave 'model' out to use whichever model is served)");
  // The check comes before the request's other limits: the model is what is wrong.
  ExpectError(a.Route(http::verb::post, "/v1/completions",
                      R"({"model":"x","prompt":["a","b"],"n":16,"max_tokens":8192})"),
              404, "model_not_found");
  // A hostile name is quoted by its first 100 bytes, not whole.
  const RouteResult huge = a.Route(
      http::verb::post, "/v1/completions",
      json{{"model", std::string(100000, 'm')}, {"prompt", "ab"}, {"max_tokens", 1}}.dump());
  ExpectError(huge, 404, "model_not_found");
  EXPECT_LT(MessageOf(huge).size(), 300u);
  EXPECT_NE(MessageOf(huge).find(std::string(100, 'm') + "..."), std::string::npos);
  // The served id, as /v1/models lists it, runs; so does no model at all.
  const std::string served =
      json::parse(a.Route(http::verb::get, "/v1/models").response.body())["data"][0]["id"]
          .get<std::string>();
  EXPECT_EQ(served, "dropk-step-100");
  for (const std::string& body :
       {json{{"model", served}, {"prompt", "ab"}, {"max_tokens", 1}}.dump(),
        json{{"prompt", "ab"}, {"max_tokens", 1}}.dump(),
        json{{"model", nullptr}, {"prompt", "ab"}, {"max_tokens", 1}}.dump()}) {
    SCOPED_TRACE(body);
    a.collector = std::make_shared<Collector>();
    const RouteResult ok = a.Route(http::verb::post, "/v1/completions", body);
    ASSERT_NE(ok.job, nullptr) << ok.response.body();
    EXPECT_EQ(json::parse(BodyOf(a.collector->Wait()))["model"], served);
  }
  // A model that is not a string is the request's shape: a 400 naming it.
  const RouteResult typed =
      a.Route(http::verb::post, "/v1/completions", R"({"model":["x"],"prompt":"ab"})");
  ExpectError(typed, 400, "invalid_type");
  EXPECT_EQ(json::parse(typed.response.body())["error"]["param"], "model");
  // With nothing loaded the answer is still "not ready", not "no such model".
  Api none({}, {}, /*load=*/false);
  ExpectError(none.Route(http::verb::post, "/v1/completions", R"({"model":"x","prompt":"a"})"), 503,
              "model_not_ready");
}

// RFC 9112 3.2: an HTTP/1.1 request without a Host header was answered
// 200. It is a 400 naming the header, as is any request with two Host
// headers or one that is not a host[:port]; HTTP/1.0 may omit it.
TEST(HttpApiTest, HostHeaderIsRequiredInHttp11) {
  Api a;
  HttpRequest bare{http::verb::get, "/healthz", 11};
  const RouteResult missing = a.api->Route(bare, a.collector);
  ExpectError(missing, 400, "missing_host_header");
  EXPECT_NE(MessageOf(missing).find("no Host header"), std::string::npos) << MessageOf(missing);
  HttpRequest head{http::verb::head, "/healthz", 11};
  const RouteResult head_missing = a.api->Route(head, a.collector);
  EXPECT_EQ(head_missing.response.result_int(), 400);
  EXPECT_EQ(head_missing.response.body(), "");
  HttpRequest post{http::verb::post, "/v1/completions", 11};
  post.body() = R"({"prompt":"a","max_tokens":1})";
  post.prepare_payload();
  ExpectError(a.api->Route(post, a.collector), 400, "missing_host_header");
  // HTTP/1.0 predates Host: still served.
  HttpRequest old{http::verb::get, "/healthz", 10};
  EXPECT_EQ(a.api->Route(old, a.collector).response.result_int(), 200);
  HttpRequest twice = Request(http::verb::get, "/healthz");
  twice.insert(http::field::host, "other");
  const RouteResult two = a.api->Route(twice, a.collector);
  ExpectError(two, 400, "invalid_host_header");
  EXPECT_EQ(MessageOf(two), "the request has 2 Host headers (RFC 9112 3.2 allows exactly one)");
  HttpRequest twice_old = Request(http::verb::get, "/healthz", 10);
  twice_old.insert(http::field::host, "other");
  ExpectError(a.api->Route(twice_old, a.collector), 400, "invalid_host_header");
  HttpRequest spaced = Request(http::verb::get, "/healthz");
  spaced.set(http::field::host, "a b/c");
  const RouteResult bad = a.api->Route(spaced, a.collector);
  ExpectError(bad, 400, "invalid_host_header");
  EXPECT_EQ(MessageOf(bad), "the Host header 'a b/c' is not a host[:port] (RFC 9112 3.2)");
  for (const char* host : {"[::1]:8080", "localhost", "", "xn--bcher-kva.example:80"}) {
    HttpRequest fine = Request(http::verb::get, "/healthz");
    fine.set(http::field::host, host);
    EXPECT_EQ(a.api->Route(fine, a.collector).response.result_int(), 200) << host;
  }
}

// CONNECT (authority form) and OPTIONS * (asterisk form) were 404s naming
// their target as a route. A method the server implements for no target is
// a 501 on every target (RFC 9110 9.1, 15.6.2); a 405 with Allow stays for
// GET, HEAD or POST on a route that does not take it.
TEST(HttpApiTest, UnimplementedMethodsAre501OnEveryTarget) {
  Api a;
  const struct {
    http::verb method;
    const char* target;
  } kCases[] = {{http::verb::connect, "127.0.0.1:443"},
                {http::verb::options, "*"},
                {http::verb::options, "/v1/models"},
                {http::verb::put, "/healthz"},
                {http::verb::delete_, "/v1/models/x"},
                {http::verb::patch, "/nope"},
                {http::verb::trace, "/"}};
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.target);
    const RouteResult r = a.Route(c.method, c.target);
    ExpectError(r, 501, "method_not_implemented");
    EXPECT_EQ(MessageOf(r), std::string("the method ") + std::string(http::to_string(c.method)) +
                                " is not implemented; dropk-serve answers GET, HEAD and POST");
  }
  HttpRequest unknown = Request(http::verb::unknown, "/healthz");
  unknown.method_string("BREW");
  const RouteResult brew = a.api->Route(unknown, a.collector);
  ExpectError(brew, 501, "method_not_implemented");
  EXPECT_NE(MessageOf(brew).find("BREW"), std::string::npos);
  // The forms of CONNECT and OPTIONS with an implemented method: a 400.
  for (const char* target : {"*", "127.0.0.1:443", "healthz"}) {
    const RouteResult r = a.Route(http::verb::get, target);
    ExpectError(r, 400, "bad_request");
    EXPECT_EQ(MessageOf(r), std::string("the request target '") + target +
                                "' is neither a path starting with '/' nor an http:// URL");
  }
}

// What a session answers "Expect: 100-continue" with when the header alone
// refuses the request: Route's own refusal, decided without a body; nothing
// for a request whose body decides.
TEST(HttpApiTest, RefuseEarlyDecidesFromTheHeaderAlone) {
  Api a({.api_key = "k3y"});
  const auto header = [](http::verb method, const std::string& target, const std::string& auth) {
    HttpRequest req = Request(method, target);
    if (!auth.empty()) req.set(http::field::authorization, auth);
    return req;
  };
  EXPECT_FALSE(a.api->RefuseEarly(header(http::verb::post, "/v1/completions", "Bearer k3y")));
  EXPECT_FALSE(a.api->RefuseEarly(header(http::verb::get, "/healthz", "")));
  const struct {
    HttpRequest request;
    int status;
  } kCases[] = {{header(http::verb::post, "/v1/completions", ""), 401},
                {header(http::verb::post, "/nope", "Bearer k3y"), 404},
                {header(http::verb::post, "/v1/models", "Bearer k3y"), 405},
                {header(http::verb::put, "/v1/completions", "Bearer k3y"), 501},
                {HttpRequest{http::verb::post, "/v1/completions", 11}, 400}};
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.status);
    const std::optional<HttpResponse> early = a.api->RefuseEarly(c.request);
    ASSERT_TRUE(early.has_value());
    const RouteResult routed = a.api->Route(c.request, a.collector);
    ASSERT_EQ(routed.job, nullptr);
    EXPECT_EQ(early->result_int(), c.status);
    EXPECT_EQ(early->body(), routed.response.body());
  }
  const std::optional<HttpResponse> head =
      a.api->RefuseEarly(header(http::verb::head, "/nope", "Bearer k3y"));
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->result_int(), 404);
  EXPECT_EQ(head->body(), "");
}

// OpenAI's retrieve-model route, GET /v1/models/{model}: the served model's
// object, or a 404 model_not_found. It was a 404 "no route" for every id.
TEST(HttpApiTest, RetrieveModelByItsId) {
  Api a;
  const RouteResult got = a.Route(http::verb::get, "/v1/models/dropk-step-100");
  ASSERT_EQ(got.response.result_int(), 200) << got.response.body();
  const json listed = json::parse(a.Route(http::verb::get, "/v1/models").response.body());
  EXPECT_EQ(json::parse(got.response.body()), listed["data"][0]);
  const RouteResult unknown = a.Route(http::verb::get, "/v1/models/gpt-4");
  ExpectError(unknown, 404, "model_not_found");
  EXPECT_EQ(MessageOf(unknown),
            "the model 'gpt-4' does not exist; this server serves 'dropk-step-100'");
  const RouteResult head = a.Route(http::verb::head, "/v1/models/dropk-step-100");
  EXPECT_EQ(head.response.result_int(), 200);
  EXPECT_EQ(head.response.body(), "");
  const RouteResult post = a.Route(http::verb::post, "/v1/models/" + std::string(5000, 'x'));
  ExpectError(post, 405, "method_not_allowed");
  EXPECT_EQ(post.response[http::field::allow], "GET, HEAD");
  EXPECT_LT(MessageOf(post).size(), 300u);  // the path is quoted cut short
  Api none({}, {}, /*load=*/false);
  ExpectError(none.Route(http::verb::get, "/v1/models/dropk-step-100"), 503, "model_not_ready");
}

// A compressed body was parsed as JSON and refused as "not valid JSON
// (... invalid literal)", naming neither Content-Encoding nor the fix; it is
// a 415 naming the coding (RFC 9110), with Accept-Encoding saying what works.
TEST(HttpApiTest, ACompressedBodyIs415NamingTheCoding) {
  Api a;
  for (const char* coding : {"gzip", "br", "gzip, identity"}) {
    HttpRequest req = Request(http::verb::post, "/v1/completions");
    req.set(http::field::content_encoding, coding);
    req.body() = R"({"prompt":"a","max_tokens":1})";
    req.prepare_payload();
    const RouteResult r = a.api->Route(req, a.collector);
    ExpectError(r, 415, "unsupported_content_encoding");
    EXPECT_EQ(json::parse(r.response.body())["error"]["message"],
              std::string("Content-Encoding '") + coding +
                  "' is not supported; send the JSON body uncompressed");
    EXPECT_EQ(r.response["Accept-Encoding"], "identity");
  }
  // identity is no coding at all.
  HttpRequest req = Request(http::verb::post, "/v1/completions");
  req.set(http::field::content_encoding, "Identity");
  req.body() = R"({"prompt":"a","max_tokens":1})";
  req.prepare_payload();
  EXPECT_NE(a.api->Route(req, a.collector).job, nullptr);
}

// Only the first Content-Encoding header was looked at: "identity" then
// "gzip" let a gzipped body through to the JSON parser.
TEST(HttpApiTest, EveryContentEncodingHeaderCounts) {
  Api a;
  HttpRequest req = Request(http::verb::post, "/v1/completions");
  req.insert(http::field::content_encoding, "identity");
  req.insert(http::field::content_encoding, "gzip");
  req.body() = R"({"prompt":"a","max_tokens":1})";
  req.prepare_payload();
  const RouteResult r = a.api->Route(req, a.collector);
  ExpectError(r, 415, "unsupported_content_encoding");
  EXPECT_EQ(json::parse(r.response.body())["error"]["message"],
            "Content-Encoding 'gzip' is not supported; send the JSON body uncompressed");
  // Two saying identity are still no coding at all.
  HttpRequest plain = Request(http::verb::post, "/v1/completions");
  plain.insert(http::field::content_encoding, "identity");
  plain.insert(http::field::content_encoding, "IDENTITY");
  plain.body() = R"({"prompt":"a","max_tokens":1})";
  plain.prepare_payload();
  EXPECT_NE(a.api->Route(plain, a.collector).job, nullptr);
}

TEST(HttpApiTest, FullQueueIs429WithRetryAfter) {
  HttpApiOptions options;
  options.retry_after_seconds = 7;
  Api a(options, {.max_batch = 1, .max_queue = 1});
  // A long request holds the only slot and one more waits in the queue.
  ASSERT_NE(a.Route(http::verb::post, "/v1/completions", R"({"prompt":"a","max_tokens":8192})").job,
            nullptr);
  for (int i = 0; i < 3000 && a.metrics.running_batch.load() != 1; ++i) {  // bounded: 30 s
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(a.metrics.running_batch.load(), 1);
  ASSERT_NE(a.Route(http::verb::post, "/v1/completions", R"({"prompt":"a"})").job, nullptr);
  const RouteResult r = a.Route(http::verb::post, "/v1/completions", R"({"prompt":"a"})");
  ExpectError(r, 429, "queue_full");
  EXPECT_EQ(r.response[http::field::retry_after], "7");
}

// More sequences than the queue holds can never start: a 400 naming n and
// the limit, without Retry-After (it was a 429 that clients retried forever).
TEST(HttpApiTest, MoreSequencesThanTheQueueHoldsIs400) {
  Api a({}, {.max_batch = 1, .max_queue = 1});
  const RouteResult r = a.Route(http::verb::post, "/v1/completions", R"({"prompt":"a","n":2})");
  ExpectError(r, 400, "too_many_sequences");
  EXPECT_EQ(json::parse(r.response.body())["error"]["param"], "n");
  EXPECT_EQ(r.response[http::field::retry_after], "");
}

TEST(HttpApiTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace dropk
