// `dropk sample` flags the request body cannot carry: each is refused with
// one line naming the flag and exit 2, before any connection is tried (the
// URL points at a closed port, so reaching the network would say so). And
// answers at --url that are not dropk's: one line, exit 1, never an abort.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/subprocess.h"

namespace dropk {
namespace {

using test_util::CommandResult;
using test_util::RunCommand;

const std::string kBin = DROPK_BINARY_DIR "/bin/";

CommandResult Sample(const std::string& flags) {
  return RunCommand(kBin + "dropk sample --url http://127.0.0.1:1 " + flags);
}

void ExpectFlagError(const CommandResult& r, const std::string& names) {
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.err.rfind("dropk: " + names, 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// A prompt that is not UTF-8 aborted dropk (nlohmann's type_error escaped
// while the JSON body was written).
TEST(SampleCliTest, PromptThatIsNotUtf8IsAFlagErrorNotAnAbort) {
  const CommandResult r = Sample("--prompt \"$(printf 'ab\\377')\"");
  ExpectFlagError(r, "--prompt is not valid UTF-8");
  EXPECT_NE(r.err.find("index 2: 0xFF"), std::string::npos) << r.err;
}

// An unknown flag is named with the flag it was likely meant as, before a
// required flag it leaves missing (CLI11 said only "--prompt is required").
TEST(SampleCliTest, AnUnknownFlagNamesTheFlagItWasLikelyMeantAs) {
  ExpectFlagError(RunCommand(kBin + "dropk sample --checkpoin /nonexistent --promt a"),
                  "unknown flag --checkpoin (did you mean --checkpoint?)");
  ExpectFlagError(Sample("--prompt a --top_k 5"), "unknown flag --top_k (did you mean --top-k?)");
}

// NaN and infinity became JSON null, which the server reads as absent: the
// text was sampled at temperature 1 (or top_p 1) without a word.
TEST(SampleCliTest, NonFiniteTemperatureOrTopPIsRefused) {
  ExpectFlagError(Sample("--prompt a --temperature nan"),
                  "--temperature=nan: not a finite number; give a number in [0, 1000000]");
  ExpectFlagError(Sample("--prompt a --temperature inf"), "--temperature=inf: not a finite number");
  ExpectFlagError(Sample("--prompt a --top-p -inf"),
                  "--top-p=-inf: not a finite number; give a number in (0, 1]\n");
}

// --threads, --weights and --kv-cache set up the offline engine; with --url the server
// decides, and --threads was accepted and ignored. Then the refusal was
// CLI11's "--url excludes --threads", which did not say why.
TEST(SampleCliTest, OfflineOnlyFlagsAreRefusedWithUrlSayingWhy) {
  for (const std::string flag : {"--threads 2", "--weights bf16", "--kv-cache fp32"}) {
    SCOPED_TRACE(flag);
    const std::string name = flag.substr(0, flag.find(' '));
    const std::string why =
        " is for offline sampling (--checkpoint); with --url the server decides it (dropk-serve ";
    ExpectFlagError(Sample("--prompt a " + flag), name + why + name + ")");
  }
}

// --timeout and --api-key-file are the client's; offline they were
// accepted and ignored, where --threads with --url is refused.
TEST(SampleCliTest, ClientOnlyFlagsAreRefusedWithCheckpoint) {
  const std::string offline = kBin + "dropk sample --checkpoint /nonexistent --prompt a ";
  ExpectFlagError(RunCommand(offline + "--timeout 5"), "--checkpoint excludes --timeout");
  ExpectFlagError(RunCommand(offline + "--api-key-file /etc/hostname"),
                  "--checkpoint excludes --api-key-file");
}

// CLI11 turned --seed -1 and --seed 2^64 into 2^64 - 1 silently.
TEST(SampleCliTest, SeedOutsideUint64IsRefused) {
  for (const std::string problem : {"out of range", "not an integer"}) {
    for (const char* seed : problem == "out of range"
                                ? std::vector<const char*>{"-1", "18446744073709551616"}
                                : std::vector<const char*>{"1.5", "x"}) {
      SCOPED_TRACE(seed);
      ExpectFlagError(Sample(std::string("--prompt a --seed ") + seed),
                      std::string("--seed=") + seed + ": " + problem +
                          "; give an integer in [0, 18446744073709551615]\n");
    }
  }
}

// A loopback server that answers every request it gets with `reply`
// (status line, headers and body), then closes the connection. With
// `pieces`, the reply is sent piece by piece, `gap` apart. With `ipv6`, it
// listens on ::1 (HasIpv6Loopback says whether it can).
class CannedServer {
 public:
  explicit CannedServer(std::string reply) : CannedServer(std::vector<std::string>{reply}, {}) {}
  CannedServer(std::vector<std::string> pieces, std::chrono::milliseconds gap, bool ipv6 = false)
      : pieces_(std::move(pieces)), gap_(gap), ipv6_(ipv6) {
    fd_ = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    sockaddr_storage addr{};
    if (ipv6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
      in6->sin6_family = AF_INET6;
      in6->sin6_addr = in6addr_loopback;
    } else {
      auto* in = reinterpret_cast<sockaddr_in*>(&addr);
      in->sin_family = AF_INET;
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    socklen_t len = ipv6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(listen(fd_, 8), 0);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(ipv6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                       : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;  // the listening socket was shut down
        std::string got;
        char buf[4096];
        // The request: its header, then as many body bytes as it announces.
        for (ssize_t n; (n = recv(c, buf, sizeof(buf), 0)) > 0;) {
          got.append(buf, static_cast<size_t>(n));
          const size_t end = got.find("\r\n\r\n");
          const size_t cl = got.find("Content-Length: ");
          if (end != std::string::npos && cl != std::string::npos &&
              got.size() >= end + 4 + std::stoul(got.substr(cl + 16))) {
            break;
          }
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          last_request_ = got;
        }
        for (size_t i = 0; i < pieces_.size(); ++i) {
          if (i > 0) std::this_thread::sleep_for(gap_);
          send(c, pieces_[i].data(), pieces_[i].size(), MSG_NOSIGNAL);
        }
        close(c);
      }
    });
  }
  ~CannedServer() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }
  std::string url() const {
    return (ipv6_ ? "http://[::1]:" : "http://127.0.0.1:") + std::to_string(port_);
  }
  int port() const { return port_; }
  // The last request received, header and body.
  std::string last_request() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_request_;
  }

