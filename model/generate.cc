#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernel_math.h"
#include "model/philox.h"

namespace dropk {
namespace {
constexpr uint32_t kSampleStream = 0x53414D50u;  // "SAMP"

// ids[0, k) = the k ids of `logits` that come first in the order `before`,
// in that order. One pass with a heap of k whose top is the last of those
// kept so far: a logit that does not beat it, nearly all of them, costs one
// comparison (std::nth_element over all V ids took 3-4x as long, and left
// its candidates in an order of the library's choosing).
template <typename Before>
void SelectTopK(std::span<const float> logits, int k, const Before& before,
                std::span<int32_t> ids) {
  const int V = static_cast<int>(logits.size());
  std::iota(ids.begin(), ids.begin() + k, 0);
  std::make_heap(ids.begin(), ids.begin() + k, before);
  for (int32_t id = k; id < V; ++id) {
    if (!before(id, ids[0])) continue;
    std::pop_heap(ids.begin(), ids.begin() + k, before);
    ids[k - 1] = id;
    std::push_heap(ids.begin(), ids.begin() + k, before);
  }
  std::sort_heap(ids.begin(), ids.begin() + k, before);
}
}  // namespace

float LogSumExp(std::span<const float> row) {
  const float* x = row.data();
  const size_t n = row.size();
  float maxv = x[0];
#pragma omp simd reduction(max : maxv)
  for (size_t i = 1; i < n; ++i) maxv = std::max(maxv, x[i]);
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(FastExp(x[i] - maxv));
  return maxv + static_cast<float>(std::log(sum));
}

int32_t SampleToken(std::span<const float> logits, const SamplingOptions& options,
                    uint64_t position, std::span<float> scratch, std::span<int32_t> ids) {
  const int V = static_cast<int>(logits.size());
  if (options.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates: all ids in id order, or the k largest logits in the order
  // `before` defines (by logit, then id), whatever the C++ library.
  const auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int n = V;
  if (options.top_k > 0 && options.top_k < V) {
    n = options.top_k;
    SelectTopK(logits, n, before, ids);
  } else {
    std::iota(ids.begin(), ids.begin() + V, 0);
  }
  // Softmax over the candidates at the given temperature.
  float maxv = logits[ids[0]];
  for (int i = 1; i < n; ++i) maxv = std::max(maxv, logits[ids[i]]);
  double total = 0.0;
  for (int i = 0; i < n; ++i) {
    scratch[i] = std::exp((logits[ids[i]] - maxv) / options.temperature);
    total += scratch[i];
  }
  if (options.top_p < 1.0f) {
    // Nucleus: the smallest high-probability prefix whose mass reaches top_p.
    // Candidates are sorted in place (by logit, then id) so this path
    // allocates nothing either; n is at most V.
    if (n == V) std::sort(ids.begin(), ids.begin() + n, before);  // top-k ones are sorted
    total = 0.0;
    for (int i = 0; i < n; ++i) {
      scratch[i] = std::exp((logits[ids[i]] - maxv) / options.temperature);
      total += scratch[i];
    }
    double mass = 0.0;
    int keep = 0;
    while (keep < n && mass < options.top_p * total) mass += scratch[keep++];
    for (int i = keep; i < n; ++i) scratch[i] = 0.0f;
    total = mass;
  }
  const Philox4x32Block r = Philox(options.seed, static_cast<uint32_t>(position),
                                   static_cast<uint32_t>(position >> 32), kSampleStream, 0);
  // 53 random bits -> uniform double in [0, total).
  const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 21) ^ (r.v[1] >> 11);
  const double target = static_cast<double>(bits) / 9007199254740992.0 * total;
  double cumulative = 0.0;
  int last_nonzero = 0;
  for (int i = 0; i < n; ++i) {
    if (scratch[i] == 0.0f) continue;
    last_nonzero = i;
    cumulative += scratch[i];
    if (target < cumulative) return ids[i];
  }
  return ids[last_nonzero];  // rounding left target at the very end
}

absl::StatusOr<std::vector<int32_t>> Generate(Gpt& gpt, std::span<const int32_t> prompt,
                                              int max_new_tokens, const SamplingOptions& options,
                                              const std::function<bool()>& stop) {
  const GptConfig& config = gpt.config();
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: must not be empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token ", i, " = ", prompt[i], ": outside the vocabulary of ", config.vocab_size));
    }
  }
  if (max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens: must be >= 0");
  if (options.temperature < 0) return absl::InvalidArgumentError("temperature: must be >= 0");
  if (!(options.top_p > 0.0f && options.top_p <= 1.0f)) {
    return absl::InvalidArgumentError("top_p: must be in (0, 1]");
  }
  std::vector<int32_t> context(prompt.begin(), prompt.end());
  std::vector<int32_t> out;
  std::vector<float> logits(config.vocab_size), scratch(config.vocab_size);
  std::vector<int32_t> ids(config.vocab_size);
  for (int i = 0; i < max_new_tokens; ++i) {
    if (stop && stop()) break;
    const int T = std::min<int>(context.size(), config.block_size);
    gpt.Forward(context.data() + context.size() - T, nullptr, 1, T, nullptr);
    gpt.LogitsToHost(0, T - 1, logits.data());
    const int32_t next = SampleToken(logits, options, i, scratch, ids);
    out.push_back(next);
    context.push_back(next);
  }
  return out;
}

}  // namespace dropk
