// The CPU inference engine: KV cache per slot, row-wise kernels.
//
// Every kernel here computes each output element with one fixed-order
// reduction that depends only on that row's inputs, and OpenMP threads split
// output columns (or (row, head) pairs), never a reduction. So a row's result
// does not depend on how many rows a step has, which rows they are, or the
// thread count: the batch invariance DESIGN invariant 5 asks for. The
// products are PanelMatmul's (cpu/panel_matmul.h) on weights packed when the
// engine is made; attention is the KV cache's (cpu/kv_cache.h: fp32 or bf16
// keys and values, FixedOrderDot's scores).
//
// Legend: R rows of a step (prefill tokens of one slot, or one token of each
// decoding slot), C channels, NH heads, hs = C/NH, T block_size, S slots,
// L layers, V vocab.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "model/inference.h"

#include "kv_cache_engine.h"

#include "cpu/kv_cache.h"
#include "cpu/panel_matmul.h"
#include "cpu/row_ops.h"
#include "model/thread_governor.h"

#ifdef DROPK_HAS_CUDA
#include "cuda/cuda_inference_engine.h"
#endif

namespace dropk {
namespace {

// One transformer block's weights as the engine holds them: the products'
// packed, the LayerNorms' as they are.
struct EngineBlock {
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;  // (C)
  PackedLinear qkv, attproj, fc, fcproj;
};

std::vector<float> CopyOf(const float* p, size_t n) { return std::vector<float>(p, p + n); }

class CpuInferenceEngine final : public KvCacheEngine {
 public:
  CpuInferenceEngine(const GptConfig& config, std::span<const float> params, int max_slots,
                     int num_threads, EngineWeights weights, EngineKvCache kv_cache)
      : KvCacheEngine(config, max_slots),
        threads_(num_threads > 0 ? num_threads : omp_get_num_procs()),
        kv_(config, max_slots, kv_cache) {
    const size_t S = max_slots, T = config.block_size, C = config.n_embd, V = config.vocab_size,
                 R = max_rows();
    PackWeights(params,
                weights == EngineWeights::kBf16 ? PanelWeights::kBf16 : PanelWeights::kFp32);
    x_.assign(R * C, 0.0f);
    ln_.assign(R * C, 0.0f);
    qkv_.assign(R * 3 * C, 0.0f);
    atty_.assign(R * C, 0.0f);
    branch_.assign(R * C, 0.0f);
    fch_.assign(R * 4 * C, 0.0f);
    logits_.assign(std::max<size_t>(S, 1) * V, 0.0f);
    scores_.assign(static_cast<size_t>(threads_) * T, 0.0f);
    row_slot_.assign(R, 0);
    row_pos_.assign(R, 0);
    row_token_.assign(R, 0);
    head_rows_.assign(R, 0);
  }

  int HostThreads() const override { return threads_; }

 private:
  // The engine's own copy of the parameters: the products' weights packed
  // as `packed` says (the LM head is the token embedding, tied, and the
  // embedding lookup reads its rows back from there), the rest as they are.
  void PackWeights(std::span<const float> params, PanelWeights packed) {
    const ParamLayout layout(config_);
    const int C = config_.n_embd, V = config_.vocab_size;
    float* p = const_cast<float*>(params.data());  // Block() hands out float*; only read here
    lm_head_ = PackedLinear(p + layout.wte(), nullptr, V, C, packed);
    wpe_ = CopyOf(p + layout.wpe(), static_cast<size_t>(config_.block_size) * C);
    lnf_w_ = CopyOf(p + layout.lnf_w(), C);
    lnf_b_ = CopyOf(p + layout.lnf_b(), C);
    blocks_.resize(config_.n_layer);
    for (int l = 0; l < config_.n_layer; ++l) {
      const BlockTensors w = layout.Block(p, l);
      EngineBlock& b = blocks_[l];
      b.ln1_w = CopyOf(w.ln1_w, C);
      b.ln1_b = CopyOf(w.ln1_b, C);
      b.ln2_w = CopyOf(w.ln2_w, C);
      b.ln2_b = CopyOf(w.ln2_b, C);
      b.qkv = PackedLinear(w.qkv_w, w.qkv_b, 3 * C, C, packed);
      b.attproj = PackedLinear(w.attproj_w, w.attproj_b, C, C, packed);
      b.fc = PackedLinear(w.fc_w, w.fc_b, 4 * C, C, packed);
      b.fcproj = PackedLinear(w.fcproj_w, w.fcproj_b, C, 4 * C, packed);
    }
  }