 private:
  std::mutex mu_;
  std::string last_request_;  // guarded by mu_
  std::vector<std::string> pieces_;
  std::chrono::milliseconds gap_;
  bool ipv6_ = false;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

// A whole HTTP/1.1 response with `status` ("200 OK") and `body`, closing.
std::string Reply(const std::string& status, const std::string& body) {
  return "HTTP/1.1 " + status + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

std::string Reply200(const std::string& body) { return Reply("200 OK", body); }

// A 200 whose JSON is not a completion (a proxy, another server) aborted
// dropk on nlohmann's type_error; a stream that ended without data: [DONE]
// exited 0 with nothing printed.
TEST(SampleCliTest, AnswersThatAreNotCompletionsAreOneLineNotAnAbort) {
  for (const std::string body :
       {"{}", "[]", "null", "not json", R"({"choices":[]})", R"({"choices":[{"text":5}]})"}) {
    SCOPED_TRACE(body);
    CannedServer server(Reply200(body));
    const CommandResult r =
        RunCommand(kBin + "dropk sample --prompt a --url " + server.url());
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_EQ(
        r.err.rfind("dropk: " + server.url() + ": the server's answer has no choices[0].text (", 0),
        0u)
        << r.err;
    const CommandResult streamed =
        RunCommand(kBin + "dropk sample --stream --prompt a --url " + server.url());
    EXPECT_EQ(streamed.exit_code, 1) << streamed.out << streamed.err;
    EXPECT_EQ(streamed.err.rfind(
                  "dropk: " + server.url() + ": the stream ended before its last event", 0),
              0u)
        << streamed.err;
  }
  CannedServer bad_event(Reply200("data: {\"choices\":[{\"text\":7}]}\n\n"));
  const CommandResult r = RunCommand(kBin + "dropk sample --stream --prompt a --url " +
                                     bad_event.url());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("no choices[0].text"), std::string::npos) << r.err;
  // An error body whose message is not a string is quoted whole.
  const std::string odd_error = R"({"error":{"message":5}})";
  CannedServer error(Reply("500 Internal Server Error", odd_error));
  const CommandResult e = RunCommand(kBin + "dropk sample --prompt a --url " + error.url());
  EXPECT_EQ(e.exit_code, 1) << e.err;
  EXPECT_EQ(e.err, "dropk: " + error.url() + ": HTTP 500: " + odd_error + "\n");
}

// A 200 whose JSON is nested 200,000 deep (whatever answers at --url) is
// quoted cut short: printing it whole overflowed the stack (a segfault).
TEST(SampleCliTest, AnAnswerNestedDeepIsQuotedCutShortNotACrash) {
  constexpr int kDepth = 200000;
  CannedServer server(Reply200(std::string(kDepth, '[') + std::string(kDepth, ']')));
  const CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + server.url());
  EXPECT_EQ(r.exit_code, 1) << r.err.substr(0, 500);
  EXPECT_EQ(r.err, "dropk: " + server.url() + ": the server's answer has no choices[0].text (" +
                       std::string(80, '[') + "...)\n");
  // A completion whose seed and step are such values (4 MB, within the
  // 64 MiB an answer may have): the footer printed them whole.
  constexpr int kDeeper = 2000000;
  const std::string nested = std::string(kDeeper, '[') + std::string(kDeeper, ']');
  CannedServer footer(Reply200(R"({"choices":[{"text":"hi"}],"seed":)" + nested +
                               R"(,"checkpoint_step":)" + nested + "}"));
  const CommandResult f = RunCommand(kBin + "dropk sample --prompt a --url " + footer.url());
  EXPECT_EQ(f.exit_code, 0) << f.err.substr(0, 500);
  EXPECT_EQ(f.out, "hi\n");
  EXPECT_EQ(f.err, "seed " + std::string(40, '[') + "..., checkpoint step " + std::string(40, '[') +
                       "...\n");
}

// A streamed completion as chunks of HTTP/1.1 chunked encoding.
std::string StreamHead() {
  return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
         "Transfer-Encoding: chunked\r\n\r\n";
}
std::string Chunk(const std::string& data) {
  char size[16];
  std::snprintf(size, sizeof(size), "%zx", data.size());
  return std::string(size) + "\r\n" + data + "\r\n";
}
std::string TextEvent(const std::string& text) {
  return Chunk("data: {\"choices\":[{\"text\":\"" + text + "\"}]}\n\n");
}

// URLs the resolver misread: an empty host reached this machine, port 99999
// was "Connection refused" (exit 1), "[::1" was "Service not found".
TEST(SampleCliTest, AUrlWithoutAHostOrWithABadPortIsAFlagError) {
  for (const std::string url :
       {"http://", "http://:8080", "http://localhost:99999", "http://localhost:0",
        "http://localhost:x/v1", "http://[::1", "http://[::1]:"}) {
    SCOPED_TRACE(url);
    ExpectFlagError(RunCommand(kBin + "dropk sample --prompt a --url '" + url + "'"),
                    "--url=" + url + ": not http://HOST[:PORT][/PATH]");
  }
}

// A scheme is case-insensitive: HTTP:// was refused as not http://. A URL
// with user information was looked up as the host "user@127.0.0.1" (Host
// not found, exit 1).
TEST(SampleCliTest, TheSchemeIsCaseInsensitiveAndUserInformationIsAFlagError) {
  CannedServer server(Reply200(R"({"choices":[{"text":"hi","finish_reason":"length"}]})"));
  const std::string upper = "HTTP" + server.url().substr(4);
  const CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + upper);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("hi"), std::string::npos) << r.out;
  const std::string with_user = "http://user@" + server.url().substr(7);
  ExpectFlagError(RunCommand(kBin + "dropk sample --prompt a --url " + with_user),
                  "--url=" + with_user + ": holds user information (USER@HOST)");
}

