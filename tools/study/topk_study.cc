#include "tools/study/topk_study.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/path_status.h"
#include "model/generate.h"
#include "model/inference.h"
#include "nlohmann/json.hpp"
#include "sampler/model_snapshot.h"
#include "tools/study/gnuplot.h"
#include "tools/study/text_diversity.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

// One completion and the model's negative log-likelihood of its tokens.
struct Completion {
  std::vector<int32_t> tokens;
  double nll_sum = 0;
};

double LogSumExp(const float* logits, int V) {
  const float max = *std::max_element(logits, logits + V);
  double sum = 0;
  for (int i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  return max + std::log(sum);
}

// Generates as dropk-serve's scheduler does: prefill the prompt, draw token i
// with SampleToken at position i, decode it; once the cache is full, the last
// block_size tokens are prefilled again (nanoGPT's cropping).
Completion Generate(InferenceEngine& engine, std::span<const int32_t> prompt, int max_tokens,
                    const SamplingOptions& sampling) {
  const GptConfig& config = engine.config();
  const int V = config.vocab_size, T = config.block_size;
  std::vector<float> scratch(V);
  std::vector<int32_t> ids(V);
  std::vector<int32_t> context(prompt.begin(), prompt.end());
  Completion out;
  engine.Reset(0);
  const float* logits = engine.Prefill(0, prompt);
  for (int i = 0; i < max_tokens; ++i) {
    const int32_t token = SampleToken(std::span<const float>(logits, V), sampling,
                                      static_cast<uint64_t>(i), scratch, ids);
    out.nll_sum += LogSumExp(logits, V) - logits[token];
    out.tokens.push_back(token);
    context.push_back(token);
    if (i + 1 == max_tokens) break;
    if (engine.Length(0) >= T) {
      engine.Reset(0);
      logits = engine.Prefill(0, std::span<const int32_t>(context).subspan(context.size() - T));
    } else {
      const int slot = 0;
      logits = engine.Decode(std::span<const int>(&slot, 1), std::span<const int32_t>(&token, 1));
    }
  }
  return out;
}

absl::Status CheckOptions(const TopKStudyOptions& o) {
  // At least two: the overlap compares pairs. At most kMaxTopKStudySamples:
  // the overlap compares every pair, so 2^31 samples never finished.
  if (o.samples < 2 || o.samples > kMaxTopKStudySamples) {
    return absl::InvalidArgumentError(
        absl::StrCat("--samples ", o.samples, ": must be in [2, ", kMaxTopKStudySamples,
                     "] (at least 2: the overlap compares pairs)"));
  }
  if (o.max_tokens < 1 || o.max_tokens > kMaxTopKStudyTokens) {
    return absl::InvalidArgumentError(absl::StrCat("--max-tokens ", o.max_tokens,
                                                   ": must be in [1, ", kMaxTopKStudyTokens,
                                                   "] (dropk-serve's max_tokens limit)"));
  }
  // The engine starts every thread at once: 100000 crashed the process.
  if (o.num_threads < 0 || o.num_threads > kMaxTopKStudyThreads) {
    return absl::InvalidArgumentError(absl::StrCat("--threads ", o.num_threads, ": must be in [0, ",
                                                   kMaxTopKStudyThreads, "] (0: all cores)"));
  }
  if (o.prompts.empty()) return absl::InvalidArgumentError("--prompt: give at least one prompt");
  if (o.ks.empty()) return absl::InvalidArgumentError("--ks: give at least one k");
  for (int k : o.ks) {
    if (k < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("--ks: ", k, " is negative (0 = whole vocabulary)"));
  }
  if (o.temperatures.empty())
    return absl::InvalidArgumentError("--temperatures: give at least one");
  for (float t : o.temperatures) {
    if (!(t > 0.0f && t <= 100.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--temperatures: ", t, " is outside (0, 100]"));
    }
  }
  return absl::OkStatus();
}

std::string KLabel(int k, int vocab) {
  return k == 0 || k >= vocab ? absl::StrCat("V=", vocab) : absl::StrCat(k);
}

absl::Status WriteOutputs(const TopKStudyOptions& options, const std::vector<TopKStudyRow>& rows,
                          int vocab, const std::string& checkpoint_id) {
  const fs::path out(options.out_dir);
  const std::string csv = (out / "topk_study.csv").string();
  {
    std::ofstream f(csv, std::ios::trunc);
    f << "temperature,k,k_label,distinct1,distinct2,overlap,nll\n";
    for (const TopKStudyRow& r : rows) {
      f << absl::StrFormat("%.2f,%d,%s,%.6f,%.6f,%.6f,%.6f\n", r.temperature, r.k,
                           KLabel(r.k, vocab), r.distinct1, r.distinct2, r.overlap, r.nll);
    }
    std::ofstream md((out / "topk_summary.md").string(), std::ios::trunc);
    md << TopKSummaryMarkdown(rows, vocab);
    if (!f.flush() || !md.flush()) return absl::InternalError(absl::StrCat("cannot write ", csv));
  }
  // One series per temperature; x is the position of k in options.ks, labelled with k.
  std::string xtics = "set xtics (";
  for (size_t i = 0; i < options.ks.size(); ++i) {
    absl::StrAppend(&xtics, i ? ", " : "", GnuplotQuote(KLabel(options.ks[i], vocab)), " ", i);
  }
  xtics += ")\n";
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"};
  auto panel = [&](const std::string& title, int column, const std::string& ylabel) {
    std::string s = absl::StrCat("set title ", GnuplotQuote(title), "\nset ylabel ",
                                 GnuplotQuote(ylabel), "\nplot ");
    for (size_t t = 0; t < options.temperatures.size(); ++t) {
      // Rows are ordered temperature-major, ks in order: block t, index 0..|ks|-1.
      absl::StrAppend(&s, GnuplotQuote(csv), " every ::", 1 + t * options.ks.size(),
                      "::", (t + 1) * options.ks.size(), " using ($0):", column,
                      " with linespoints pt 7 lw 2 lc rgb '", colors[t % 4], "' title ",
                      GnuplotQuote(absl::StrFormat("temperature %.2f", options.temperatures[t])),
                      t + 1 < options.temperatures.size() ? ", \\\n  " : "\n");
    }
    return s;
  };
  const std::string png = (out / "topk_study.png").string();
  const std::string script = absl::StrCat(
      "set terminal pngcairo size 1100,800 font 'Sans,10'\nset output ", GnuplotQuote(png), "\n",
      "set datafile separator ','\nset grid\nset key bottom right\nset xlabel 'top-k'\n", xtics,
      "set xrange [-0.3:", options.ks.size() - 0.7, "]\n", "set multiplot layout 2,2 title ",
      GnuplotQuote(absl::StrCat("Top-k study: ", checkpoint_id, ", ", options.samples,
                                " samples x ", options.prompts.size(), " prompts x ",
                                options.max_tokens, " tokens per setting")),
      "\n", panel("diversity: distinct-1 (words)", 4, "distinct unigrams / unigrams"),
      panel("diversity: distinct-2 (words)", 5, "distinct bigrams / bigrams"),
      panel("sameness: pairwise bigram overlap", 6, "mean Jaccard"),
      panel("quality: NLL of the samples under the model", 7, "nats/token"), "unset multiplot\n");
  return RunGnuplot((out / "topk_study.gp").string(), script);
}

}  // namespace

std::string TopKSummaryMarkdown(const std::vector<TopKStudyRow>& rows, int vocab_size) {
  std::ostringstream md;
  md << "| temperature | top-k | distinct-1 | distinct-2 | pairwise overlap | NLL (nats/token) |\n";
  md << "| --- | --- | --- | --- | --- | --- |\n";
  for (const TopKStudyRow& r : rows) {
    md << absl::StrFormat("| %.2f | %s | %.3f | %.3f | %.3f | %.3f |\n", r.temperature,
                          KLabel(r.k, vocab_size), r.distinct1, r.distinct2, r.overlap, r.nll);
  }
  return md.str();
}

absl::StatusOr<TopKStudyResult> RunTopKStudy(const TopKStudyOptions& options, std::ostream& log) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  // The throwing exists() aborted on a symlink loop or a name too long.
  std::vector<std::string> skipped;
  absl::StatusOr<std::string> resolved =
      ResolveCheckpointFlag(options.checkpoint, "--checkpoint", &skipped);
  if (!resolved.ok()) return resolved.status();
  const std::string& dir = *resolved;
  absl::StatusOr<std::shared_ptr<const ModelSnapshot>> snapshot = LoadCheckpointSnapshot(dir);
  if (!snapshot.ok()) return snapshot.status();
  if (dir != options.checkpoint) {
    log << "dropk: " << PickedCheckpointLine((*snapshot)->step, dir, skipped) << std::endl;
  }
  const ModelSnapshot& model = **snapshot;
  InferenceOptions engine_options;
  engine_options.max_slots = 1;
  engine_options.num_threads = options.num_threads;
  absl::StatusOr<std::unique_ptr<InferenceEngine>> engine =
      MakeInferenceEngine(model.config, model.params, engine_options);
  if (!engine.ok()) return engine.status();

  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& text : options.prompts) {
    absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer.Encode(text);
    if (!ids.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("--prompt \"", text, "\": ", ids.status().message()));
    if (ids->empty() || ids->size() > static_cast<size_t>(model.config.block_size)) {
      return absl::InvalidArgumentError(absl::StrCat("--prompt \"", text, "\": must encode to 1..",
                                                     model.config.block_size, " tokens"));
    }
    prompts.push_back(*std::move(ids));
  }
  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) {
    return DirectoryCreationError(absl::StrCat("--out ", options.out_dir, ": cannot create it"),
                                  options.out_dir, ec);
  }
  std::ofstream samples_out((fs::path(options.out_dir) / "topk_samples.jsonl").string(),
                            std::ios::trunc);

  std::vector<TopKStudyRow> rows;
  for (float temperature : options.temperatures) {
    for (int k : options.ks) {
      std::vector<std::string> all_texts;
      double overlap_sum = 0, nll_sum = 0;
      size_t tokens = 0;
      for (size_t p = 0; p < prompts.size(); ++p) {
        std::vector<std::string> texts;
        for (int i = 0; i < options.samples; ++i) {
          const SamplingOptions sampling{temperature, k, 1.0f,
                                         options.seed + static_cast<uint64_t>(i)};
          Completion c = Generate(**engine, prompts[p], options.max_tokens, sampling);
          nll_sum += c.nll_sum;
          tokens += c.tokens.size();
          texts.push_back(model.tokenizer.Decode(c.tokens));
          samples_out << nlohmann::json{{"temperature", temperature},
                                        {"top_k", k},
                                        {"prompt", options.prompts[p]},
                                        {"seed", sampling.seed},
                                        {"text", texts.back()}}
                             .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                      << "\n";
        }
        overlap_sum += MeanPairwiseBigramOverlap(texts);
        all_texts.insert(all_texts.end(), texts.begin(), texts.end());
      }
      rows.push_back({temperature, k, DistinctN(all_texts, 1), DistinctN(all_texts, 2),
                      overlap_sum / prompts.size(), nll_sum / std::max<size_t>(tokens, 1)});
    }
  }
  if (!samples_out.flush()) return absl::InternalError("cannot write topk_samples.jsonl");
  // Snapshots loaded from disk may carry no API id; the directory names the model.
  const std::string id =
      model.id.empty() ? fs::path(dir).lexically_normal().filename().string() : model.id;
  if (absl::Status s = WriteOutputs(options, rows, model.config.vocab_size, id); !s.ok()) return s;
  return TopKStudyResult{std::move(rows), model.config.vocab_size, id};
}

}  // namespace dropk