  RowPlan Plan() override {
    return {row_token_.data(), row_slot_.data(), row_pos_.data(), head_rows_.data()};
  }

  // The plan's rows through the model: K and V into the cache, the logits of
  // rows head_rows_[0, H) into logits_ (H,V).
  const float* Step(int R, int H) override {
    // Fewer threads while another process holds cores (at most the team
    // scores_ is sized for); results do not depend on it.
    threads_ = governor_.Update();
    const int L = config_.n_layer, C = config_.n_embd;
    for (int r = 0; r < R; ++r) {
      float* x = x_.data() + static_cast<size_t>(r) * C;
      lm_head_.CopyRow(row_token_[r], x);  // the token's embedding (tied)
      const float* q = wpe_.data() + static_cast<size_t>(row_pos_[r]) * C;
      for (int c = 0; c < C; ++c) x[c] += q[c];
    }
    for (int l = 0; l < L; ++l) {
      const EngineBlock& w = blocks_[l];
      LayerNorm(ln_.data(), x_.data(), w.ln1_w.data(), w.ln1_b.data(), R, C);
      PanelMatmul(qkv_.data(), ln_.data(), w.qkv, R, threads_);
      Attention(l, R);
      PanelMatmul(branch_.data(), atty_.data(), w.attproj, R, threads_);
      AddInPlace(x_.data(), branch_.data(), static_cast<size_t>(R) * C);
      LayerNorm(ln_.data(), x_.data(), w.ln2_w.data(), w.ln2_b.data(), R, C);
      PanelMatmul(fch_.data(), ln_.data(), w.fc, R, threads_);
      Gelu(fch_.data(), static_cast<size_t>(R) * 4 * C);
      PanelMatmul(branch_.data(), fch_.data(), w.fcproj, R, threads_);
      AddInPlace(x_.data(), branch_.data(), static_cast<size_t>(R) * C);
    }
    // Final LayerNorm of the rows whose logits are wanted, packed into ln_.
    for (int h = 0; h < H; ++h) {
      if (head_rows_[h] != h) {
        std::memcpy(x_.data() + static_cast<size_t>(h) * C,
                    x_.data() + static_cast<size_t>(head_rows_[h]) * C, C * sizeof(float));
      }
    }
    LayerNorm(ln_.data(), x_.data(), lnf_w_.data(), lnf_b_.data(), H, C);
    // The LM head is tied to the token embedding.
    PanelMatmul(logits_.data(), ln_.data(), lm_head_, H, threads_);
    return logits_.data();
  }

  void LayerNorm(float* out, const float* inp, const float* w, const float* b, int R, int C) {
    for (int r = 0; r < R; ++r) {
      const size_t row = static_cast<size_t>(r) * C;
      LayerNormRow(out + row, inp + row, w, b, C);
    }
  }

  static void AddInPlace(float* x, const float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) x[i] += y[i];
  }

  void Gelu(float* x, size_t n) {
#pragma omp parallel for schedule(static) num_threads(threads_)
    for (size_t i = 0; i < n; ++i) {
      x[i] = dropk::Gelu(x[i]);
    }
  }

  // Writes each row's k and v (from qkv_) into its slot's cache at its
  // position, then attends each (row, head) over positions [0, pos].
  void Attention(int l, int R) {
    const int C = config_.n_embd, NH = config_.n_head, T = config_.block_size;
    const int hs = C / NH;
    for (int r = 0; r < R; ++r) {
      const float* qkv = qkv_.data() + static_cast<size_t>(r) * 3 * C;
      kv_.Write(l, row_slot_[r], row_pos_[r], qkv + C, qkv + 2 * C);
    }
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads_)
    for (int r = 0; r < R; ++r) {
      for (int h = 0; h < NH; ++h) {
        float* scores = scores_.data() + static_cast<size_t>(omp_get_thread_num()) * T;
        const float* q = qkv_.data() + static_cast<size_t>(r) * 3 * C + h * hs;
        float* o = atty_.data() + static_cast<size_t>(r) * C + h * hs;
        kv_.Attend(o, q, l, row_slot_[r], row_pos_[r], h, scores);
      }
    }
  }

