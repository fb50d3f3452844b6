// The HTTP service in process, queried with curl and the official openai npm
// client: routes, errors (each with its status and OpenAI JSON body), auth,
// streaming, client disconnects, reproducibility under concurrent load.
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sampler/http_server.h"
#include "sampler/scheduler.h"
#include "test_util.h"

namespace dropk {
namespace {

using json = nlohmann::json;
using testing::Curl;
using testing::HttpResult;

struct TestServer {
  explicit TestServer(HttpServerOptions http = {}, SchedulerOptions sched = {},
                      bool load = true, int block_size = 128, int n_layer = 2, int n_embd = 32) {
    http.port = 0;
    http.io_threads = 2;
    auto s = Scheduler::Create(sched, &metrics);
    EXPECT_TRUE(s.ok());
    scheduler = *std::move(s);
    if (load) {
      EXPECT_TRUE(
          scheduler->SetModel(testing::TestSnapshot(3, block_size, n_layer, n_embd)).ok());
    }
    auto srv = HttpServer::Start(http, scheduler.get(), &metrics);
    EXPECT_TRUE(srv.ok()) << srv.status();
    server = *std::move(srv);
    port = server->port();
  }
  ~TestServer() {
    scheduler->Shutdown(std::chrono::milliseconds(1000));
    server->Stop(std::chrono::milliseconds(1000));
  }
  ServiceMetrics metrics;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<HttpServer> server;
  int port = 0;
};

void ExpectError(const HttpResult& r, int code, const std::string& param = "") {
  EXPECT_EQ(r.code, code) << r.body;
  const json j = json::parse(r.body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.body;
  ASSERT_TRUE(j.contains("error")) << r.body;
  for (const char* k : {"message", "type", "param", "code"}) EXPECT_TRUE(j["error"].contains(k));
  if (!param.empty()) EXPECT_EQ(j["error"]["param"], param) << r.body;
}

TEST(HttpTest, RoutesAndMetrics) {
  TestServer s;
  EXPECT_EQ(Curl(s.port, "GET", "/healthz").code, 200);
  const HttpResult ready = Curl(s.port, "GET", "/readyz");
  EXPECT_EQ(ready.code, 200);
  EXPECT_EQ(json::parse(ready.body)["checkpoint_step"], 100);
  const HttpResult models = Curl(s.port, "GET", "/v1/models");
  ASSERT_EQ(models.code, 200);
  EXPECT_EQ(json::parse(models.body)["data"][0]["id"], "dropk-step-100");
  const HttpResult done = Curl(s.port, "POST", "/v1/completions",
                               R"({"prompt":"ab","max_tokens":8,"seed":1})");
  ASSERT_EQ(done.code, 200) << done.body;
  const json j = json::parse(done.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["usage"]["completion_tokens"], 8);
  EXPECT_EQ(j["checkpoint_step"], 100);
  const HttpResult metrics = Curl(s.port, "GET", "/metrics");
  ASSERT_EQ(metrics.code, 200);
  for (const char* name :
       {"dropk_requests_total{code=\"200\"}", "dropk_generated_tokens_total 8",
        "dropk_time_to_first_token_seconds_bucket", "dropk_inter_token_latency_seconds_count",
        "dropk_running_batch_size", "dropk_queue_length", "dropk_checkpoint_step 100",
        "dropk_reloads_total", "dropk_reload_failures_total"}) {
    EXPECT_NE(metrics.body.find(name), std::string::npos) << name;
  }
}

TEST(HttpTest, EveryBadInputGetsItsStatusAndJsonError) {
  TestServer s({.max_body_bytes = 4096});
  ExpectError(Curl(s.port, "POST", "/v1/completions", "{not json"), 400);
  ExpectError(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a","max_tokens":-1})"), 400,
              "max_tokens");
  ExpectError(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a","temperature":-1})"),
              400, "temperature");
  ExpectError(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a","top_p":2})"), 400,
              "top_p");
  ExpectError(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a","n":0})"), 400, "n");
  ExpectError(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a","top_k":-5})"), 400,
              "top_k");
  ExpectError(Curl(s.port, "POST", "/v1/completions", R"({"prompt":7})"), 400, "prompt");
  ExpectError(Curl(s.port, "POST", "/v1/completions",
                   json{{"prompt", std::string(200, 'a')}}.dump()),
              400, "prompt");
  ExpectError(Curl(s.port, "GET", "/nope"), 404);
  const HttpResult m = Curl(s.port, "GET", "/v1/completions", "", "-D /dev/stderr");
  ExpectError(m, 405);
  ExpectError(Curl(s.port, "POST", "/healthz", "{}"), 405);
  // A body over the limit is refused with 413 (from Content-Length, before reading it).
  const std::string big = (std::filesystem::temp_directory_path() / "dropk_big_body.json").string();
  std::ofstream(big) << "{\"prompt\":\"" << std::string(10000, 'a') << "\"}";
  ExpectError(Curl(s.port, "POST", "/v1/completions", "", "--data-binary @" + big), 413);
  std::filesystem::remove(big);
  // Still serving everyone else.
  EXPECT_EQ(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"ab","max_tokens":2})").code,
            200);
}

