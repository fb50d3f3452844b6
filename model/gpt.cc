#include "model/gpt.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

#include "base/check.h"
#include "model/philox.h"

namespace dropk {
namespace {
// Philox stream words reserved for weight initialisation (dropout uses
// stream = rank or sample index, so this never collides with a mask: the
// site word differs as well).
constexpr uint32_t kInitStream = 0x494E4954u;  // "INIT"

// The gradient of a residual dropout site's input, given that of its output
// dout: dx with the mask applied, or dout itself when the site is off, so
// that a run without dropout copies nothing.
const float* DropoutGradient(Kernels& k, float* dx, const float* dout, int B, int T, int C,
                             DropoutKind kind, int layer, const DropoutPlan* plan) {
  if (plan == nullptr || plan->rates.Of(kind) <= 0.0f) return dout;
  k.DropoutBackward(dx, dout, B, T, C, kind, layer, plan);
  return dx;
}
}  // namespace

// Every activation of one forward pass and the gradient scratch of backward,
// sized for (max_batch, block_size). Shapes are given for full size; a pass
// with smaller B or T uses a packed prefix of each buffer.
struct Gpt::Activations {
  DeviceBuffer<int32_t> tokens, targets;   // (B,T)
  DeviceBuffer<float> residual;            // (L+1, B,T,C): block inputs, then final output
  DeviceBuffer<float> ln1, ln2;            // (L, B,T,C)
  DeviceBuffer<float> ln1_mean, ln1_rstd;  // (L, B,T)
  DeviceBuffer<float> ln2_mean, ln2_rstd;  // (L, B,T)
  DeviceBuffer<float> qkv;                 // (L, B,T,3C)
  // (L, Kernels::AttentionSavedFloats): by default (B,NH,T,T), the softmax
  // before dropout; less with kernels that keep no T x T probabilities.
  DeviceBuffer<float> probs;
  DeviceBuffer<float> atty;                // (L, B,T,C), attention output before projection
  DeviceBuffer<float> res2;                // (L, B,T,C), residual after the attention branch
  DeviceBuffer<float> fch, fch_gelu;       // (L, B,T,4C)
  DeviceBuffer<float> lnf;                 // (B,T,C)
  DeviceBuffer<float> lnf_mean, lnf_rstd;  // (B,T)
  DeviceBuffer<float> logits;              // (B,T,V); dlogits in place during backward
  DeviceBuffer<float> losses, lse;         // (B,T)
  // Backward scratch.
  DeviceBuffer<float> dresidual, dbranch, dln, datty;  // (B,T,C)
  DeviceBuffer<float> dqkv;                            // (B,T,3C)
  DeviceBuffer<float> dfch;                            // (B,T,4C)
  std::vector<float> host_losses;                      // (B,T)
};

// Calls visit(member, count) for every buffer of Gpt::Activations, member a
// pointer to it and count its elements for (config, max_batch), computed in
// type N: size_t to allocate, double to size a shape that may not fit in
// memory (or 64 bits). The one list of activation sizes, so Footprint and
// the constructor cannot disagree beyond attention_saved, which only the
// kernels know exactly (Footprint takes it as an argument, by default the
// default kernels', the largest).
template <typename N, typename Visit>
void Gpt::VisitActivationBuffers(const GptConfig& config, int max_batch, N attention_saved,
                                 Visit&& visit) {
  using A = Activations;
  const N L = config.n_layer, B = max_batch, T = config.block_size, C = config.n_embd,
          V = config.vocab_size;
  const N BT = B * T, BTC = BT * C;
  visit(&A::tokens, BT);
  visit(&A::targets, BT);
  visit(&A::residual, (L + 1) * BTC);
  visit(&A::ln1, L * BTC);
  visit(&A::ln2, L * BTC);
  visit(&A::ln1_mean, L * BT);
  visit(&A::ln1_rstd, L * BT);
  visit(&A::ln2_mean, L * BT);
  visit(&A::ln2_rstd, L * BT);
  visit(&A::qkv, L * 3 * BTC);
  visit(&A::probs, L * attention_saved);
  visit(&A::atty, L * BTC);
  visit(&A::res2, L * BTC);
  visit(&A::fch, L * 4 * BTC);
  visit(&A::fch_gelu, L * 4 * BTC);
  visit(&A::lnf, BTC);
  visit(&A::lnf_mean, BT);
  visit(&A::lnf_rstd, BT);
  visit(&A::logits, BT * V);
  visit(&A::losses, BT);
  visit(&A::lse, BT);
  visit(&A::dresidual, BTC);
  visit(&A::dbranch, BTC);
  visit(&A::dln, BTC);
  visit(&A::datty, BTC);
  visit(&A::dqkv, 3 * BTC);
  visit(&A::dfch, 4 * BTC);
  visit(&A::host_losses, BT);
}

double GptFootprint::TotalBytes() const { return params_bytes + grads_bytes + activations_bytes; }

absl::StatusOr<GptFootprint> Gpt::Footprint(const GptConfig& config, int max_batch) {
  // The default kernels' probabilities, B*NH*T*T per layer: at least what
  // any kernels keep (CUDA's flash attention keeps a log-sum-exp per row).
  return Footprint(
      config, max_batch,
      static_cast<double>(max_batch) * config.n_head * config.block_size * config.block_size);
}

absl::StatusOr<GptFootprint> Gpt::Footprint(const GptConfig& config, int max_batch,
                                            double attention_saved) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (max_batch <= 0) return absl::InvalidArgumentError("max_batch must be positive");
  absl::StatusOr<uint64_t> params = ParamLayout::CountParams(config);
  if (!params.ok()) return params.status();
  GptFootprint f;
  f.params_bytes = f.grads_bytes = static_cast<double>(*params) * sizeof(float);
  VisitActivationBuffers<double>(
      config, max_batch, attention_saved, [&f](auto member, double count) {
        using Buffer = std::remove_reference_t<decltype(std::declval<Activations&>().*member)>;
        using Element = std::remove_pointer_t<decltype(std::declval<Buffer&>().data())>;
        f.activations_bytes += count * sizeof(Element);
      });
  return f;
}