// The authority ends at '/', '?' or '#' (RFC 3986 3.2): http://HOST:PORT?q
// was a flag error (the query read as part of the port), and a query after
// a path got /v1/completions added after it: POST /v1?x=1/v1/completions.
// The query goes after the path; a fragment is never sent.
TEST(SampleCliTest, AQueryInTheUrlFollowsThePathAndAFragmentIsNotSent) {
  CannedServer server(Reply200(R"({"choices":[{"text":"hi"}]})"));
  const struct {
    const char* suffix;
    const char* request_line;
  } kCases[] = {
      {"?key=v", "POST /v1/completions?key=v HTTP/1.1\r\n"},
      {"/v1?x=1#top", "POST /v1/completions?x=1 HTTP/1.1\r\n"},
      {"/api/v1/completions/?x=/v1", "POST /api/v1/completions?x=/v1 HTTP/1.1\r\n"},
      {"#top", "POST /v1/completions HTTP/1.1\r\n"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.suffix);
    const CommandResult r =
        RunCommand(kBin + "dropk sample --prompt a --url '" + server.url() + c.suffix + "'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "hi\n");
    EXPECT_EQ(server.last_request().rfind(c.request_line, 0), 0u) << server.last_request();
  }
}

// A port with a sign ("+80") was read as 80 and sent as typed in the Host
// header; a space or a control character in the URL went out raw in the
// request line. Each is a flag error naming --url.
TEST(SampleCliTest, AUrlWithASignedPortOrASpaceIsAFlagError) {
  ExpectFlagError(RunCommand(kBin + "dropk sample --prompt a --url http://127.0.0.1:+80"),
                  "--url=http://127.0.0.1:+80: not http://HOST[:PORT][/PATH]");
  for (const std::string url :
       {"http://127.0.0.1:1/a b", "http://127.0.0.1: 80", "http://127.0.0.1:1/a\tb"}) {
    SCOPED_TRACE(url);
    ExpectFlagError(RunCommand(kBin + "dropk sample --prompt a --url '" + url + "'"),
                    "--url=" + url +
                        ": holds a space or a control character, which a URL may "
                        "not (write a space as %20)\n");
  }
}

// Whether this machine can listen on the IPv6 loopback address ::1.
bool HasIpv6Loopback() {
  const int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  const bool bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return bound;
}

// An IPv6 zone ID, RFC 6874's [ADDRESS%25ZONE], went to the resolver as
// written ("::1%251"): Host not found, exit 1. The zone is looked up and
// the Host header leaves it out. (A numeric zone on ::1: a link-local
// address would need an interface that reaches a server.)
TEST(SampleCliTest, AnIpv6ZoneIdIsLookedUpAndNotSent) {
  if (!HasIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback (::1) on this machine";
  CannedServer server({Reply200(R"({"choices":[{"text":"hi"}]})")}, {}, /*ipv6=*/true);
  const std::string port = std::to_string(server.port());
  const CommandResult r =
      RunCommand(kBin + "dropk sample --prompt a --url 'http://[::1%251]:" + port + "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_NE(server.last_request().find("\r\nHost: [::1]:" + port + "\r\n"), std::string::npos)
      << server.last_request();
}

// A host with %XX escapes was looked up as written, and an
// internationalized one as its UTF-8 bytes: both "Host not found", exit 1.
// Escapes are decoded (and what decodes to no host name refused); a
// non-ASCII host is a flag error pointing at the xn-- form.
TEST(SampleCliTest, AnEscapedHostIsDecodedAndANonAsciiOneIsAFlagError) {
  CannedServer server(Reply200(R"({"choices":[{"text":"hi"}]})"));
  const std::string port = std::to_string(server.port());
  const CommandResult r =
      RunCommand(kBin + "dropk sample --prompt a --url http://127.0.0.%31:" + port);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_NE(server.last_request().find("\r\nHost: 127.0.0.1:" + port + "\r\n"),
            std::string::npos)
      << server.last_request();
  for (const std::string url : {"http://b\xC3\xBC" "cher.example", "http://b%C3%BC" "cher.example"}) {
    ExpectFlagError(RunCommand(kBin + "dropk sample --prompt a --url '" + url + "'"),
                    "--url=" + url +
                        ": the host is not ASCII; give an internationalized name "
                        "in its ASCII (xn--, punycode) form");
  }
  ExpectFlagError(RunCommand(kBin + "dropk sample --prompt a --url 'http://[fe80::1%25]:1'"),
                  "--url=http://[fe80::1%25]:1: the IPv6 zone ID is not an interface name");
}

// --api-key-file on a FIFO waited for a writer for good; a directory sent
// the request with an empty key.
TEST(SampleCliTest, AnApiKeyFileThatIsNotASmallRegularFileIsAFlagError) {
  const std::string dir = ::testing::TempDir() + "/dropk_sample_key_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string fifo = dir + "/key.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::ofstream(dir + "/blank") << "\n";
  for (const std::string& path : {fifo, dir, dir + "/blank"}) {
    SCOPED_TRACE(path);
    // timeout(1) ends the old behaviour's wait: the test fails, not hangs.
    ExpectFlagError(RunCommand("timeout 20 " + kBin + "dropk sample --url http://127.0.0.1:1 " +
                               "--prompt a --api-key-file " + path),
                    "--api-key-file " + path + ": ");
  }
  std::filesystem::remove_all(dir);
}

// A server that hung up mid-answer was reported as Beast's "partial message"
// (and "end of stream" when it sent nothing), and the error line was glued
// to the streamed text: "abdropk: ...".
TEST(SampleCliTest, AServerThatHangsUpIsNamedAndTheTextKeepsItsLine) {
  CannedServer mid_stream(StreamHead() + TextEvent("ab"));
  CommandResult r =
      RunCommand(kBin + "dropk sample --stream --prompt a --url " + mid_stream.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "ab\n");
  EXPECT_EQ(r.err, "dropk: " + mid_stream.url() +
                       ": the server closed the connection in the middle of its answer\n");

  CannedServer mid_body("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"choices\":");
  r = RunCommand(kBin + "dropk sample --prompt a --url " + mid_body.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("in the middle of its answer"), std::string::npos) << r.err;

  CannedServer silent_close("");
  r = RunCommand(kBin + "dropk sample --prompt a --url " + silent_close.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("closed the connection without answering"), std::string::npos) << r.err;
}

// Answers that said nothing of who was at fault: what does not speak HTTP
// (a TLS port, another protocol) was Beast's "bad version", an answer past
// the size dropk reads "body limit exceeded", and an error with an empty
// body (a --url with a wrong path, at another server) "HTTP 404: ".
TEST(SampleCliTest, AnswersThatAreNotHttpTooLongOrEmptyAreNamed) {
  CannedServer garbage(std::string("\x15\x03\x01\x00\x02\x02\x50\r\n\r\n", 11));
  CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + garbage.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + garbage.url() +
                       ": what answered does not speak HTTP/1.x (bad version); is --url the "
                       "address of an HTTP service, not an https:// one?\n");

  CannedServer huge("HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n{");
  r = RunCommand(kBin + "dropk sample --prompt a --url " + huge.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + huge.url() +
                       ": the server's answer is longer than the 64 MiB dropk reads\n");

  CannedServer empty(Reply("404 Not Found", ""));
  r = RunCommand(kBin + "dropk sample --prompt a --url " + empty.url() + "/api");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + empty.url() + "/api: HTTP 404: Not Found: the answer to POST " +
                       empty.url() + "/api/v1/completions has no body\n");

  // An HTTP answer whose framing then breaks is a faulty server, not an
  // https:// port: it said "does not speak HTTP/1.x (bad chunk); is --url
  // the address of an HTTP service, not an https:// one?".
  for (const bool stream : {false, true}) {
    CannedServer bad_chunk(StreamHead() + "zz\r\nabc\r\n0\r\n\r\n");
    r = RunCommand(kBin + "dropk sample --prompt a " + (stream ? "--stream " : "") + "--url " +
                   bad_chunk.url());
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "dropk: " + bad_chunk.url() +
                         ": the server's answer is not valid HTTP/1.1 (bad chunk)\n");
  }

  // Said "does not speak HTTP/1.x (header limit exceeded)": no TLS port.
  CannedServer long_header("HTTP/1.1 200 OK\r\nX-Padding: " + std::string(10000, 'a') +
                           "\r\nContent-Length: 2\r\n\r\n{}");
  r = RunCommand(kBin + "dropk sample --prompt a --url " + long_header.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + long_header.url() +
                       ": the server's answer header is longer than the 8 KiB dropk reads\n");
}

