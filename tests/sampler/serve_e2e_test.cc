// End to end with the real binaries: train a tiny model that writes
// checkpoints, start dropk-serve on a free loopback port, query it with curl
// and `dropk sample`, hot-reload under continuous traffic (a newer
// checkpoint, then a corrupt one that must be refused), SIGTERM exits 0.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "gtest/gtest.h"
#include "model/inference.h"
#include "nlohmann/json.hpp"
#include "sampler/model_snapshot.h"
#include "test_util.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::Curl;
using testing::RunCommand;

const std::string kBin = std::string(DROPK_BINARY_DIR) + "/bin/";
const std::string kSrc = DROPK_SOURCE_DIR;

// Opens `count` TCP connections to the service on 127.0.0.1:port that send
// nothing, appending their descriptors to *fds (the caller closes them).
void ConnectIdle(int port, int count, std::vector<int>* fds) {
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    fds->push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
}

class ServeE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dropk_serve_e2e_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto r = RunCommand(kBin + "dropk data prepare --tokenizer char --out " +
                        (dir_ / "data").string() + " " + kSrc + "/data/tinyshakespeare.txt 2>&1");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    r = RunCommand(Train(20));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    ASSERT_TRUE(fs::exists(dir_ / "run/checkpoints/LATEST"));
  }
  void TearDown() override {
    StopServer(SIGKILL);
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string Train(int max_iters, const std::string& extra = "") {
    return "cd " + kSrc + " && OMP_NUM_THREADS=1 " + kBin +
           "dropk-train --config configs/tiny_smoke.textproto --data_dir=" +
           (dir_ / "data").string() + " --out_dir=" + (dir_ / "run").string() +
           " --max_iters=" + std::to_string(max_iters) +
           " --save_every=10 --eval_interval=10 --eval_iters=1 --log_interval=10 "
           "--sample_tokens=0 " +
           extra + " 2>&1";
  }
  // Starts dropk-serve with `extra` flags; `shell_prefix` runs first in its
  // shell (e.g. "ulimit -S -n 64; "), `runner` runs it (e.g. "setpriv ... ").
  void StartServer(const std::string& extra = "", const std::string& shell_prefix = "",
                   const std::string& runner = "") {
    const std::string port_file = (dir_ / "port").string();
    fs::remove(port_file);
    const std::string cmd = kBin + "dropk-serve --checkpoints " +
                            (dir_ / "run/checkpoints").string() + " --port 0 --port-file " +
                            port_file + " --watch --watch-interval-ms 100 --threads 1 " + extra +
                            " 2>>" + (dir_ / "serve.log").string();
    pid_ = fork();
    if (pid_ == 0) {
      // A runner that ignores SIGHUP or SIGINT (nohup ctest, a script's
      // background job) would pass that on, and the service would keep
      // ignoring them; a test that wants them ignored says so in
      // shell_prefix ("trap '' HUP INT; ").
      signal(SIGHUP, SIG_DFL);
      signal(SIGINT, SIG_DFL);
      execl("/bin/sh", "sh", "-c", (shell_prefix + "exec " + runner + cmd).c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 300 && !fs::exists(port_file); ++i) {  // bounded: 30 s
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(fs::exists(port_file)) << Log();
    std::ifstream(port_file) >> port_;
  }
  int StopServer(int sig) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    for (int i = 0; i < 300; ++i) {  // bounded: 30 s, then SIGKILL
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return -2;
  }
  int64_t ServedStep() {
    const auto r = Curl(port_, "GET", "/readyz");
    if (r.code != 200) return -1;
    return json::parse(r.body)["checkpoint_step"].get<int64_t>();
  }
  // Waits (at most 10 s) until the service is generating for some request,
  // per /metrics' running batch size; false if it never was.
  bool WaitUntilGenerating() {
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (Curl(port_, "GET", "/metrics").body.find("dropk_running_batch_size 0") ==
          std::string::npos) {
        return true;
      }
    }
    return false;
  }
  // What a CPU engine flag (`flag`, e.g. "--weights bf16") promises beside
  // the server started with it, whose answer to kSeededRequest had `text`:
  // `dropk sample --checkpoint` with the flag prints that text and says
  // (`setting`, e.g. "weights bf16, KV cache fp32") that it held the model so;
  // with --url the flag is refused (exit 2), as it is by dropk-serve
  // --device cuda, which names it.
  void ExpectOfflineSamplingMatchesAndCudaRefuses(const std::string& flag,
                                                  const std::string& setting,
                                                  const std::string& text) {
    const std::string flag_name = flag.substr(0, flag.find(' '));
    const std::string sample_flags = " --prompt 'ROMEO:' --max-tokens 20 --top-k 5 --seed 3";
    const auto offline = RunCommand(kBin + "dropk sample " + flag + " --checkpoint " +
                                    (dir_ / "run/checkpoints").string() + sample_flags);
    ASSERT_EQ(offline.exit_code, 0) << offline.err;
    EXPECT_EQ(offline.out, text + "\n");
    EXPECT_NE(offline.err.find("(offline: " + setting + ")"), std::string::npos) << offline.err;
    const auto via_url = RunCommand(kBin + "dropk sample " + flag + " --url http://127.0.0.1:" +
                                    std::to_string(port_) + sample_flags + " 2>&1");
    EXPECT_EQ(via_url.exit_code, 2) << via_url.out;
    EXPECT_NE(via_url.out.find(flag_name), std::string::npos) << via_url.out;
    const auto cuda = RunCommand(kBin + "dropk-serve --port 0 --device cuda " + flag +
                                 " --checkpoints " + (dir_ / "run/checkpoints").string() + " 2>&1");
    EXPECT_EQ(cuda.exit_code, 2) << cuda.out;
    EXPECT_NE(cuda.out.find(flag + ": only the CPU engine"), std::string::npos) << cuda.out;
  }
  // The request ExpectOfflineSamplingMatchesAndCudaRefuses samples offline.
  static constexpr char kSeededRequest[] =
      R"({"prompt":"ROMEO:","max_tokens":20,"top_k":5,"seed":3})";
  // The StartServer runner that makes the service see permissions as a user
  // does: root reads anything, so under root it runs as nobody (setpriv);
  // "" otherwise. nullopt: root without setpriv, the test cannot run.
  static std::optional<std::string> UnprivilegedRunner() {
    if (::geteuid() != 0) return "";
    if (std::system("command -v setpriv > /dev/null") != 0) return std::nullopt;
    return "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  }
  std::string Log() {
    std::ifstream in(dir_ / "serve.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

TEST_F(ServeE2eTest, ServesReloadsRefusesBadCheckpointsAndDrains) {
  StartServer();
  ASSERT_EQ(ServedStep(), 20) << Log();
  // Seeded completions reproduce; top_k=1 equals greedy.
  const std::string req = R"({"prompt":"ROMEO:","max_tokens":20,"top_k":5,"seed":3})";
  const auto a = Curl(port_, "POST", "/v1/completions", req);
  const auto b = Curl(port_, "POST", "/v1/completions", req);
  ASSERT_EQ(a.code, 200) << a.body;
  EXPECT_EQ(json::parse(a.body)["choices"], json::parse(b.body)["choices"]);
  EXPECT_EQ(json::parse(Curl(port_, "POST", "/v1/completions",
                             R"({"prompt":"ROMEO:","max_tokens":20,"temperature":0})")
                            .body)["choices"][0]["text"],
            json::parse(Curl(port_, "POST", "/v1/completions",
                             R"({"prompt":"ROMEO:","max_tokens":20,"top_k":1,"seed":8})")
                            .body)["choices"][0]["text"]);
  // dropk sample: over HTTP (plain and streamed) and offline print the same text.
  const std::string flags = " --prompt 'ROMEO:' --max-tokens 20 --top-k 5 --seed 3";
  const auto via_url =
      RunCommand(kBin + "dropk sample --url http://127.0.0.1:" + std::to_string(port_) + flags +
                 " 2>/dev/null");
  const auto via_stream =
      RunCommand(kBin + "dropk sample --stream --url http://127.0.0.1:" + std::to_string(port_) +
                 flags + " 2>/dev/null");
  const auto offline = RunCommand(kBin + "dropk sample --checkpoint " +
                                  (dir_ / "run/checkpoints").string() + flags + " 2>/dev/null");
  ASSERT_EQ(via_url.exit_code, 0);
  EXPECT_EQ(via_url.out, json::parse(a.body)["choices"][0]["text"].get<std::string>() + "\n");
  EXPECT_EQ(via_stream.out, via_url.out);
  EXPECT_EQ(offline.out, via_url.out);

  // Hot reload under continuous traffic: no request fails.
  std::atomic<bool> go{true};
  std::atomic<int> ok{0}, failed{0};
  std::string first_failure;  // written by the traffic thread, read after join
  std::thread traffic([&] {
    for (int i = 0; go && i < 100000; ++i) {
      const auto r =
          Curl(port_, "POST", "/v1/completions", R"({"prompt":"ROMEO:","max_tokens":8,"seed":1})");
      if (r.code == 200) {
        ++ok;
      } else if (failed++ == 0) {
        first_failure = "HTTP " + std::to_string(r.code) + ": " + r.body;
      }
    }
  });
  const auto trained = RunCommand(Train(30, "--resume=latest"));
  EXPECT_EQ(trained.exit_code, 0) << trained.out;
  for (int i = 0; i < 100 && ServedStep() != 30; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ServedStep(), 30) << Log();
  // A corrupt newest checkpoint is refused; the old one keeps serving.
  const fs::path bad = dir_ / "run/checkpoints/step-00000040";
  fs::create_directories(bad);
  std::ofstream(bad / "manifest.pb") << "garbage";
  std::ofstream(dir_ / "run/checkpoints/LATEST.tmp") << "step-00000040\n";
  fs::rename(dir_ / "run/checkpoints/LATEST.tmp", dir_ / "run/checkpoints/LATEST");
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    refused = Curl(port_, "GET", "/metrics").body.find("dropk_reload_failures_total 1") !=
              std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  go = false;
  traffic.join();
  EXPECT_TRUE(refused) << Log();
  EXPECT_EQ(ServedStep(), 30);
  EXPECT_EQ(failed, 0) << first_failure << "\n" << Log();
  EXPECT_GT(ok, 0);
  EXPECT_NE(Curl(port_, "GET", "/metrics").body.find("dropk_reloads_total 1"), std::string::npos);
  // SIGTERM drains and exits 0.
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// --weights bf16: the service says so at start, a seed's text reproduces,
// and `dropk sample --checkpoint --weights bf16` prints the server's text.
// With --device cuda, or with dropk sample --url, the flag is refused.
TEST_F(ServeE2eTest, Bf16WeightsReproduceAndMatchOfflineSampling) {
  StartServer("--weights bf16");
  ASSERT_EQ(ServedStep(), 20) << Log();
  EXPECT_NE(Log().find("(weights rounded to bf16)"), std::string::npos) << Log();
  const auto a = Curl(port_, "POST", "/v1/completions", kSeededRequest);
  const auto b = Curl(port_, "POST", "/v1/completions", kSeededRequest);
  ASSERT_EQ(a.code, 200) << a.body;
  EXPECT_EQ(json::parse(a.body)["choices"], json::parse(b.body)["choices"]);
  ExpectOfflineSamplingMatchesAndCudaRefuses(
      "--weights bf16", "weights bf16, KV cache fp32",
      json::parse(a.body)["choices"][0]["text"].get<std::string>());
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// --kv-cache bf16: the service says so at start, a seed's text reproduces,
// its logprobs are not those of an fp32 cache (the flag reaches the engine),
// and `dropk sample --checkpoint --kv-cache bf16` prints the server's text.
// With --device cuda, or with dropk sample --url, the flag is refused.
TEST_F(ServeE2eTest, Bf16KvCacheReproducesAndMatchesOfflineSampling) {
  // kSeededRequest with the chosen token's logprob, which shows the cache's
  // rounding where the text may not.
  const std::string with_logprobs =
      R"({"prompt":"ROMEO:","max_tokens":20,"top_k":5,"seed":3,"logprobs":0})";
  StartServer();
  ASSERT_EQ(ServedStep(), 20) << Log();
  const auto fp32 = Curl(port_, "POST", "/v1/completions", with_logprobs);
  ASSERT_EQ(fp32.code, 200) << fp32.body;
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();

  StartServer("--kv-cache bf16");
  ASSERT_EQ(ServedStep(), 20) << Log();
  EXPECT_NE(Log().find("(KV cache in bf16)"), std::string::npos) << Log();
  const auto a = Curl(port_, "POST", "/v1/completions", with_logprobs);
  const auto b = Curl(port_, "POST", "/v1/completions", with_logprobs);
  ASSERT_EQ(a.code, 200) << a.body;
  EXPECT_EQ(json::parse(a.body)["choices"], json::parse(b.body)["choices"]);
  const json logprobs = json::parse(a.body)["choices"][0]["logprobs"];
  ASSERT_TRUE(logprobs.is_object()) << a.body;
  EXPECT_NE(logprobs, json::parse(fp32.body)["choices"][0]["logprobs"]);
  ExpectOfflineSamplingMatchesAndCudaRefuses(
      "--kv-cache bf16", "weights fp32, KV cache bf16",
      json::parse(a.body)["choices"][0]["text"].get<std::string>());
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// A service started before the run's first checkpoint logged "reload
// refused" and counted a failure at every poll (10 lines a second at 100 ms)
// until one came; LATEST rewritten to name the checkpoint already served
// was logged and counted as a refused reload. Now: one line for the wait,
// the checkpoint served when it comes, and no refusal for the rewrite.
TEST_F(ServeE2eTest, WaitsQuietlyForAFirstCheckpointAndARewrittenLatestIsNoRefusal) {
  const fs::path checkpoints = dir_ / "run/checkpoints";
  fs::rename(checkpoints, dir_ / "held");
  StartServer();
  std::this_thread::sleep_for(std::chrono::seconds(1));  // ~10 polls with nothing to serve
  const auto count = [this](const std::string& what) {
    const std::string log = Log();
    int n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("no servable checkpoint yet"), 1) << Log();
  EXPECT_EQ(count("reload refused"), 0) << Log();
  fs::rename(dir_ / "held", checkpoints);
  for (int i = 0; i < 100 && ServedStep() != 20; ++i) {  // bounded: 10 s
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(ServedStep(), 20) << Log();
  std::ofstream(checkpoints / "LATEST.tmp") << "step-00000020\n\n";
  fs::rename(checkpoints / "LATEST.tmp", checkpoints / "LATEST");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(count("reload refused"), 0) << Log();
  EXPECT_NE(Curl(port_, "GET", "/metrics").body.find("dropk_reload_failures_total 0"),
            std::string::npos);
  EXPECT_EQ(ServedStep(), 20);
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// LATEST that names a checkpoint not there yet (rsync copies LATEST before
// the step-* directory it names; NFS may show it first) was skipped at
// start (an older one served) or refused while serving, and once the
// checkpoint arrived it was never served: with a model served, only a
// change of LATEST itself was looked at.
TEST_F(ServeE2eTest, ALatestWhoseCheckpointArrivesLateIsServedOnceItArrives) {
  const fs::path checkpoints = dir_ / "run/checkpoints";
  const auto trained = RunCommand(Train(40, "--resume=latest"));
  ASSERT_EQ(trained.exit_code, 0) << trained.out;
  fs::rename(checkpoints / "step-00000030", dir_ / "held30");
  fs::rename(checkpoints / "step-00000040", dir_ / "held40");
  const auto point_latest_at = [&](const std::string& step_dir) {
    std::ofstream(checkpoints / "LATEST.tmp") << step_dir << "\n";
    fs::rename(checkpoints / "LATEST.tmp", checkpoints / "LATEST");
  };
  const auto served_within_10s = [&](int64_t step) {
    for (int i = 0; i < 100 && ServedStep() != step; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return ServedStep() == step;
  };
  // At start: step 30 is skipped, step 20 served.
  point_latest_at("step-00000030");
  StartServer();
  ASSERT_EQ(ServedStep(), 20) << Log();
  fs::rename(dir_ / "held30", checkpoints / "step-00000030");
  EXPECT_TRUE(served_within_10s(30)) << Log();
  // While serving: step 40 is refused, step 30 kept.
  point_latest_at("step-00000040");
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {  // bounded: 10 s
    refused = Curl(port_, "GET", "/metrics").body.find("dropk_reload_failures_total 1") !=
              std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(refused) << Log();
  EXPECT_EQ(ServedStep(), 30);
  fs::rename(dir_ / "held40", checkpoints / "step-00000040");
  EXPECT_TRUE(served_within_10s(40)) << Log();
  EXPECT_NE(Curl(port_, "GET", "/metrics").body.find("dropk_reloads_total 2"), std::string::npos);
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// Permissions, as the service's user sees them. A checkpoint refused for a
// file it may not read (copied in as another user, mode 600) was never
// looked at again once made readable: a chmod changes no size and no
// modification time, all the watcher compared. A checkpoints directory that
// may not be searched is a refusal naming why, not "LATEST was removed".
TEST_F(ServeE2eTest, ACheckpointMadeReadableIsServedAndAnUnsearchableDirectoryIsNoRemoval) {
  const std::optional<std::string> runner_or = UnprivilegedRunner();
  if (!runner_or) GTEST_SKIP() << "running as root without setpriv: cannot make a file unreadable";
  const std::string runner = *runner_or;
  fs::permissions(dir_, fs::perms::all);  // nobody writes the port file
  const fs::path checkpoints = dir_ / "run/checkpoints";
  const auto point_latest_at = [&](const std::string& step_dir) {
    std::ofstream(checkpoints / "LATEST.tmp") << step_dir << "\n";
    fs::rename(checkpoints / "LATEST.tmp", checkpoints / "LATEST");
  };
  point_latest_at("step-00000010");
  StartServer("", "", runner);
  ASSERT_EQ(ServedStep(), 10) << Log();

  fs::permissions(checkpoints / "step-00000020/model.data", fs::perms::none);
  point_latest_at("step-00000020");
  for (int i = 0; i < 100 && Log().find("Permission denied") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // bounded: 10 s
  }
  ASSERT_NE(Log().find("reload refused"), std::string::npos) << Log();
  EXPECT_EQ(ServedStep(), 10);
  fs::permissions(checkpoints / "step-00000020/model.data",
                  fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                      fs::perms::others_read);
  for (int i = 0; i < 100 && ServedStep() != 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // bounded: 10 s
  }
  EXPECT_EQ(ServedStep(), 20) << Log();

  const size_t before = Log().size();
  fs::permissions(checkpoints, fs::perms::none);
  std::string since;
  for (int i = 0; i < 100 && since.find("Permission denied") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // bounded: 10 s
    since = Log().substr(before);
  }
  fs::permissions(checkpoints, fs::perms::owner_all | fs::perms::group_read |
                                   fs::perms::group_exec | fs::perms::others_read |
                                   fs::perms::others_exec);
  EXPECT_NE(since.find("reload refused, keeping " + checkpoints.string() + "/step-00000020"),
            std::string::npos)
      << since;
  EXPECT_EQ(since.find("was removed"), std::string::npos) << since;
  EXPECT_EQ(ServedStep(), 20);
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// A checkpoints directory the service's user may not list read "no valid
// checkpoint in DIR" alone, as if it held none; the reason is named now.
TEST_F(ServeE2eTest, AnUnlistableCheckpointsDirectoryIsNamedWithItsReason) {
  const std::optional<std::string> runner_or = UnprivilegedRunner();
  if (!runner_or) {
    GTEST_SKIP() << "running as root without setpriv: cannot make a directory unlistable";
  }
  const std::string runner = *runner_or;
  const fs::path checkpoints = dir_ / "run/checkpoints";
  fs::permissions(checkpoints, fs::perms::none);
  const auto r = RunCommand(runner + kBin + "dropk-serve --port 0 --checkpoints " +
                            checkpoints.string() + " 2>&1");
  fs::permissions(checkpoints, fs::perms::owner_all);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("no valid checkpoint in " + checkpoints.string() + " (" +
                       checkpoints.string() + ": list directory: Permission denied)"),
            std::string::npos)
      << r.out;
}

TEST_F(ServeE2eTest, ApiKeyFile) {
  std::ofstream(dir_ / "key") << "k-123\n";
  StartServer("--api-key-file " + (dir_ / "key").string());
  EXPECT_EQ(Curl(port_, "GET", "/healthz").code, 200);
  EXPECT_EQ(Curl(port_, "GET", "/readyz").code, 401);
  EXPECT_EQ(Curl(port_, "GET", "/readyz", "", "-H 'Authorization: Bearer k-123'").code, 200);
  EXPECT_EQ(StopServer(SIGTERM), 0);
}

// A hangup (the ssh session dropped) killed the service at once (exit 129),
// the running request lost without a word. It drains like SIGTERM: the
// request is answered and the service exits 0. Under nohup (SIGHUP ignored
// at start) it stays ignored, as does a SIGINT ignored at start (a script's
// background job), which drained the service.
TEST_F(ServeE2eTest, SighupDrainsLikeSigtermAndSignalsIgnoredAtStartStayIgnored) {
  StartServer("--drain-ms 60000");
  testing::HttpResult answer;
  std::thread request([&] {
    answer = Curl(port_, "POST", "/v1/completions",
                  R"({"prompt":"ROMEO:","max_tokens":8192,"n":4,"seed":5})", "--max-time 90");
  });
  absl::Cleanup stop_then_join = [&] {
    StopServer(SIGKILL);
    request.join();
  };
  ASSERT_TRUE(WaitUntilGenerating()) << Curl(port_, "GET", "/metrics").body;
  EXPECT_EQ(StopServer(SIGHUP), 0) << Log();
  std::move(stop_then_join).Invoke();
  EXPECT_EQ(answer.code, 200) << answer.body;
  EXPECT_NE(Log().find("dropk-serve: SIGHUP, draining (deadline 60000 ms; a second SIGTERM, "
                       "SIGINT or SIGHUP stops at once)"),
            std::string::npos)
      << Log();

  StartServer("", "trap '' HUP INT; ");
  kill(pid_, SIGHUP);
  kill(pid_, SIGINT);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  int status = 0;
  EXPECT_EQ(waitpid(pid_, &status, WNOHANG), 0)
      << "a SIGHUP or SIGINT ignored at start stopped it\n"
      << Log();
  EXPECT_EQ(ServedStep(), 20);
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
  // The drain's line names only what stops it: not the ignored ones.
  EXPECT_NE(Log().find("a second SIGTERM stops at once)"), std::string::npos) << Log();
}

// A second SIGTERM during the drain stops at once: it was blocked, so the
// service went on draining a long stream (8 x 8192 tokens, about 9 s here)
// until it ended or --drain-ms (here a minute) passed.
TEST_F(ServeE2eTest, SecondSigtermDuringTheDrainStopsAtOnce) {
  StartServer("--drain-ms 60000");
  const std::string body =
      R"({"prompt":"ROMEO:","max_tokens":8192,"n":8,"stream":true,"seed":5})";
  std::thread stream([&] {
    Curl(port_, "POST", "/v1/completions", body, "-N --max-time 90 -o /dev/null");
  });
  // On every way out: the service goes first, so the stream ends and joins.
  absl::Cleanup stop_then_join = [&] {
    StopServer(SIGKILL);
    stream.join();
  };
  ASSERT_TRUE(WaitUntilGenerating()) << Curl(port_, "GET", "/metrics").body;
  kill(pid_, SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  int status = 0;
  ASSERT_EQ(waitpid(pid_, &status, WNOHANG), 0)
      << "the first SIGTERM must drain the stream, not end the service\n"
      << Log();
  const auto t0 = std::chrono::steady_clock::now();
  const int code = StopServer(SIGTERM);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code, 1) << Log();
  EXPECT_LT(seconds, 3.0) << "the second SIGTERM waited for the drain";
  EXPECT_NE(Log().find("second SIGTERM during the drain: stopping now"), std::string::npos)
      << Log();
}

// A --port-file that cannot be written stops the service with one line
// naming it (it was an uncaught std::filesystem exception: an abort), as a
// bad flag: exit 2.
TEST_F(ServeE2eTest, UnwritablePortFileIsOneLineNotACrash) {
  const auto r = RunCommand(kBin + "dropk-serve --port 0 --checkpoints " +
                            (dir_ / "run/checkpoints").string() + " --port-file " +
                            (dir_ / "no_such_dir/port").string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--port-file " + (dir_ / "no_such_dir/port").string()), std::string::npos)
      << r.err;
}

// Every connection holds a file descriptor: with a soft limit of 64, 200 idle
// connections locked everyone else out until they timed out. The service
// raises its soft limit to the hard one and answers beside them.
TEST_F(ServeE2eTest, IdleConnectionsPastTheSoftFileLimitDoNotLockOthersOut) {
  StartServer("", "ulimit -S -n 64; ");
  std::vector<int> idle;
  ASSERT_NO_FATAL_FAILURE(ConnectIdle(port_, 200, &idle));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the service accept them
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = Curl(port_, "GET", "/healthz");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const int fd : idle) close(fd);
  EXPECT_EQ(r.code, 200) << Log();
  EXPECT_LT(seconds, 5.0) << "answered only after the idle connections timed out";
  EXPECT_NE(Log().find("open-file limit raised from 64"), std::string::npos) << Log();
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// Bytes process `pid` has read through read-like calls (rchar), from /proc.
int64_t ProcessBytesRead(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/io");
  std::string key;
  int64_t value = 0;
  while (in >> key >> value) {
    if (key == "rchar:") return value;
  }
  return -1;
}

// Flips one byte in the middle of `path`; returns the file's bytes before.
std::string CorruptFile(const fs::path& path) {
  const std::string before = test_util::ReadFile(path.string());
  if (before.empty()) ADD_FAILURE() << path << " is missing or empty";
  std::string after = before;
  if (!after.empty()) after[after.size() / 2] ^= 0x5a;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << after;
  return before;
}

// --watch with no servable checkpoint yet re-verified every checkpoint at
// every poll, optimizer files included (146 MB read in 5 s for a 28 MB run,
// forever). Now it scans again only when LATEST or a candidate's files
// change, and verifies what serving reads (manifest and weights): a
// checkpoint whose optimizer file alone is corrupt is served (a resume and
// `dropk ckpt verify` still refuse it).
TEST_F(ServeE2eTest, WatchWithNothingServableDoesNotRescanAndIgnoresOptimizerState) {
  const fs::path checkpoints = dir_ / "run/checkpoints";
  const fs::path newest = checkpoints / "step-00000020";
  const std::string model = CorruptFile(newest / "model.data");
  CorruptFile(newest / "optim-rank00000-of-00001.data");
  CorruptFile(checkpoints / "step-00000010/model.data");
  StartServer();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the first scans are done
  const int64_t read0 = ProcessBytesRead(pid_);
  ASSERT_GE(read0, 0);
  std::this_thread::sleep_for(std::chrono::seconds(2));  // ~20 polls at 100 ms
  const int64_t read = ProcessBytesRead(pid_) - read0;
  EXPECT_LT(read, static_cast<int64_t>(model.size()))
      << "bytes read in 2 s of polls with nothing changed (model.data is " << model.size() << ")";
  EXPECT_EQ(ServedStep(), -1);
  // Repaired in place: the change is seen and the weights served, though
  // the optimizer file beside them is still corrupt.
  std::ofstream(newest / "model.data", std::ios::binary | std::ios::trunc) << model;
  for (int i = 0; i < 100 && ServedStep() != 20; ++i) {  // bounded: 10 s
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ServedStep(), 20) << Log();
  EXPECT_NE(RunCommand(kBin + "dropk ckpt verify " + newest.string() + " 2>&1").exit_code, 0);
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// CPU seconds (user + system) process `pid` has used, from /proc.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  // Fields after the command name, which may hold spaces: state is field 3,
  // utime and stime fields 14 and 15.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i >= 14) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// With `ulimit -n 64` and 80 idle connections, every accept failed at once
// (EMFILE) and was retried at once: the service burned a core, /healthz
// timed out, and nothing was logged. It now says so once, backs off
// (50 ms to 500 ms), and accepts again once descriptors are free.
TEST_F(ServeE2eTest, OutOfDescriptorsBacksOffAndSaysSoOnce) {
  StartServer("", "ulimit -n 64; ");
  std::vector<int> idle;
  ASSERT_NO_FATAL_FAILURE(ConnectIdle(port_, 80, &idle));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // accepted until it ran out
  const double cpu0 = ProcessCpuSeconds(pid_);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const double cpu = ProcessCpuSeconds(pid_) - cpu0;
  EXPECT_LT(cpu, 0.5) << "CPU seconds in 2 s while out of descriptors";
  const std::string log = Log();
  const std::string said = "cannot accept connections: Too many open files (open-file limit 64";
  const size_t at = log.find(said);
  ASSERT_NE(at, std::string::npos) << log;
  EXPECT_EQ(log.find("cannot accept connections", at + 1), std::string::npos)
      << "said more than once: " << log;
  for (const int fd : idle) close(fd);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(Curl(port_, "GET", "/healthz").code, 200) << Log();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_NE(Log().find("accepting connections again"), std::string::npos) << Log();
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// dropk-serve --device cuda. Without a GPU it stops at start with exit 1 and
// one line naming the device. With one, a seeded request gives the same text
// alone and among 15 concurrent others (batch invariance on the GPU).
TEST_F(ServeE2eTest, DeviceCudaSameSeedUnderLoadOrOneLineWithoutGpu) {
  const GptConfig tiny = testing::TinyConfig(61, 32);
  InferenceOptions cuda;
  cuda.device = Device::kCuda;
  cuda.max_slots = 1;
  if (!MakeInferenceEngine(tiny, testing::RandomParams(tiny, 1), cuda).ok()) {
    const auto r = RunCommand(kBin + "dropk-serve --port 0 --device cuda --checkpoints " +
                              (dir_ / "run/checkpoints").string());
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.err.find("device cuda"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "");
    return;
  }
  StartServer("--device cuda --max-batch 16");
  const std::string req = R"({"prompt":"ROMEO:","max_tokens":40,"top_k":20,"seed":1234})";
  const auto alone = Curl(port_, "POST", "/v1/completions", req);
  ASSERT_EQ(alone.code, 200) << alone.body << Log();
  std::vector<std::thread> others;
  for (int i = 0; i < 15; ++i) {
    others.emplace_back([this, i] {
      Curl(port_, "POST", "/v1/completions",
           json{{"prompt", std::string(1 + i % 4, 'a' + i)}, {"max_tokens", 60}, {"seed", i}}
               .dump());
    });
  }
  const auto loaded = Curl(port_, "POST", "/v1/completions", req);
  for (std::thread& t : others) t.join();
  ASSERT_EQ(loaded.code, 200) << loaded.body;
  EXPECT_EQ(json::parse(alone.body)["choices"][0]["text"],
            json::parse(loaded.body)["choices"][0]["text"]);
  EXPECT_EQ(StopServer(SIGTERM), 0) << Log();
}

// --device cuda with --watch where the GPU cannot be used: every load failed,
// and the service logged "no servable checkpoint yet (... no CUDA device
// ...); watching" and ran for good, never ready (without --watch, exit 1).
// The device is probed before anything listens: exit 1 and one line naming
// --device, in both modes. --cuda-device 99 is unusable on every machine (no
// GPU, too few GPUs, or a build without CUDA). timeout bounds a hang.
TEST_F(ServeE2eTest, AnUnusableCudaDeviceStopsAtStartAlsoWithWatch) {
  const fs::path empty = dir_ / "empty_checkpoints";
  fs::create_directories(empty);
  for (const std::string watch : {"", "--watch "}) {
    const auto r = RunCommand("timeout 30 " + kBin + "dropk-serve --port 0 --device cuda " +
                              "--cuda-device 99 " + watch + "--checkpoints " + empty.string());
    EXPECT_EQ(r.exit_code, 1) << watch << r.out << r.err;
    EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << watch << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << watch << r.err;
    EXPECT_EQ(r.err.find("listening"), std::string::npos) << watch << r.err;
  }
}

}  // namespace
}  // namespace dropk