absl::StatusOr<std::unique_ptr<Gpt>> Gpt::Create(const GptConfig& config, int max_batch,
                                                 Kernels* kernels) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (max_batch <= 0) return absl::InvalidArgumentError("max_batch must be positive");
  // The kernels index rows (B*T) and channels (4C) with int.
  constexpr double kMaxInt = std::numeric_limits<int>::max();
  if (static_cast<double>(max_batch) * config.block_size > kMaxInt) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", max_batch, " x block_size ", config.block_size, " = ",
        static_cast<double>(max_batch) * config.block_size, " rows: must be at most ", kMaxInt));
  }
  if (4.0 * config.n_embd > kMaxInt) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_embd=", config.n_embd, ": must be at most ", kMaxInt / 4));
  }
  // Sizes that would overflow size_t cannot be allocated anyway; refuse them
  // here rather than wrap around in the constructor's arithmetic.
  absl::StatusOr<GptFootprint> footprint = Footprint(config, max_batch);
  if (!footprint.ok()) return footprint.status();
  if (footprint->TotalBytes() >= static_cast<double>(std::numeric_limits<size_t>::max() / 2)) {
    return absl::ResourceExhaustedError(absl::StrCat("the model needs ", footprint->TotalBytes(),
                                                     " bytes, more than any address space"));
  }
  return std::unique_ptr<Gpt>(new Gpt(config, max_batch, kernels));
}

Gpt::Gpt(const GptConfig& config, int max_batch, Kernels* kernels)
    : config_(config), layout_(config), max_batch_(max_batch), kernels_(kernels) {
  params_ = DeviceBuffer<float>(kernels, layout_.num_params());
  grads_ = DeviceBuffer<float>(kernels, layout_.num_params());
  for (size_t i = 0; i < static_cast<size_t>(config.n_layer) + 2; ++i)
    ready_events_.push_back(kernels->CreateEvent());
  acts_ = std::make_unique<Activations>();
  Activations& a = *acts_;
  const size_t attention_saved =
      kernels->AttentionSavedFloats(max_batch, config.block_size, config.n_embd, config.n_head);
  VisitActivationBuffers<size_t>(config, max_batch, attention_saved,
                                 [&a, kernels](auto member, size_t count) {
                                   using Buffer = std::remove_reference_t<decltype(a.*member)>;
                                   if constexpr (std::is_same_v<Buffer, std::vector<float>>) {
                                     (a.*member).resize(count);  // host memory
                                   } else {
                                     a.*member = Buffer(kernels, count);
                                   }
                                 });
}