// A stream was kept whole in memory until it ended (135 MB at the peak for
// a stream of 60 MiB), and one past 64 MiB was refused as "longer than the
// 64 MiB dropk reads". It is read event by event and let go: a 72 MiB
// stream prints whole, in a fraction of its size. One event past 16 MiB is
// refused, naming the limit.
TEST(SampleCliTest, AStreamIsReadEventByEventNotKeptWhole) {
  std::string events;
  for (int i = 0; i < 1024; ++i) {
    events += "data: {\"choices\":[{\"text\":\"" + std::string(1000, 'x') + "\"}]}\n\n";
  }
  constexpr int kMiBs = 72;  // past the 64 MiB that an answer kept whole may have
  std::vector<std::string> pieces = {StreamHead()};
  for (int i = 0; i < kMiBs; ++i) pieces.push_back(Chunk(events));
  pieces.push_back(Chunk("data: [DONE]\n\n") + "0\r\n\r\n");
  CannedServer server(pieces, std::chrono::milliseconds(0));
  const std::string dir = ::testing::TempDir() + "/dropk_sample_stream_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  // GNU time's %M: the peak resident memory, in KiB.
  const bool gnu_time = access("/usr/bin/time", X_OK) == 0;
  const CommandResult r =
      RunCommand((gnu_time ? "/usr/bin/time -f %M -o " + dir + "/rss_kib " : std::string()) + kBin +
                 "dropk sample --stream --prompt a --url " + server.url() + " > " + dir + "/out");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::filesystem::file_size(dir + "/out"), uint64_t{kMiBs} * 1024 * 1000 + 1);
  if (gnu_time) {
    // Its last line (a failed command's is after "Command exited with ...").
    std::string rss = test_util::ReadFile(dir + "/rss_kib");
    while (!rss.empty() && rss.back() == '\n') rss.pop_back();
    const int rss_kib = std::atoi(rss.substr(rss.rfind('\n') + 1).c_str());
    EXPECT_GT(rss_kib, 0) << rss;
    EXPECT_LT(rss_kib, 48 << 10) << "a " << kMiBs << " MiB stream peaked at " << rss_kib << " KiB";
  } else {
    std::cout << "[  NOTE    ] no /usr/bin/time (GNU time): the stream's peak memory is not "
                 "checked\n";
  }
  std::filesystem::remove_all(dir);

  CannedServer huge_event(
      {StreamHead() + TextEvent("ab"), Chunk("data: " + std::string((16 << 20) + 1, 'y'))},
      std::chrono::milliseconds(0));
  const CommandResult e =
      RunCommand(kBin + "dropk sample --stream --prompt a --url " + huge_event.url());
  EXPECT_EQ(e.exit_code, 1);
  EXPECT_EQ(e.out, "ab\n");
  EXPECT_EQ(e.err, "dropk: " + huge_event.url() +
                       ": the server sent a stream event longer than the 16 MiB dropk reads\n");
}

// dropk-serve reports a failure after a stream's 200 (its GPU failed) as an
// OpenAI error event before data: [DONE]. dropk said "the server's answer
// has no choices[0].text ({"error":{"code":"device_failed","message":"the
// GPU fail...)", the reason cut off; now the server's message is the line.
TEST(SampleCliTest, AnErrorEventInAStreamIsNamedWithItsMessage) {
  const std::string why =
      "the GPU failed: cudaMemcpy: an illegal memory access was encountered; this server "
      "cannot generate any more and is restarting; retry the request";
  CannedServer server(
      StreamHead() + TextEvent("ab") +
      Chunk(R"(data: {"error":{"message":")" + why +
            R"(","type":"service_unavailable","param":null,"code":"device_failed"}})"
            "\n\n") +
      Chunk("data: [DONE]\n\n") + "0\r\n\r\n");
  const CommandResult r =
      RunCommand(kBin + "dropk sample --stream --prompt a --url " + server.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "ab\n");
  EXPECT_EQ(r.err, "dropk: " + server.url() +
                       ": the server ended the stream with an error: " + why + "\n");
}

