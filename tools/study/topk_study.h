// `dropk study topk`: for one checkpoint, how top-k and temperature set the
// diversity and the likelihood of sampled text. Top-k is inference-time
// randomness: it changes nothing in the model, only which tokens may be drawn.
#ifndef DROPK_TOOLS_STUDY_TOPK_STUDY_H_
#define DROPK_TOOLS_STUDY_TOPK_STUDY_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dropk {

// The most host threads a top-k study takes (as `dropk sample --threads`).
inline constexpr int kMaxTopKStudyThreads = 1024;

// The most completions per prompt and setting: every pair of them is
// compared, so the cost grows with the square.
inline constexpr int kMaxTopKStudySamples = 1000;

// The most tokens per completion, dropk-serve's max_tokens limit: each is a
// forward pass, and every one is kept.
inline constexpr int kMaxTopKStudyTokens = 8192;

struct TopKStudyOptions {
  std::string checkpoint;  // a checkpoint directory, or a run's checkpoints directory (LATEST)
  std::string out_dir;     // topk_study.{csv,png,gp}, topk_samples.jsonl
  std::vector<std::string> prompts = {"ROMEO:", "JULIET:"};
  // Completions per prompt and setting (seeds seed, seed+1, ...), in
  // [2, kMaxTopKStudySamples].
  int samples = 20;
  int max_tokens = 200;  // tokens per completion, in [1, kMaxTopKStudyTokens]
  uint64_t seed = 1;
  std::vector<int> ks = {1, 5, 10, 40, 0};  // 0: the whole vocabulary (top-k off)
  std::vector<float> temperatures = {0.8f, 1.0f};
  int num_threads = 0;  // in [0, kMaxTopKStudyThreads]; 0: all cores
};

// One (temperature, k) setting's figures over every prompt's samples.
struct TopKStudyRow {
  float temperature = 0;
  int k = 0;             // as sampled: 0 means the whole vocabulary
  double distinct1 = 0;  // distinct word unigrams / all word unigrams
  double distinct2 = 0;  // distinct word bigrams / all word bigrams
  double overlap = 0;    // mean pairwise word-bigram Jaccard among a prompt's samples
  double nll = 0;        // mean per-token negative log-likelihood under the model (T = 1, no top-k)
};

// What the study found, with the model it sampled.
struct TopKStudyResult {
  std::vector<TopKStudyRow> rows;  // temperature-major, ks in the options' order
  int vocab_size = 0;
  std::string checkpoint_id;  // e.g. "dropk-step-00002000"
};

// Samples options.samples completions per prompt for every (temperature, k),
// with the same generation as dropk-serve (KV cache, sliding window, Philox
// keyed by the seed), writes the table, the samples and a plot into out_dir,
// and returns the rows. Deterministic for the same options. Errors name the
// checkpoint, the option or the prompt at fault. When options.checkpoint is
// a directory of checkpoints (or a run directory), the one picked is named
// on `log` ("dropk: using step N (DIR)") before sampling starts.
absl::StatusOr<TopKStudyResult> RunTopKStudy(const TopKStudyOptions& options, std::ostream& log);

// The rows as a Markdown table.
std::string TopKSummaryMarkdown(const std::vector<TopKStudyRow>& rows, int vocab_size);

}  // namespace dropk

#endif  // DROPK_TOOLS_STUDY_TOPK_STUDY_H_