TEST(HttpTest, NotReadyBeforeAModelIsLoaded) {
  TestServer s({}, {}, /*load=*/false);
  EXPECT_EQ(Curl(s.port, "GET", "/healthz").code, 200);
  ExpectError(Curl(s.port, "GET", "/readyz"), 503);
  ExpectError(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a"})"), 503);
}

TEST(HttpTest, FullQueueIs429WithRetryAfter) {
  TestServer s({.retry_after_seconds = 3}, {.max_batch = 1, .max_queue = 1});
  const auto r = testing::RunCommand(
      "curl -s -i --max-time 20 -H 'Content-Type: application/json' --data-binary "
      "'{\"prompt\":\"a\",\"n\":2}' http://127.0.0.1:" +
      std::to_string(s.port) + "/v1/completions");
  EXPECT_NE(r.out.find("HTTP/1.1 429"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Retry-After: 3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"error\""), std::string::npos) << r.out;
}

TEST(HttpTest, ApiKeyOnAndOff) {
  const std::string key = "s3cret-key";
  TestServer s({.api_key = key});
  EXPECT_EQ(Curl(s.port, "GET", "/healthz").code, 200);  // liveness needs no key
  ExpectError(Curl(s.port, "GET", "/v1/models"), 401);
  ExpectError(Curl(s.port, "GET", "/metrics", "", "-H 'Authorization: Bearer wrong'"), 401);
  ExpectError(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a"})",
                   "-H 'Authorization: Bearer s3cret-ke'"),
              401);
  EXPECT_EQ(Curl(s.port, "GET", "/v1/models", "", "-H 'Authorization: Bearer " + key + "'").code,
            200);
  EXPECT_EQ(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a","max_tokens":3})",
                 "-H 'Authorization: Bearer " + key + "'")
                .code,
            200);
  TestServer open;
  EXPECT_EQ(Curl(open.port, "GET", "/v1/models").code, 200);
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
}

TEST(HttpTest, StreamEndsWithDoneAndMatchesPlain) {
  TestServer s;
  const std::string body = R"({"prompt":"ab","max_tokens":20,"seed":9})";
  const HttpResult plain = Curl(s.port, "POST", "/v1/completions", body);
  ASSERT_EQ(plain.code, 200);
  const HttpResult streamed = Curl(s.port, "POST", "/v1/completions",
                                   R"({"prompt":"ab","max_tokens":20,"seed":9,"stream":true})",
                                   "-N");
  ASSERT_EQ(streamed.code, 200);
  std::string text;
  size_t pos = 0;
  std::string last;
  while ((pos = streamed.body.find("data: ", pos)) != std::string::npos) {
    const size_t end = streamed.body.find("\n\n", pos);
    last = streamed.body.substr(pos + 6, end - pos - 6);
    if (last != "[DONE]") text += json::parse(last)["choices"][0]["text"].get<std::string>();
    pos = end;
  }
  EXPECT_EQ(last, "[DONE]");
  EXPECT_EQ(text, json::parse(plain.body)["choices"][0]["text"]);
}

