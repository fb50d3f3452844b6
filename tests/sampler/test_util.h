// Shared helpers of the sampler tests: in-process models (random weights from
// the model's own Philox initialisation) and small HTTP helpers around curl.
#ifndef DROPK_TESTS_SAMPLER_TEST_UTIL_H_
#define DROPK_TESTS_SAMPLER_TEST_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/gpt.h"
#include "model/gpt2_vocab_files.h"
#include "model/inference.h"
#include "model/kernels.h"
#include "model/tokenizer.h"
#include "sampler/model_snapshot.h"
#include "support/subprocess.h"

namespace dropk::testing {

inline constexpr char kCorpus[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-\n";

inline GptConfig TinyConfig(int vocab, int block_size = 64) {
  return GptConfig{vocab, block_size, /*n_layer=*/2, /*n_head=*/2, /*n_embd=*/32};
}

inline std::vector<float> RandomParams(const GptConfig& config, uint64_t seed) {
  auto kernels = MakeKernels(Device::kCpu, 1);
  EXPECT_TRUE(kernels.ok());
  auto gpt = Gpt::Create(config, 1, kernels->get());
  EXPECT_TRUE(gpt.ok());
  (*gpt)->InitWeights(seed);
  std::vector<float> params((*gpt)->num_params());
  (*kernels)->CopyToHost(params.data(), (*gpt)->params(), params.size() * sizeof(float));
  return params;
}

// A char-level model over kCorpus with random weights.
inline std::shared_ptr<const ModelSnapshot> TestSnapshot(uint64_t seed = 1, int block_size = 64,
                                                         int n_layer = 2, int n_embd = 32,
                                                         int64_t step = 100) {
  auto tok = TextTokenizer::FromCorpus(Tokenizer::CHAR, kCorpus);
  EXPECT_TRUE(tok.ok());
  GptConfig config = TinyConfig(tok->vocab_size(), block_size);
  config.n_layer = n_layer;
  config.n_embd = n_embd;
  auto snap = MakeSnapshot(config, *tok, RandomParams(config, seed), step,
                           "dropk-step-" + std::to_string(step), "");
  EXPECT_TRUE(snap.ok()) << snap.status();
  return *snap;
}

// GPT-2's BPE tokenizer, from the files the repository carries.
inline TextTokenizer Gpt2Tokenizer() {
  const std::string dir = std::string(DROPK_SOURCE_DIR) + "/data/gpt2/";
  const auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  auto proto = Gpt2TokenizerFromFiles(read(dir + "encoder.json"), read(dir + "vocab.bpe"));
  EXPECT_TRUE(proto.ok()) << proto.status();
  auto tok = TextTokenizer::FromProto(*proto);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return *std::move(tok);
}

using test_util::CommandResult;
using test_util::RunCommand;

inline std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

struct HttpResult {
  int code = 0;
  std::string body;
};

// One request with curl (bounded by --max-time). `extra` goes on the command line.
inline HttpResult Curl(int port, const std::string& method, const std::string& path,
                       const std::string& body = "", const std::string& extra = "") {
  std::string cmd = "curl -s -S --max-time 60 -o - -w '\\n%{http_code}' -X " + method + " ";
  if (!body.empty())
    cmd += "-H 'Content-Type: application/json' --data-binary " + ShellQuote(body) + " ";
  cmd += extra + " http://127.0.0.1:" + std::to_string(port) + path + " 2>/dev/null";
  const CommandResult r = RunCommand(cmd);
  HttpResult h;
  const size_t nl = r.out.rfind('\n');
  if (nl == std::string::npos) return h;
  h.body = r.out.substr(0, nl);
  h.code = std::atoi(r.out.c_str() + nl + 1);
  return h;
}

struct RawResult {
  std::string received;  // every byte the server sent
  bool closed = false;   // the server closed the connection (EOF or reset) in time
  size_t sent = 0;       // bytes of the request sent before a send failed (EPIPE, reset)
};

// Connects to 127.0.0.1:port, sends `bytes` (optionally in two parts with a
// pause between), optionally shuts down the sending side (a half-close), and
// collects what the server sends until it closes or `timeout` passes.
inline RawResult RawExchange(int port, const std::string& bytes, bool half_close = false,
                             std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  RawResult r;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return r;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return r;
  }
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  r.sent = sent;
  if (half_close) shutdown(fd, SHUT_WR);
  const auto until = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      r.closed = true;
      break;
    }
    r.received.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return r;
}