// Server-sent events may end their lines in CRLF or CR as well as LF, and
// need no space after "data:" (WHATWG HTML 9.2.6); an event's data may span
// lines, and comments come anywhere. dropk looked for "data: " and "\n\n":
// such a stream was "the stream ended before its last event", its text
// never printed. A chunk with no choices (OpenAI's usage chunk before
// [DONE]) was "the server's answer has no choices[0].text".
TEST(SampleCliTest, ServerSentEventsAreReadAsTheStandardWritesThem) {
  const std::string a = R"({"choices":[{"text":"he","finish_reason":null}]})";
  const std::string b = R"({"choices":[{"text":"llo","finish_reason":"length"}],"seed":3})";
  const std::string usage = R"({"choices":[],"usage":{"prompt_tokens":1},"seed":3})";
  for (const std::string& events :
       {"data: " + a + "\r\n\r\ndata: " + b + "\r\n\r\ndata: [DONE]\r\n\r\n",
        "data: " + a + "\r\rdata: " + b + "\r\rdata: [DONE]\r\r",
        "data:" + a + "\n\n: a comment\n\ndata:" + b + "\n\ndata:[DONE]\n\n",
        "data: {\"choices\":\ndata: [{\"text\":\"he\"}]}\n\ndata: " + b + "\n\ndata: [DONE]\n\n",
        "data: " + a + "\n\ndata: " + b + "\n\ndata: " + usage + "\n\ndata: [DONE]\n\n"}) {
    SCOPED_TRACE(events);
    // Sent in pieces of 3 bytes, so that a CR ends one piece and its LF
    // starts the next.
    std::vector<std::string> pieces;
    for (size_t i = 0; i < events.size(); i += 3) pieces.push_back(Chunk(events.substr(i, 3)));
    pieces.front() = StreamHead() + pieces.front();
    pieces.push_back("0\r\n\r\n");
    CannedServer server(pieces, std::chrono::milliseconds(1));
    const CommandResult r =
        RunCommand(kBin + "dropk sample --stream --prompt a --url " + server.url());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "hello\n");
  }
}

// dropk-serve ends a choice it stops early (SIGTERM past --drain-ms, a
// failed GPU) with finish_reason "cancelled". dropk printed the cut text
// and exited 0, as if it were the whole completion; now the text is printed,
// then one line saying it was cut short, exit 1. Other reasons pass.
TEST(SampleCliTest, ACompletionTheServerCutShortIsSaidSoAndFails) {
  const std::string cut =
      ": the server stopped generating before the completion was finished (finish_reason "
      "\"cancelled\": it shut down or its device failed); the text above is cut short\n";
  CannedServer plain(Reply200(
      R"({"choices":[{"text":"ab","finish_reason":"cancelled"}],"seed":4,"checkpoint_step":7})"));
  CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + plain.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "ab\n");
  EXPECT_EQ(r.err, "seed 4, checkpoint step 7\ndropk: " + plain.url() + cut);
  CannedServer streamed(StreamHead() + TextEvent("ab") +
                        Chunk(R"(data: {"choices":[{"text":"c","finish_reason":"cancelled"}]})"
                              "\n\n") +
                        Chunk("data: [DONE]\n\n") + "0\r\n\r\n");
  r = RunCommand(kBin + "dropk sample --stream --prompt a --url " + streamed.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "abc\n");
  EXPECT_EQ(r.err, "dropk: " + streamed.url() + cut);
  for (const char* reason : {"length", "stop"}) {
    SCOPED_TRACE(reason);
    CannedServer done(Reply200(std::string(R"({"choices":[{"text":"ab","finish_reason":")") +
                               reason + R"("}]})"));
    r = RunCommand(kBin + "dropk sample --prompt a --url " + done.url());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "ab\n");
  }
}

// RFC 9110 15.2: a client must accept 1xx answers before the final one, and
// dropk-serve itself sends "100 Continue" to clients it probes. dropk took
// the 100 for the answer: "HTTP 100: ", exit 1.
TEST(SampleCliTest, InterimAnswersBeforeTheFinalOneAreSkipped) {
  const std::string interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n";
  CannedServer plain(interim + Reply200(R"({"choices":[{"text":"hi"}]})"));
  CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + plain.url());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  CannedServer streamed(
      {interim, StreamHead() + TextEvent("yo"), Chunk("data: [DONE]\n\n") + "0\r\n\r\n"},
      std::chrono::milliseconds(100));
  r = RunCommand(kBin + "dropk sample --stream --prompt a --url " + streamed.url());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "yo\n");
  CannedServer refused(interim + Reply("400 Bad Request", R"({"error":{"message":"no"}})"));
  r = RunCommand(kBin + "dropk sample --prompt a --url " + refused.url());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "dropk: HTTP 400: no\n");
}

// Interim answers renewed --timeout each: a server that sent "100 Continue"
// every 300 ms kept dropk waiting for as long as it went on (for good, for
// one that never stops). They share the one deadline of the answer, and
// more than 16 are refused. A 101 (an Upgrade dropk never asks for) was
// skipped as interim, and what followed read as HTTP.
TEST(SampleCliTest, InterimAnswersShareTheTimeoutAndAreBounded) {
  const std::string answer = Reply200(R"({"choices":[{"text":"hi"}]})");
  std::string interim16;
  for (int i = 0; i < 16; ++i) interim16 += "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n";
  CannedServer sixteen(interim16 + answer);
  CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + sixteen.url());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  CannedServer seventeen(interim16 + "HTTP/1.1 100 Continue\r\n\r\n" + answer);
  r = RunCommand(kBin + "dropk sample --prompt a --url " + seventeen.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + seventeen.url() +
                       ": the server sent more than 16 interim (1xx) answers before its answer\n");
  // Eight interim answers 300 ms apart, then the connection closes: with
  // --timeout 1, dropk gives up after the fourth.
  CannedServer trickle(std::vector<std::string>(8, "HTTP/1.1 100 Continue\r\n\r\n"),
                       std::chrono::milliseconds(300));
  r = RunCommand(kBin + "dropk sample --timeout 1 --prompt a --url " + trickle.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + trickle.url() +
                       ": the server sent only interim (1xx) answers, no answer, for 1 s "
                       "(--timeout); it is stalled or still busy\n");
  CannedServer upgrade(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" +
      answer);
  r = RunCommand(kBin + "dropk sample --prompt a --url " + upgrade.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + upgrade.url() +
                       ": the server switched protocols (HTTP 101, Upgrade: websocket), which "
                       "dropk did not ask for\n");
}