TEST(HttpTest, SameSeedReproducesUnderConcurrentLoad) {
  TestServer s({}, {.max_batch = 16});
  const std::string body =
      R"({"prompt":"Once","max_tokens":40,"seed":77,"top_k":10,"logprobs":2})";
  const HttpResult alone = Curl(s.port, "POST", "/v1/completions", body);
  ASSERT_EQ(alone.code, 200);
  std::vector<std::thread> load;
  std::vector<HttpResult> results(16);
  for (int i = 0; i < 16; ++i) {
    load.emplace_back([&, i] {
      results[i] = Curl(s.port, "POST", "/v1/completions",
                        i % 4 == 0 ? body
                                   : json{{"prompt", std::string(1 + i, 'b')},
                                          {"max_tokens", 30},
                                          {"seed", i}}
                                         .dump());
    });
  }
  for (auto& t : load) t.join();
  const json a = json::parse(alone.body);
  for (int i = 0; i < 16; i += 4) {
    ASSERT_EQ(results[i].code, 200);
    const json b = json::parse(results[i].body);
    EXPECT_EQ(a["choices"], b["choices"]);
  }
}

TEST(HttpTest, ClientDisconnectCancelsGeneration) {
  // A bigger model and a long generation, so the client leaves mid-stream.
  TestServer s({}, {.max_batch = 4, .num_threads = 1}, true, 1024, 4, 256);
  for (const char* stream : {"true", "false"}) {
    const uint64_t before = s.metrics.cancelled_sequences.load();
    testing::RunCommand("curl -s -N --max-time 0.5 -H 'Content-Type: application/json' "
                        "--data-binary '{\"prompt\":\"a\",\"max_tokens\":1000,\"stream\":" +
                        std::string(stream) + "}' http://127.0.0.1:" + std::to_string(s.port) +
                        "/v1/completions > /dev/null 2>&1");
    bool cancelled = false;
    for (int i = 0; i < 200 && !cancelled; ++i) {  // bounded: 10 s
      cancelled = s.metrics.cancelled_sequences.load() > before;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(cancelled) << "stream=" << stream;
  }
  EXPECT_LT(s.metrics.generated_tokens.load(), 1900u);
  EXPECT_EQ(Curl(s.port, "POST", "/v1/completions", R"({"prompt":"a","max_tokens":2})").code,
            200);
}

// The official openai npm client (v6; v7 needs Node 22), plain and streamed.
TEST(HttpTest, OpenAiNpmClient) {
  const std::string dir = std::string(DROPK_BINARY_DIR) + "/e2e_npm";
  if (!std::filesystem::exists(dir + "/node_modules/openai/package.json")) {
    std::filesystem::create_directories(dir);
    const auto r = testing::RunCommand("cd " + dir +
                                       " && timeout 180 npm install --no-audit --no-fund "
                                       "--loglevel=error openai@6 2>&1");
    if (r.exit_code != 0) GTEST_SKIP() << "npm could not install openai@6: " << r.out;
  }
  TestServer s({.api_key = "npm-key"});
  const std::string script = dir + "/client.mjs";
  std::ofstream(script) << R"JS(
import OpenAI from 'openai';
const client = new OpenAI({ baseURL: `http://127.0.0.1:${process.argv[2]}/v1`, apiKey: 'npm-key' });
const plain = await client.completions.create({ model: 'dropk', prompt: 'ab', max_tokens: 12, seed: 5, top_k: 3 });
let streamed = '';
let chunks = 0;
const stream = await client.completions.create({ model: 'dropk', prompt: 'ab', max_tokens: 12, seed: 5, top_k: 3, stream: true });
for await (const chunk of stream) { streamed += chunk.choices[0].text; chunks++; }
let status = 0;
try { await client.completions.create({ model: 'dropk', prompt: 'ab', top_p: 7 }); }
catch (e) { status = e.status; }
console.log(JSON.stringify({ plain: plain.choices[0].text, streamed, chunks, status, seed: plain.seed }));
)JS";
  const auto r = testing::RunCommand("timeout 60 node " + script + " " + std::to_string(s.port));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["plain"], j["streamed"]);
  EXPECT_EQ(j["plain"].get<std::string>().size(), 12u);
  EXPECT_GE(j["chunks"], 2);
  EXPECT_EQ(j["status"], 400);
  EXPECT_EQ(j["seed"], 5);
}

}  // namespace
}  // namespace dropk
