// GPT-2 BPE encoding speed: MB/s per core with a warm and a cold merge cache,
// and the scaling from 1 to N threads (each thread encodes its own share of
// the text with its own EncodeCache, as `dropk data prepare` does).
// bench/run_tokenizer_bench.sh also times OpenAI's encoder.py algorithm
// (tools/gpt2_reference.py) on the same text, the baseline a user would have.
//
// Usage: dropk-tokenizer-bench [--gpt2-dir data/gpt2] [--text data/tinyshakespeare.txt]
//                              [--repeat 8] [--max-threads 2]
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <optional>

#include "bench_flags.h"

#include "model/gpt2_vocab_files.h"
#include "model/tokenizer.h"

namespace dropk {
namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Seconds for `threads` threads to encode `parts` (parts.size() a multiple of
// threads), each thread its own parts with its own cache; `warm` encodes
// everything once first so every piece is cached.
double EncodeSeconds(const TextTokenizer& tok, const std::vector<std::string>& parts, int threads,
                     bool warm, size_t* tokens) {
  std::vector<std::unique_ptr<EncodeCache>> caches;
  for (int t = 0; t < threads; ++t) caches.push_back(std::make_unique<EncodeCache>());
  size_t total = 0;
  double seconds = 0;
  for (int pass = warm ? 0 : 1; pass < 2; ++pass) {
    total = 0;
    const auto start = Clock::now();
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
    for (size_t i = 0; i < parts.size(); ++i) {
      total += tok.Encode(parts[i], caches[omp_get_thread_num()].get())->size();
    }
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
  }
  *tokens = total;
  return seconds;
}

int Main(int argc, char** argv) {
  CLI::App app{"GPT-2 BPE encoding throughput"};
  std::string gpt2_dir = "data/gpt2", text_path = "data/tinyshakespeare.txt";
  int repeat = 8, max_threads = 2;
  app.add_option("--gpt2-dir", gpt2_dir)->capture_default_str();
  app.add_option("--text", text_path)->capture_default_str();
  app.add_option("--repeat", repeat, "copies of the text per thread")->capture_default_str();
  app.add_option("--max-threads", max_threads)->capture_default_str();
  if (std::optional<int> code = dropk::ParseBenchFlags(app, argc, argv, "dropk-tokenizer-bench")) {
    return *code;
  }

  const std::string text = ReadFile(text_path);
  absl::StatusOr<Tokenizer> proto = Gpt2TokenizerFromFiles(ReadFile(gpt2_dir + "/encoder.json"),
                                                           ReadFile(gpt2_dir + "/vocab.bpe"));
  if (text.empty() || !proto.ok()) {
    std::fprintf(stderr, "cannot load %s or the GPT-2 files in %s: %s\n", text_path.c_str(),
                 gpt2_dir.c_str(), proto.ok() ? "empty text" : proto.status().ToString().c_str());
    return 2;
  }
  const TextTokenizer tok = *TextTokenizer::FromProto(*proto);
  std::printf("text: %s, %.2f MB, x%d per thread\n", text_path.c_str(), text.size() / 1e6, repeat);

  // Each thread gets `repeat` copies cut into 1 MB chunks, like prepare's.
  const auto parts_for = [&](int threads) {
    std::vector<std::string> parts;
    for (int r = 0; r < repeat * threads; ++r) {
      for (size_t at = 0; at < text.size(); at += 1 << 20)
        parts.push_back(text.substr(at, 1 << 20));
    }
    return parts;
  };
  size_t tokens = 0;
  double base = 0;
  for (int threads = 1; threads <= max_threads; threads *= 2) {
    const std::vector<std::string> parts = parts_for(threads);
    const double mb = static_cast<double>(text.size()) * repeat * threads / 1e6;
    const double cold = EncodeSeconds(tok, parts, threads, false, &tokens);
    const double warm = EncodeSeconds(tok, parts, threads, true, &tokens);
    const double rate = mb / warm;
    if (threads == 1) base = rate;
    std::printf(
        "threads %d: %.1f MB/s total, %.1f MB/s per core (fresh cache %.1f MB/s per core), "
        "%.2fx of 1 thread, %zu tokens\n",
        threads, rate, rate / threads, mb / cold / threads, rate / base, tokens);
  }
  return 0;
}

}  // namespace
}  // namespace dropk

int main(int argc, char** argv) { return dropk::Main(argc, argv); }