// dropk decodes no content coding and reads chunked framing alone, but a
// body in another coding was read as its bytes: gzip's were "the server's
// answer has no choices[0].text (not JSON)". It asks for identity, and an
// answer in another coding is refused naming the header and its value.
TEST(SampleCliTest, AnAnswerInACodingDropkDoesNotDecodeIsNamed) {
  const std::string gzip("\x1f\x8b\x08\x00\x00\x00\x00\x00", 8);
  const std::string text = R"({"choices":[{"text":"hi"}]})";
  CannedServer identity("HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: " +
                        std::to_string(text.size()) + "\r\nConnection: close\r\n\r\n" + text);
  CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + identity.url());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_NE(identity.last_request().find("\r\nAccept-Encoding: identity\r\n"), std::string::npos)
      << identity.last_request();
  const struct {
    std::string header, body, named;
  } kCases[] = {
      {"Content-Encoding: gzip\r\nContent-Length: 8", gzip,
       "(HTTP 200) has Content-Encoding: gzip, which dropk does not decode (it asks for "
       "identity)"},
      {"Transfer-Encoding: gzip", gzip,
       "(HTTP 200) has Transfer-Encoding: gzip, which dropk does not decode (it reads chunked "
       "only)"},
      {"Transfer-Encoding: gzip, chunked", Chunk(gzip) + "0\r\n\r\n",
       "(HTTP 200) has Transfer-Encoding: gzip, chunked, which dropk does not decode (it reads "
       "chunked only)"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.header);
    for (const std::string stream : {"", "--stream "}) {
      CannedServer server("HTTP/1.1 200 OK\r\n" + c.header + "\r\nConnection: close\r\n\r\n" +
                          c.body);
      r = RunCommand(kBin + "dropk sample " + stream + "--prompt a --url " + server.url());
      EXPECT_EQ(r.exit_code, 1);
      EXPECT_EQ(r.err, "dropk: " + server.url() + ": the server's answer " + c.named + "\n");
    }
  }
}

// A proxy's HTML error page (or a message with line breaks) was printed as
// it came: several lines. And it named no server ("HTTP 502: <html>..."),
// where a refused connection named --url: now every error about what
// answered begins with --url.
TEST(SampleCliTest, AnErrorPageBecomesOneLine) {
  const std::string page = "<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n";
  CannedServer proxy(Reply("502 Bad Gateway", page));
  const CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + proxy.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + proxy.url() +
                       ": HTTP 502: <html> <body> <h1>502 Bad Gateway</h1> </body> </html>\n");
}

// A redirect was reported as its body (an HTML page) or as "the answer has
// no body": where it pointed went unsaid. dropk does not follow it (the
// POST would go to an address the user did not give); it names it.
TEST(SampleCliTest, ARedirectNamesWhereItPoints) {
  const std::string page = "<html><body>Moved <a href=\"https://x/\">here</a></body></html>";
  CannedServer moved(
      "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://example.com/v1/completions\r\n"
      "Content-Length: " +
      std::to_string(page.size()) + "\r\nConnection: close\r\n\r\n" + page);
  CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + moved.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + moved.url() + ": HTTP 308: POST " + moved.url() +
                       "/v1/completions is redirected to https://example.com/v1/completions, "
                       "which dropk does not follow; give that address as --url\n");
  CannedServer nowhere(Reply("302 Found", ""));
  r = RunCommand(kBin + "dropk sample --stream --prompt a --url " + nowhere.url());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + nowhere.url() + ": HTTP 302: POST " + nowhere.url() +
                       "/v1/completions is redirected (with no Location), which dropk does not "
                       "follow\n");
}

// The server refusing the request (HTTP 400: a prompt outside the
// vocabulary) exited 1 where the same flags offline exit 2.
TEST(SampleCliTest, ARequestTheServerRefusesIsAUsageError) {
  const std::string body = R"({"error":{"message":"'max_tokens' must be an integer"}})";
  CannedServer server(Reply("400 Bad Request", body));
  const CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + server.url());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "dropk: HTTP 400: 'max_tokens' must be an integer\n");
}

// --temperature and --top-p were read as floats: --top-p 1e-50 went out as
// 0 (and was refused as "got 0.0"), --temperature 1e39 was refused as
// "--temperature inf". They go out as typed, and a number past double's
// range is refused quoting it as typed.
TEST(SampleCliTest, TemperatureAndTopPAreSentAndRefusedAsTyped) {
  ExpectFlagError(Sample("--prompt a --temperature 1e400"),
                  "--temperature=1e400: not a finite number");
  ExpectFlagError(Sample("--prompt a --top-p 1e-400"),
                  "--top-p=1e-400: too small for a double (it would be read as 0)");
  ExpectFlagError(Sample("--prompt a --top-p x"), "--top-p=x: not a number");
  // Past the request's range (a float's too): refused as typed, not as inf.
  ExpectFlagError(Sample("--prompt a --temperature 1e39"),
                  "--temperature=1e39: out of range; give a number in [0, 1000000] (0: greedy)");
  CannedServer server(Reply("400 Bad Request", R"({"error":{"message":"refused"}})"));
  const CommandResult r = RunCommand(kBin + "dropk sample --prompt a --top-p 1e-50 " +
                                     "--temperature 1e-50 --url " + server.url());
  EXPECT_EQ(r.err, "dropk: HTTP 400: refused\n");
  const std::string request = server.last_request();
  EXPECT_NE(request.find(R"("top_p":1e-50)"), std::string::npos) << request;
  EXPECT_NE(request.find(R"("temperature":1e-50)"), std::string::npos) << request;
}