// The JSON body of a raw HTTP response (after the blank line), or "" when
// there is none.
inline std::string RawBody(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

// DESIGN invariant 5 for any engine pair over the same weights (16 slots
// each): a sequence prefilled and decoded alone in `alone` slot 0 gets
// bitwise the same logits as in `crowd` slot 11 among crowd_size - 1 other
// sequences (other prompts and lengths; crowd_size in [12, 16]), with the
// step's rows reordered every step.
inline void ExpectDecodeBatchInvariant(InferenceEngine& alone, InferenceEngine& crowd,
                                       int crowd_size = 16) {
  ASSERT_GE(crowd_size, 12);
  ASSERT_LE(crowd_size, 16);
  const int V = alone.config().vocab_size;
  const std::vector<int32_t> prompt = {5, 6, 7, 8};
  std::vector<float> a(V);
  std::memcpy(a.data(), alone.Prefill(0, prompt), V * sizeof(float));
  for (int s = 0; s < crowd_size; ++s) {
    if (s == 11) continue;
    std::vector<int32_t> p(1 + s % 5, static_cast<int32_t>((s * 13) % V));
    crowd.Prefill(s, p);
  }
  ASSERT_EQ(0, std::memcmp(a.data(), crowd.Prefill(11, prompt), V * sizeof(float)));
  std::vector<int> slots(crowd_size);
  std::vector<int32_t> tokens(crowd_size);
  for (int step = 0; step < 30; ++step) {
    const int32_t next = (step * 11 + 1) % V;
    const int zero = 0;
    std::memcpy(a.data(), alone.Decode({&zero, 1}, {&next, 1}), V * sizeof(float));
    // Rows in a different order each step; our row at a moving index.
    for (int i = 0; i < crowd_size; ++i) {
      slots[i] = (i + step) % crowd_size;
      tokens[i] = slots[i] == 11 ? next : (step + slots[i]) % V;
    }
    const float* rows = crowd.Decode(slots, tokens);
    const int row = static_cast<int>(std::find(slots.begin(), slots.end(), 11) - slots.begin());
    ASSERT_EQ(0, std::memcmp(a.data(), rows + static_cast<size_t>(row) * V, V * sizeof(float)))
        << "step " << step;
  }
}

// PrefillMany for any engine pair over the same weights (at least 8 slots
// each, block_size at least 14): five prompts of 1 to 13 tokens prefilled in
// one step of `together`, in slots out of order and not contiguous, give
// each prompt's logits bit for bit as `alone` gives them for that prompt
// prefilled by itself in slot 0, and leave each slot's cache as such a
// prefill does (the next decode step, all five rows together, agrees too).
inline void ExpectPrefillManyGivesEachPromptItsOwnBits(InferenceEngine& alone,
                                                       InferenceEngine& together) {
  const std::vector<std::vector<int32_t>> prompts = {
      {5}, {1, 2, 3, 4, 5}, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12, 13}, {40, 41, 42}, {60, 3}};
  const std::vector<int> slots = {6, 0, 3, 1, 7};  // not in order, not contiguous
  const std::vector<std::span<const int32_t>> spans(prompts.begin(), prompts.end());
  const size_t V = together.config().vocab_size;
  const float* got = together.PrefillMany(slots, spans);
  const std::vector<float> all(got, got + prompts.size() * V);
  const std::vector<int32_t> next = {17, 18, 19, 20, 21};
  const float* stepped = together.Decode(slots, next);
  const std::vector<float> all_next(stepped, stepped + prompts.size() * V);
  for (size_t i = 0; i < prompts.size(); ++i) {
    alone.Reset(0);
    const float* want = alone.Prefill(0, prompts[i]);
    EXPECT_EQ(std::memcmp(want, all.data() + i * V, V * sizeof(float)), 0) << "prompt " << i;
    const int slot = 0;
    want = alone.Decode(std::span<const int>(&slot, 1), std::span<const int32_t>(&next[i], 1));
    EXPECT_EQ(std::memcmp(want, all_next.data() + i * V, V * sizeof(float)), 0)
        << "the step after prompt " << i;
    EXPECT_EQ(together.Length(slots[i]), static_cast<int>(prompts[i].size()) + 1);
  }
}

}  // namespace dropk::testing

#endif  // DROPK_TESTS_SAMPLER_TEST_UTIL_H_