Gpt::~Gpt() = default;

void Gpt::InitWeights(uint64_t seed) {
  std::vector<float> host(layout_.num_params(), 0.0f);
  const float residual_std = 0.02f / std::sqrt(2.0f * config_.n_layer);
  for (const ParamTensor& t : layout_.tensors()) {
    const bool is_layernorm = t.name.find("ln_") != std::string::npos;
    const bool is_bias = t.name.ends_with(".bias");
    if (is_layernorm && !is_bias) {
      std::fill(host.begin() + t.offset, host.begin() + t.offset + t.numel, 1.0f);
      continue;
    }
    if (is_bias) continue;  // zero
    const float std = t.name.ends_with("c_proj.weight") ? residual_std : 0.02f;
    for (size_t i = 0; i < t.numel; ++i) {
      // Box-Muller on two 32-bit words of the element's own Philox block.
      const size_t g = t.offset + i;
      const Philox4x32Block r =
          Philox(seed, static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), kInitStream, 0);
      const double u1 = (static_cast<double>(r.v[0]) + 0.5) / 4294967296.0;
      const double u2 = (static_cast<double>(r.v[1]) + 0.5) / 4294967296.0;
      const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
      host[g] = static_cast<float>(z) * std;
    }
  }
  kernels_->CopyToDevice(params_.data(), host.data(), host.size() * sizeof(float));
}