// --top-p 0 went to the server as 0.0 and came back "got 0.0", a number
// not typed (offline too); --top-p is OpenAI's (0, 1]: a nucleus of mass 0
// holds no token. Each is refused before any connection, quoting it as
// typed and naming the range.
TEST(SampleCliTest, TopPAndTemperatureOutsideTheirRangeAreRefusedAsTyped) {
  for (const char* top_p : {"0", "0.0", "-0", "1.5", "-1e-300"}) {
    SCOPED_TRACE(top_p);
    ExpectFlagError(Sample(std::string("--prompt a --top-p ") + top_p),
                    std::string("--top-p=") + top_p + ": out of range; give a number in (0, 1]\n");
  }
  ExpectFlagError(Sample("--prompt a --temperature -1"),
                  "--temperature=-1: out of range; give a number in [0, 1000000] (0: greedy)\n");
  ExpectFlagError(Sample("--prompt a --temperature 1000001"),
                  "--temperature=1000001: out of range; give a number in [0, 1000000] (0: "
                  "greedy)\n");
}

// dropk sample refused bad values in three styles: "--top-k: must be ...,
// got abc (run with --help for usage)", "--seed x: must be ..." and
// "--top-p must be ..., got 2". Each now reads as dropk-train's do: the flag
// with the value as typed, what is wrong, and what to give instead.
TEST(SampleCliTest, BadValuesNameFlagAndValueThenWhatIsWrongAndWhatToGive) {
  const std::string offline = kBin + "dropk sample --prompt a --checkpoint /nonexistent ";
  const std::string online = kBin + "dropk sample --url http://127.0.0.1:1 --prompt a ";
  const struct {
    std::string command;
    const char* expected;
  } kCases[] = {
      {online + "--temperature -1",
       "--temperature=-1: out of range; give a number in [0, 1000000] (0: greedy)"},
      {online + "--top-k abc",
       "--top-k=abc: not an integer; give an integer in [-1, 2147483647] (0 or -1: off)"},
      {online + "--top-p 2", "--top-p=2: out of range; give a number in (0, 1]"},
      {online + "--max-tokens 0", "--max-tokens=0: out of range; give an integer in [1, 8192]"},
      {online + "--seed x",
       "--seed=x: not an integer; give an integer in [0, 18446744073709551615]"},
      {offline + "--weights fp8", "--weights=fp8: no such setting; give fp32 or bf16"},
      {offline + "--kv-cache BF32", "--kv-cache=BF32: no such setting; give fp32 or bf16"},
      {kBin + "dropk sample --prompt a --url bad",
       "--url=bad: does not start with http://; give a dropk-serve's address, "
       "http://HOST[:PORT]"},
      {kBin + "dropk sample --prompt a",
       "no --url or --checkpoint given; give --url http://HOST:PORT (a dropk-serve) or "
       "--checkpoint DIR (sample offline)"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.command);
    ExpectFlagError(RunCommand(c.command), std::string(c.expected) + "\n");
  }
}

// An integer flag past int (--max-tokens 99999999999) was CLI11's "Could
// not convert: --max-tokens = 99999999999", naming no range. Each names
// the flag, the value as typed and the range, before any connection.
TEST(SampleCliTest, IntegerFlagsOutOfRangeNameFlagValueAndRange) {
  const struct {
    const char* flags;
    const char* expected;
  } kCases[] = {
      {"--max-tokens 99999999999",
       "--max-tokens=99999999999: out of range; give an integer in [1, 8192]"},
      {"--max-tokens 8193", "--max-tokens=8193: out of range; give an integer in [1, 8192]"},
      {"--max-tokens 0", "--max-tokens=0: out of range; give an integer in [1, 8192]"},
      {"--max-tokens 1.5", "--max-tokens=1.5: not an integer; give an integer in [1, 8192]"},
      {"--top-k 99999999999",
       "--top-k=99999999999: out of range; give an integer in [-1, 2147483647] (0 or -1: off)"},
      {"--top-k -2",
       "--top-k=-2: out of range; give an integer in [-1, 2147483647] (0 or -1: off)"},
      {"--top-k abc",
       "--top-k=abc: not an integer; give an integer in [-1, 2147483647] (0 or -1: off)"},
      {"--timeout 99999999999",
       "--timeout=99999999999: out of range; give an integer in [1, 86400] (seconds)"},
      {"--timeout 0", "--timeout=0: out of range; give an integer in [1, 86400] (seconds)"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.flags);
    ExpectFlagError(Sample(std::string("--prompt a ") + c.flags), std::string(c.expected) + "\n");
  }
  ExpectFlagError(RunCommand(kBin + "dropk sample --prompt a --checkpoint /nonexistent --threads " +
                             "99999999999"),
                  "--threads=99999999999: out of range; give an integer in [0, 1024] (0: all "
                  "cores)\n");
}

// dropk-serve's error names the JSON field (its "param"); the user gave the
// flag, so the flag is named.
TEST(SampleCliTest, ARefusedFieldIsNamedAsTheFlagThatSetIt) {
  const std::string body =
      R"({"error":{"message":"'max_tokens' must be an integer in [1, 4096], got 5000",)"
      R"("param":"max_tokens"}})";
  CannedServer server(Reply("400 Bad Request", body));
  const CommandResult r =
      RunCommand(kBin + "dropk sample --prompt a --max-tokens 5000 --url " + server.url());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "dropk: HTTP 400: --max-tokens must be an integer in [1, 4096], got 5000\n");
}

// dropk-serve names a prompt it refuses by its index in the request's list
// ("prompt 0 is 40 tokens; ..."): dropk said "HTTP 400: prompt 0 is ...",
// naming no flag. It sends one prompt, --prompt.
TEST(SampleCliTest, ARefusedPromptIsNamedAsTheFlag) {
  const std::string body =
      R"({"error":{"message":"prompt 0 is 40 tokens; the model's context is 32 tokens",)"
      R"("param":"prompt"}})";
  CannedServer server(Reply("400 Bad Request", body));
  const CommandResult r = RunCommand(kBin + "dropk sample --prompt a --url " + server.url());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "dropk: HTTP 400: --prompt is 40 tokens; the model's context is 32 tokens\n");
}

