// dropk-serve: serves a training run's checkpoints over HTTP (see sampler/).
// Exit codes (base/exit_codes.h): 0 stopped by SIGTERM/SIGINT/SIGHUP, or
// --help or --version, 1 the service could not start, 2 a bad flag.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/cli_flag_values.h"
#include "base/cut_for_message.h"
#include "base/exit_codes.h"
#include "base/log.h"
#include "base/path_status.h"
#include "base/version.h"
#include "sampler/api_key_file.h"
#include "sampler/http_server.h"
#include "sampler/model_snapshot.h"
#include "sampler/serve.h"

namespace {

// Every integer flag is checked with dropk::IntegerFlagRange, as written and
// before CLI11 converts it: one past its type (--port 99999999999) was only
// CLI11's "Could not convert", and CLI::Range said "Value 1.5 not in range".
int Main(int argc, char** argv) {
  dropk::ServeOptions o;
  CLI::App app{"dropk-serve: OpenAI-compatible completions from a dropk run's checkpoints",
               "dropk-serve"};
  app.set_version_flag("--version", dropk::VersionLine("dropk-serve"));
  int watch_ms = 1000, drain_ms = 10000, header_ms = 10000, body_ms = 30000;
  std::string api_key_file;
  app.add_option("--checkpoints", o.checkpoints_dir, "The run's checkpoints directory")->required();
  app.add_flag("--watch", o.watch, "Hot-reload a new LATEST when it verifies");
  app.add_option("--watch-interval-ms", watch_ms, "How often LATEST is checked")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(10, 3600000));
  app.add_option("--address", o.http.address, "Address to bind (loopback by default)")
      ->capture_default_str();
  // Read as an int and range-checked: into the uint16_t, 70000 and -1 were
  // only "Could not convert".
  int port = o.http.port;
  app.add_option("--port", port, "TCP port; 0 picks a free one")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(0, 65535));
  app.add_option("--port-file", o.port_file, "Write the bound port here once listening")
      ->check(dropk::NonEmptyFlagValue("the file to write the bound port to"));
  app.add_option("--io-threads", o.http.io_threads, "HTTP I/O threads")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(1, 64));
  std::string device = "cpu";
  app.add_option("--device", device,
                 "Where the model runs: cpu, or cuda (the KV cache and weights on one GPU)")
      ->capture_default_str()
      ->transform(CLI::IsMember({"cpu", "cuda"}, CLI::ignore_case));
  app.add_option("--cuda-device", o.scheduler.cuda_device, "The GPU ordinal with --device cuda")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(0, 1023));
  std::string weights = "fp32";
  app.add_option("--weights", weights,
                 "How the CPU engine holds the weights: fp32, or bf16 (half the memory and about "
                 "twice the tokens/s at small batches; each weight rounded to bf16, sums still "
                 "fp32, so a seed's text differs from fp32's)")
      ->capture_default_str()
      ->transform(CLI::IsMember({"fp32", "bf16"}, CLI::ignore_case));
  std::string kv_cache = "fp32";
  app.add_option("--kv-cache", kv_cache,
                 "How the CPU engine holds the KV cache: fp32, or bf16 (half the memory a slot "
                 "takes, and half the bytes attention reads at long contexts; keys and values "
                 "rounded to bf16, sums still fp32, so a seed's text differs from fp32's)")
      ->capture_default_str()
      ->transform(CLI::IsMember({"fp32", "bf16"}, CLI::ignore_case));
  app.add_option("--cuda-graphs", o.scheduler.cuda_graphs,
                 "With --device cuda, run each decode step as one CUDA graph (false: launch its "
                 "~100 kernels one by one; the same results)")
      ->default_str(o.scheduler.cuda_graphs ? "true" : "false")  // not CLI11's "1"
      ->check(dropk::BoolFlagValue());
  app.add_option("--threads", o.scheduler.num_threads,
                 "Host threads (0 = all cores): the CPU engine's, and those that draw each "
                 "step's tokens from the logits (also with --device cuda)")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(0, 1024));
  app.add_option("--max-batch", o.scheduler.max_batch, "Sequences decoded together")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(1, 1024));
  app.add_option("--max-queue", o.scheduler.max_queue, "Queued sequences before 429")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(1, 1000000));
  app.add_option("--max-request-tokens", o.scheduler.max_request_tokens,
                 "Most tokens one request may ask for (prompts x n x max_tokens); more is 400")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(int64_t{1}, int64_t{1} << 40));
  app.add_option("--max-running-per-request", o.scheduler.max_running_per_request,
                 "Most sequences of one request decoded at once (0 = half of --max-batch)")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(0, 1024));
  // Checked as written (IntegerFlagRange): CLI11 reads "-1" into a size_t
  // as 2^64 - 1, which would lift the limit (a body is held in memory whole).
  app.add_option("--max-body-bytes", o.http.max_body_bytes, "Larger request bodies get 413")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(size_t{1}, size_t{1} << 30));
  app.add_option("--max-connections", o.http.max_connections,
                 "Open connections at most; past it a new one gets 503 (with Retry-After) and is "
                 "closed. Bounds the memory clients can pin: about this x --max-body-bytes")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(1, 1000000));
  app.add_option("--header-timeout-ms", header_ms, "Limit on reading request headers")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(1, 3600000));
  app.add_option("--body-timeout-ms", body_ms, "Limit on reading a request body")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(1, 3600000));
  app.add_option("--drain-ms", drain_ms, "On SIGTERM, how long running requests may finish")
      ->capture_default_str()
      ->check(dropk::IntegerFlagRange(0, 3600000));
  app.add_option("--api-key-file", api_key_file,
                 "File holding the API key; every route but /healthz and the playground "
                 "page (GET /) then needs 'Authorization: Bearer <key>'")
      ->check(dropk::NonEmptyFlagValue("the file that holds the API key"));
  // CLI11 would take the flag after one given without its value as the value.
  if (const std::string missing = dropk::FlagMissingItsValue(
          app, std::vector<std::string>(argv + std::min(argc, 1), argv + argc));
      !missing.empty()) {
    std::cerr << "dropk-serve: " << dropk::ErrorTextForTerminal(missing) << "\n";
    return dropk::kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return dropk::kExitOk;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return dropk::kExitOk;
  } catch (const CLI::ParseError& e) {
    std::string message = dropk::UnknownFlagAfterParse(app);
    if (message.empty()) message = dropk::DescribeParseError(e.what());
    std::cerr << "dropk-serve: " << dropk::ErrorTextForTerminal(message)
              << " (run with --help for usage)\n";
    return dropk::kExitUsage;
  }
  if (o.checkpoints_dir.empty()) {
    // --watch would otherwise wait, for good, for a checkpoint in "".
    std::cerr << "dropk-serve: --checkpoints is empty; name the run's checkpoints directory\n";
    return dropk::kExitUsage;
  }
  // A bad --address is the caller's to fix (exit 2), and is refused before
  // the model loads; RunServe found it only when it bound, exit 1.
  if (absl::Status s = dropk::CheckListenAddress(o.http.address); !s.ok()) {
    std::cerr << "dropk-serve: " << dropk::ErrorTextForTerminal(s.message()) << "\n";
    return dropk::kExitUsage;
  }
  // Likewise a --port-file that cannot be written (a directory, a missing
  // one): RunServe refused it as a failure, exit 1.
  if (!o.port_file.empty()) {
    if (absl::Status s = dropk::CheckPortFileTarget(o.port_file); !s.ok()) {
      std::cerr << "dropk-serve: " << dropk::ErrorTextForTerminal(s.message()) << "\n";
      return dropk::kExitUsage;
    }
  }
  o.http.port = static_cast<uint16_t>(port);
  o.scheduler.device =
      absl::AsciiStrToLower(device) == "cuda" ? dropk::Device::kCuda : dropk::Device::kCpu;
  o.scheduler.weights = dropk::EngineWeightsFromName(weights);
  if (o.scheduler.weights == dropk::EngineWeights::kBf16 &&
      o.scheduler.device == dropk::Device::kCuda) {
    std::cerr << "dropk-serve: --weights bf16: only the CPU engine holds bf16 weights; use "
                 "--device cpu, or --weights fp32 with --device cuda\n";
    return dropk::kExitUsage;
  }
  o.scheduler.kv_cache = dropk::EngineKvCacheFromName(kv_cache);
  if (o.scheduler.kv_cache == dropk::EngineKvCache::kBf16 &&
      o.scheduler.device == dropk::Device::kCuda) {
    std::cerr << "dropk-serve: --kv-cache bf16: only the CPU engine holds a bf16 KV cache; use "
                 "--device cpu, or --kv-cache fp32 with --device cuda\n";
    return dropk::kExitUsage;
  }
  o.watch_interval = std::chrono::milliseconds(watch_ms);
  o.drain_deadline = std::chrono::milliseconds(drain_ms);
  o.http.header_timeout = std::chrono::milliseconds(header_ms);
  o.http.body_timeout = std::chrono::milliseconds(body_ms);
  if (!api_key_file.empty()) {
    // Re-read whenever the file changes, so a rotated key takes effect at
    // once; the old one was served until a restart, without a word.
    absl::StatusOr<std::shared_ptr<dropk::ApiKeyFile>> key = dropk::ApiKeyFile::Open(api_key_file);
    if (!key.ok()) {
      std::fprintf(stderr, "dropk-serve: %s\n", std::string(key.status().message()).c_str());
      return dropk::kExitUsage;
    }
    o.http.api_key_file = *std::move(key);
  }
  if (!o.watch) {
    // A --checkpoints path that is not there, or that cannot name a file, is
    // the caller's to fix: exit 2, as in every dropk binary (exit_codes.h),
    // so a supervisor can tell it from a failure worth retrying. (--watch
    // waits for the trainer to make it.)
    const absl::StatusOr<bool> exists = dropk::PathExists(o.checkpoints_dir, o.checkpoints_dir);
    absl::Status problem = exists.status();
    if (exists.ok() && !*exists) {
      problem = absl::NotFoundError(o.checkpoints_dir + ": does not exist");
    }
    if (!problem.ok()) {
      std::cerr << "dropk-serve: --checkpoints " << problem.message() << "\n";
      return dropk::ExitCodeFor(problem);
    }
  }
  // A run directory stands for its checkpoints directory, as it does for
  // dropk sample --checkpoint and dropk ckpt: it was refused (exit 2) naming
  // RUN/checkpoints, and before that watched for good with --watch.
  if (std::optional<std::string> checkpoints = dropk::RunDirectoryCheckpoints(o.checkpoints_dir)) {
    std::cerr << "dropk-serve: --checkpoints " << o.checkpoints_dir
              << " is a run directory: serving its checkpoints directory, " << *checkpoints
              << "\n";
    o.checkpoints_dir = *checkpoints;
  }
  // One checkpoint (or a file) given for the checkpoints directory was
  // refused only as "no valid checkpoint" (exit 1) and, with --watch,
  // watched for good for a LATEST the trainer writes elsewhere. It is the
  // caller's to fix: exit 2, naming the path that would work.
  if (std::string hint = dropk::CheckpointsDirHint(o.checkpoints_dir); !hint.empty()) {
    std::cerr << "dropk-serve: --checkpoints " << hint << "\n";
    return dropk::kExitUsage;
  }
  o.log = dropk::StderrLogSink();
  if (absl::Status s = dropk::RunServe(o); !s.ok()) {
    std::cerr << "dropk-serve: " << dropk::ErrorTextForTerminal(s.message()) << "\n";
    return dropk::kExitFailure;
  }
  return dropk::kExitOk;
}

}  // namespace

// The last resort for an allocation that fails: one clear line and exit 1,
// never an abort.
int main(int argc, char** argv) {
  return dropk::RunMainGuardingAllocation("dropk-serve", "free memory or lower --max-batch", Main,
                                          argc, argv);
}