float Gpt::Forward(const int32_t* host_tokens, const int32_t* host_targets, int B, int T,
                   const DropoutPlan* dropout) {
  const int L = config_.n_layer, C = config_.n_embd, NH = config_.n_head, V = config_.vocab_size;
  DROPK_CHECK(B >= 1 && B <= max_batch_) << "B=" << B << ", max_batch=" << max_batch_;
  DROPK_CHECK(T >= 1 && T <= config_.block_size)
      << "T=" << T << ", block_size=" << config_.block_size;
  const int N = B * T;
  const size_t BTC = static_cast<size_t>(N) * C;
  Activations& a = *acts_;
  Kernels& k = *kernels_;
  const size_t attention_saved = k.AttentionSavedFloats(B, T, C, NH);
  float* p = params_.data();

  last_B_ = B;
  last_T_ = T;
  has_targets_ = host_targets != nullptr;
  has_dropout_ = dropout != nullptr && dropout->rates.Any();
  if (has_dropout_) last_dropout_ = *dropout;
  const DropoutPlan* plan = has_dropout_ ? &last_dropout_ : nullptr;

  k.CopyToDevice(a.tokens.data(), host_tokens, N * sizeof(int32_t));
  if (has_targets_) k.CopyToDevice(a.targets.data(), host_targets, N * sizeof(int32_t));

  k.EmbeddingForward(a.residual.data(), a.tokens.data(), p + layout_.wte(), p + layout_.wpe(), B, T,
                     C, plan);
  // Block 0's LayerNorm; every later one is fused into the residual add before it.
  k.LayerNormForward(a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), a.residual.data(),
                     layout_.Block(p, 0).ln1_w, layout_.Block(p, 0).ln1_b, N, C);
  for (int l = 0; l < L; ++l) {
    const BlockTensors w = layout_.Block(p, l);
    float* x = a.residual.data() + l * BTC;
    float* x_next = x + BTC;
    float* ln1 = a.ln1.data() + l * BTC;
    float* qkv = a.qkv.data() + l * 3 * BTC;
    float* probs = a.probs.data() + static_cast<size_t>(l) * attention_saved;
    float* atty = a.atty.data() + l * BTC;
    float* res2 = a.res2.data() + l * BTC;
    float* ln2 = a.ln2.data() + l * BTC;
    float* fch = a.fch.data() + l * 4 * BTC;
    float* fch_gelu = a.fch_gelu.data() + l * 4 * BTC;
    float* branch = a.dbranch.data();  // projection outputs are not kept

    k.MatmulForward(qkv, ln1, w.qkv_w, w.qkv_b, N, C, 3 * C);
    k.AttentionForward(atty, probs, qkv, B, T, C, NH, l, plan);
    k.MatmulForward(branch, atty, w.attproj_w, w.attproj_b, N, C, C);
    k.ResidualDropoutLayerNormForward(res2, ln2, a.ln2_mean.data() + l * N,
                                      a.ln2_rstd.data() + l * N, x, branch, w.ln2_w, w.ln2_b, B, T,
                                      C, DropoutKind::kAttentionOutput, l, plan);
    k.MatmulForward(fch, ln2, w.fc_w, w.fc_b, N, C, 4 * C);
    k.GeluForward(fch_gelu, fch, 4 * BTC);
    k.MatmulForward(branch, fch_gelu, w.fcproj_w, w.fcproj_b, N, 4 * C, C);
    // The block's output, normalised for the next block (or the final LayerNorm).
    const bool last = l + 1 == L;
    const float* next_w = last ? p + layout_.lnf_w() : layout_.Block(p, l + 1).ln1_w;
    const float* next_b = last ? p + layout_.lnf_b() : layout_.Block(p, l + 1).ln1_b;
    float* next_ln = last ? a.lnf.data() : a.ln1.data() + (l + 1) * BTC;
    float* next_mean = last ? a.lnf_mean.data() : a.ln1_mean.data() + (l + 1) * N;
    float* next_rstd = last ? a.lnf_rstd.data() : a.ln1_rstd.data() + (l + 1) * N;
    k.ResidualDropoutLayerNormForward(x_next, next_ln, next_mean, next_rstd, res2, branch, next_w,
                                      next_b, B, T, C, DropoutKind::kMlpOutput, l, plan);
  }
  // The LM head is tied to the token embedding.
  k.MatmulForward(a.logits.data(), a.lnf.data(), p + layout_.wte(), nullptr, N, C, V);
  if (!has_targets_) return 0.0f;

  k.CrossEntropyForward(a.losses.data(), a.lse.data(), a.logits.data(), a.targets.data(), N, V);
  k.CopyToHost(a.host_losses.data(), a.losses.data(), N * sizeof(float));
  double sum = 0.0;
  for (int i = 0; i < N; ++i) sum += a.host_losses[i];
  return static_cast<float>(sum / N);
}