// A loopback socket listening with `backlog` that nobody accepts from; its
// address goes to *addr. The caller closes it.
int IdleListener(int backlog, sockaddr_in* addr) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  *addr = sockaddr_in{};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(*addr);
  EXPECT_EQ(bind(listener, reinterpret_cast<sockaddr*>(addr), len), 0);
  EXPECT_EQ(listen(listener, backlog), 0);
  getsockname(listener, reinterpret_cast<sockaddr*>(addr), &len);
  return listener;
}

std::string UrlOf(const sockaddr_in& addr) {
  return "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

// A server that accepts and never answers is given up on after --timeout
// seconds of silence, naming the flag: before, dropk waited for good (the
// 300 s deadline it set binds only Beast's asynchronous calls). The limit is
// on silence, not on the whole answer: a stream that outlasts it while
// sending stays whole (a total limit cut long generations off).
TEST(SampleCliTest, TimeoutLimitsSilenceNotTheWholeStream) {
  sockaddr_in addr;
  const int listener = IdleListener(8, &addr);  // the kernel accepts; nobody answers
  const std::string url = UrlOf(addr);
  CommandResult r = RunCommand(kBin + "dropk sample --prompt a --timeout 1 --url " + url);
  close(listener);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + url +
                       ": the server sent nothing for 1 s (--timeout); it is stalled or still "
                       "busy\n");

  std::vector<std::string> pieces = {StreamHead()};
  for (int i = 0; i < 6; ++i) pieces.push_back(TextEvent("x"));
  pieces.push_back(Chunk("data: [DONE]\n\n") + "0\r\n\r\n");
  CannedServer drip(pieces, std::chrono::milliseconds(500));  // 3.5 s in all
  r = RunCommand(kBin + "dropk sample --stream --prompt a --timeout 2 --url " + drip.url());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "xxxxxx\n");
}

// A stream of keep-alive comments and nothing else renewed --timeout at
// each comment: dropk waited for as long as the server kept it up (for good,
// for one that never ends). Comments keep a stream open but are no
// progress: after --timeout seconds without an event, dropk gives up,
// saying what it got.
TEST(SampleCliTest, KeepAliveCommentsAloneDoNotHoldOffTheTimeout) {
  std::vector<std::string> pieces = {StreamHead() + Chunk(": keep-alive\n\n")};
  for (int i = 0; i < 12; ++i) pieces.push_back(Chunk(": keep-alive\n\n"));
  pieces.push_back(Chunk("data: [DONE]\n\n") + "0\r\n\r\n");
  CannedServer server(pieces, std::chrono::milliseconds(250));  // 3.25 s in all
  const auto start = std::chrono::steady_clock::now();
  const CommandResult r =
      RunCommand(kBin + "dropk sample --stream --prompt a --timeout 1 --url " + server.url());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2500));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + server.url() +
                       ": the server sent only keep-alive comments, no event, for 1 s "
                       "(--timeout); it is stalled or still busy\n");
}

// A host that never completes the connection (a firewall dropping packets,
// here a listener whose queue is full) was waited for 30 s whatever
// --timeout said, and the message named no flag. --timeout bounds the
// connection too.
TEST(SampleCliTest, AConnectionNeverCompletedIsBoundedByTimeout) {
  sockaddr_in addr;
  const int listener = IdleListener(0, &addr);
  // Connections nobody accepts fill the queue; the kernel then drops SYNs.
  std::vector<int> fillers;
  for (int i = 0; i < 8; ++i) {
    fillers.push_back(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    connect(fillers.back(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::string url = UrlOf(addr);
  // timeout(1) ends the old 30 s wait: the test fails, not waits.
  const CommandResult r =
      RunCommand("timeout 20 " + kBin + "dropk sample --prompt a --timeout 2 --url " + url);
  for (const int fd : fillers) close(fd);
  close(listener);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + url +
                       ": no connection within 2 s (--timeout, at most 30 s for the "
                       "connection)\n");
}

// The host name lookup was bound only by the system resolver: with a DNS
// server that never answers, `--timeout 1` waited the resolver's own
// timeout and retries (here 30 s; 10 s and more a try by default). The
// lookup shares the connection's deadline, and the message names the host
// and the timeout. The dead DNS server is a UDP socket that never answers,
// named by a resolv.conf of this test's own, in a mount namespace (root).
TEST(SampleCliTest, AHostNameLookupThatNeverAnswersIsBoundedByTimeout) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a resolv.conf in its own mount namespace";
  const int dns = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(53);  // resolv.conf names no port
  addr.sin_addr.s_addr = inet_addr("127.0.0.77");
  ASSERT_EQ(bind(dns, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << errno;
  const std::string dir = ::testing::TempDir() + "/dropk_sample_dns_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/resolv.conf") << "nameserver 127.0.0.77\noptions timeout:30 attempts:1\n";
  const std::string url = "http://dropk-lookup-test.invalid:8080";
  const auto start = std::chrono::steady_clock::now();
  // timeout(1) ends the old 30 s wait: the test fails, not waits.
  const CommandResult r = RunCommand("unshare -m sh -c 'mount --bind " + dir +
                                     "/resolv.conf /etc/resolv.conf && exec timeout 20 " + kBin +
                                     "dropk sample --prompt a --timeout 1 --url " + url + "'");
  const auto took = std::chrono::steady_clock::now() - start;
  close(dns);
  std::filesystem::remove_all(dir);
  if (r.exit_code != 0 && r.err.find("dropk") == std::string::npos && r.exit_code != 124) {
    GTEST_SKIP() << "no private resolv.conf in a mount namespace here: " << r.err;
  }
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "dropk: " + url +
                       ": the name lookup of dropk-lookup-test.invalid gave no answer within 1 s "
                       "(--timeout, at most 30 s for the connection); is a DNS server reachable "
                       "from here?\n");
  EXPECT_LT(took, std::chrono::seconds(5));
}

}  // namespace
}  // namespace dropk