  std::vector<EngineBlock> blocks_;         // (L)
  PackedLinear lm_head_;                    // wte (V,C), tied
  std::vector<float> wpe_, lnf_w_, lnf_b_;  // (T,C), (C), (C)
  int threads_;  // the team of the next step's regions, at most the constructor's
  ThreadGovernor governor_{threads_};
  KvCache kv_;                                                       // (L,S,T,C) keys, values
  std::vector<float> x_, ln_, atty_, branch_;                        // (R,C)
  std::vector<float> qkv_;                                           // (R,3C)
  std::vector<float> fch_;                                           // (R,4C)
  std::vector<float> logits_;                                        // (max(S,1),V)
  std::vector<float> scores_;                                        // (threads,T)
  std::vector<int32_t> row_token_, row_slot_, row_pos_, head_rows_;  // (R): the plan
};

}  // namespace

const char* EngineWeightsName(EngineWeights weights) {
  return weights == EngineWeights::kBf16 ? "bf16" : "fp32";
}

namespace {

bool NamesBf16(std::string_view name) {
  return absl::EqualsIgnoreCase(absl::string_view(name.data(), name.size()), "bf16");
}

}  // namespace

EngineWeights EngineWeightsFromName(std::string_view name) {
  return NamesBf16(name) ? EngineWeights::kBf16 : EngineWeights::kFp32;
}

const char* EngineKvCacheName(EngineKvCache kv_cache) {
  return kv_cache == EngineKvCache::kBf16 ? "bf16" : "fp32";
}

EngineKvCache EngineKvCacheFromName(std::string_view name) {
  return NamesBf16(name) ? EngineKvCache::kBf16 : EngineKvCache::kFp32;
}

absl::StatusOr<std::unique_ptr<InferenceEngine>> MakeInferenceEngine(
    const GptConfig& config, std::span<const float> host_params, const InferenceOptions& options) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (options.max_slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_slots: must be >= 1, got ", options.max_slots));
  }
  // Every caller's flag is checked, but the engine is a library: an OpenMP
  // team of 100000 threads crashed the process (SIGSEGV) once it ran.
  if (options.num_threads < 0 || options.num_threads > InferenceOptions::kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrCat("num_threads: must be in [0, ",
                                                   InferenceOptions::kMaxThreads,
                                                   "] (0: every core), got ", options.num_threads));
  }
  const ParamLayout layout(config);
  if (host_params.size() != layout.num_params()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parameters: ", host_params.size(), " values, the config needs ", layout.num_params()));
  }
  if (options.weights == EngineWeights::kBf16 && options.device != Device::kCpu) {
    return absl::InvalidArgumentError(
        "weights bf16: only the CPU engine holds bf16 weights; the CUDA engine holds fp32");
  }
  if (options.kv_cache == EngineKvCache::kBf16 && options.device != Device::kCpu) {
    return absl::InvalidArgumentError(
        "kv_cache bf16: only the CPU engine holds a bf16 KV cache; the CUDA engine's is fp32");
  }
  switch (options.device) {
    case Device::kCpu:
      return std::unique_ptr<InferenceEngine>(
          new CpuInferenceEngine(config, host_params, options.max_slots, options.num_threads,
                                 options.weights, options.kv_cache));
    case Device::kCuda:
#ifdef DROPK_HAS_CUDA
      return MakeCudaInferenceEngine(config, host_params, options);
#else
      return absl::FailedPreconditionError(
          "device cuda: this build of dropk has no CUDA (no CUDA Toolkit was found at build "
          "time); serve with --device cpu");
#endif
  }
  return absl::InvalidArgumentError("inference engine: unknown device");
}

}  // namespace dropk