void Gpt::Backward(float loss_scale, const GradsReadyFn& on_ready) {
  const int L = config_.n_layer, C = config_.n_embd, NH = config_.n_head, V = config_.vocab_size;
  const int B = last_B_, T = last_T_, N = B * T;
  const size_t BTC = static_cast<size_t>(N) * C;
  Activations& a = *acts_;
  Kernels& k = *kernels_;
  const size_t attention_saved = k.AttentionSavedFloats(B, T, C, NH);
  float* p = params_.data();
  float* g = grads_.data();
  const DropoutPlan* plan = has_dropout_ ? &last_dropout_ : nullptr;
  float* dresidual = a.dresidual.data();
  float* dbranch = a.dbranch.data();
  float* dln = a.dln.data();

  k.CrossEntropyBackward(a.logits.data(), a.lse.data(), a.targets.data(), N, V, loss_scale / N);
  const float* dlogits = a.logits.data();
  k.MatmulBackward(dln, g + layout_.wte(), nullptr, dlogits, a.lnf.data(), p + layout_.wte(), N, C,
                   V, /*accumulate_dinp=*/false);
  k.Zero(dresidual, BTC * sizeof(float));
  const float* x_final = a.residual.data() + L * BTC;
  k.LayerNormBackward(dresidual, g + layout_.lnf_w(), g + layout_.lnf_b(), dln, x_final,
                      p + layout_.lnf_w(), a.lnf_mean.data(), a.lnf_rstd.data(), N, C);
  // Each finished range: record its readiness event, then report it.
  int next_event = 0;
  const auto ready = [&](size_t begin, size_t end) {
    if (!on_ready) return;
    DeviceEvent* event = ready_events_[next_event++].get();
    event->Record();
    on_ready(begin, end, event);
  };
  ready(layout_.lnf_w(), layout_.num_params());

  for (int l = L - 1; l >= 0; --l) {
    const BlockTensors w = layout_.Block(p, l);
    const BlockTensors dw = layout_.Block(g, l);
    const float* x = a.residual.data() + l * BTC;
    const float* ln1 = a.ln1.data() + l * BTC;
    const float* qkv = a.qkv.data() + l * 3 * BTC;
    const float* probs = a.probs.data() + static_cast<size_t>(l) * attention_saved;
    const float* atty = a.atty.data() + l * BTC;
    const float* res2 = a.res2.data() + l * BTC;
    const float* ln2 = a.ln2.data() + l * BTC;
    const float* fch = a.fch.data() + l * 4 * BTC;
    const float* fch_gelu = a.fch_gelu.data() + l * 4 * BTC;

    // MLP branch: x_next = res2 + dropout(fch_gelu · fcproj_w^T + b).
    const float* dmlp =
        DropoutGradient(k, dbranch, dresidual, B, T, C, DropoutKind::kMlpOutput, l, plan);
    k.MatmulBackward(a.dfch.data(), dw.fcproj_w, dw.fcproj_b, dmlp, fch_gelu, w.fcproj_w, N, 4 * C,
                     C, false);
    k.GeluBackward(a.dfch.data(), fch, a.dfch.data(), 4 * BTC);
    k.MatmulBackward(dln, dw.fc_w, dw.fc_b, a.dfch.data(), ln2, w.fc_w, N, C, 4 * C, false);
    // dresidual becomes the gradient of res2: identity path plus the branch.
    k.LayerNormBackward(dresidual, dw.ln2_w, dw.ln2_b, dln, res2, w.ln2_w,
                        a.ln2_mean.data() + l * N, a.ln2_rstd.data() + l * N, N, C);

    // Attention branch: res2 = x + dropout(atty · attproj_w^T + b).
    const float* dattn =
        DropoutGradient(k, dbranch, dresidual, B, T, C, DropoutKind::kAttentionOutput, l, plan);
    k.MatmulBackward(a.datty.data(), dw.attproj_w, dw.attproj_b, dattn, atty, w.attproj_w, N, C, C,
                     false);
    k.AttentionBackward(a.dqkv.data(), a.datty.data(), qkv, atty, probs, B, T, C, NH, l, plan);
    k.MatmulBackward(dln, dw.qkv_w, dw.qkv_b, a.dqkv.data(), ln1, w.qkv_w, N, C, 3 * C, false);
    // dresidual becomes the gradient of this block's input x.
    k.LayerNormBackward(dresidual, dw.ln1_w, dw.ln1_b, dln, x, w.ln1_w, a.ln1_mean.data() + l * N,
                        a.ln1_rstd.data() + l * N, N, C);
    ready(layout_.BlockBegin(l), layout_.BlockEnd(l));
  }
  k.EmbeddingBackward(g + layout_.wte(), g + layout_.wpe(), dresidual, a.tokens.data(), B, T, C,
                      plan);
  ready(0, layout_.BlockBegin(0));
}

void Gpt::ZeroGrad() { kernels_->Zero(grads_.data(), layout_.num_params() * sizeof(float)); }

void Gpt::LogitsToHost(int b, int t, float* host_out) const {
  const size_t row = static_cast<size_t>(b) * last_T_ + t;
  const size_t V = config_.vocab_size;
  kernels_->CopyToHost(host_out, acts_->logits.data() + row * V, V * sizeof(float));
}

double Gpt::TrainingFlops(int B, int T) const {
  // 6 FLOPs per parameter per token (forward 2, backward 4), plus attention's
  // q·k and att·v: 12 * L * C * T per token (PaLM appendix B).
  const double tokens = static_cast<double>(B) * T;
  const double attention = 12.0 * config_.n_layer * config_.n_embd * T;
  return tokens * (6.0 * static_cast<double>(num_params()) + attention);
}

}  // namespace dropk
