#include "model/gpt.h"

#include <cmath>
#include <vector>

#include "base/check.h"
#include "model/philox.h"

namespace dropk {
namespace {
// Philox stream words reserved for weight initialisation (dropout uses
// stream = rank or sample index, so this never collides with a mask: the
// site word differs as well).
constexpr uint32_t kInitStream = 0x494E4954u;  // "INIT"
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
  DeviceBuffer<float> probs;               // (L, B,NH,T,T), softmax before dropout
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

absl::StatusOr<std::unique_ptr<Gpt>> Gpt::Create(const GptConfig& config, int max_batch,
                                                 Kernels* kernels) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (max_batch <= 0) return absl::InvalidArgumentError("max_batch must be positive");
  return std::unique_ptr<Gpt>(new Gpt(config, max_batch, kernels));
}

Gpt::Gpt(const GptConfig& config, int max_batch, Kernels* kernels)
    : config_(config), layout_(config), max_batch_(max_batch), kernels_(kernels) {
  const size_t L = config.n_layer, B = max_batch, T = config.block_size, C = config.n_embd,
               NH = config.n_head, V = config.vocab_size;
  const size_t BT = B * T, BTC = BT * C;
  params_ = DeviceBuffer<float>(kernels, layout_.num_params());
  grads_ = DeviceBuffer<float>(kernels, layout_.num_params());
  for (size_t i = 0; i < L + 2; ++i) ready_events_.push_back(kernels->CreateEvent());
  acts_ = std::make_unique<Activations>();
  Activations& a = *acts_;
  auto floats = [kernels](size_t n) { return DeviceBuffer<float>(kernels, n); };
  a.tokens = DeviceBuffer<int32_t>(kernels, BT);
  a.targets = DeviceBuffer<int32_t>(kernels, BT);
  a.residual = floats((L + 1) * BTC);
  a.ln1 = floats(L * BTC);
  a.ln2 = floats(L * BTC);
  a.ln1_mean = floats(L * BT);
  a.ln1_rstd = floats(L * BT);
  a.ln2_mean = floats(L * BT);
  a.ln2_rstd = floats(L * BT);
  a.qkv = floats(L * 3 * BTC);
  a.probs = floats(L * B * NH * T * T);
  a.atty = floats(L * BTC);
  a.res2 = floats(L * BTC);
  a.fch = floats(L * 4 * BTC);
  a.fch_gelu = floats(L * 4 * BTC);
  a.lnf = floats(BTC);
  a.lnf_mean = floats(BT);
  a.lnf_rstd = floats(BT);
  a.logits = floats(BT * V);
  a.losses = floats(BT);
  a.lse = floats(BT);
  a.dresidual = floats(BTC);
  a.dbranch = floats(BTC);
  a.dln = floats(BTC);
  a.datty = floats(BTC);
  a.dqkv = floats(3 * BTC);
  a.dfch = floats(4 * BTC);
  a.host_losses.resize(BT);
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
  DROPK_CHECK(T >= 1 && T <= config_.block_size) << "T=" << T << ", block_size="
                                                  << config_.block_size;
  const int N = B * T;
  const size_t BTC = static_cast<size_t>(N) * C;
  Activations& a = *acts_;
  Kernels& k = *kernels_;
  float* p = params_.data();

  last_B_ = B;
  last_T_ = T;
  has_targets_ = host_targets != nullptr;
  has_dropout_ = dropout != nullptr && dropout->rates.Any();
  if (has_dropout_) last_dropout_ = *dropout;
  const DropoutPlan* plan = has_dropout_ ? &last_dropout_ : nullptr;

  k.CopyToDevice(a.tokens.data(), host_tokens, N * sizeof(int32_t));
  if (has_targets_) k.CopyToDevice(a.targets.data(), host_targets, N * sizeof(int32_t));

  k.EmbeddingForward(a.residual.data(), a.tokens.data(), p + layout_.wte(), p + layout_.wpe(), B,
                     T, C, plan);
  for (int l = 0; l < L; ++l) {
    const BlockTensors w = layout_.Block(p, l);
    float* x = a.residual.data() + l * BTC;
    float* x_next = x + BTC;
    float* ln1 = a.ln1.data() + l * BTC;
    float* qkv = a.qkv.data() + l * 3 * BTC;
    float* probs = a.probs.data() + static_cast<size_t>(l) * N * NH * T;
    float* atty = a.atty.data() + l * BTC;
    float* res2 = a.res2.data() + l * BTC;
    float* ln2 = a.ln2.data() + l * BTC;
    float* fch = a.fch.data() + l * 4 * BTC;
    float* fch_gelu = a.fch_gelu.data() + l * 4 * BTC;
    float* branch = a.dbranch.data();  // projection outputs are not kept

    k.LayerNormForward(ln1, a.ln1_mean.data() + l * N, a.ln1_rstd.data() + l * N, x, w.ln1_w,
                       w.ln1_b, N, C);
    k.MatmulForward(qkv, ln1, w.qkv_w, w.qkv_b, N, C, 3 * C);
    k.AttentionForward(atty, probs, qkv, B, T, C, NH, l, plan);
    k.MatmulForward(branch, atty, w.attproj_w, w.attproj_b, N, C, C);
    k.ResidualDropoutForward(res2, x, branch, B, T, C, DropoutKind::kAttentionOutput, l, plan);
    k.LayerNormForward(ln2, a.ln2_mean.data() + l * N, a.ln2_rstd.data() + l * N, res2, w.ln2_w,
                       w.ln2_b, N, C);
    k.MatmulForward(fch, ln2, w.fc_w, w.fc_b, N, C, 4 * C);
    k.GeluForward(fch_gelu, fch, 4 * BTC);
    k.MatmulForward(branch, fch_gelu, w.fcproj_w, w.fcproj_b, N, 4 * C, C);
    k.ResidualDropoutForward(x_next, res2, branch, B, T, C, DropoutKind::kMlpOutput, l, plan);
  }
  const float* x_final = a.residual.data() + L * BTC;
  k.LayerNormForward(a.lnf.data(), a.lnf_mean.data(), a.lnf_rstd.data(), x_final,
                     p + layout_.lnf_w(), p + layout_.lnf_b(), N, C);
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
  float* p = params_.data();
  float* g = grads_.data();
  const DropoutPlan* plan = has_dropout_ ? &last_dropout_ : nullptr;
  float* dresidual = a.dresidual.data();
  float* dbranch = a.dbranch.data();
  float* dln = a.dln.data();

  k.CrossEntropyBackward(a.logits.data(), a.lse.data(), a.targets.data(), N, V, loss_scale / N);
  const float* dlogits = a.logits.data();
  k.MatmulBackward(dln, g + layout_.wte(), nullptr, dlogits, a.lnf.data(), p + layout_.wte(), N,
                   C, V, /*accumulate_dinp=*/false);
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
    const float* probs = a.probs.data() + static_cast<size_t>(l) * N * NH * T;
    const float* atty = a.atty.data() + l * BTC;
    const float* res2 = a.res2.data() + l * BTC;
    const float* ln2 = a.ln2.data() + l * BTC;
    const float* fch = a.fch.data() + l * 4 * BTC;
    const float* fch_gelu = a.fch_gelu.data() + l * 4 * BTC;

    // MLP branch: x_next = res2 + dropout(fch_gelu · fcproj_w^T + b).
    k.DropoutBackward(dbranch, dresidual, B, T, C, DropoutKind::kMlpOutput, l, plan);
    k.MatmulBackward(a.dfch.data(), dw.fcproj_w, dw.fcproj_b, dbranch, fch_gelu, w.fcproj_w, N,
                     4 * C, C, false);
    k.GeluBackward(a.dfch.data(), fch, a.dfch.data(), 4 * BTC);
    k.MatmulBackward(dln, dw.fc_w, dw.fc_b, a.dfch.data(), ln2, w.fc_w, N, C, 4 * C, false);
    // dresidual becomes the gradient of res2: identity path plus the branch.
    k.LayerNormBackward(dresidual, dw.ln2_w, dw.ln2_b, dln, res2, w.ln2_w,
                        a.ln2_mean.data() + l * N, a.ln2_rstd.data() + l * N, N, C);

    // Attention branch: res2 = x + dropout(atty · attproj_w^T + b).
    k.DropoutBackward(dbranch, dresidual, B, T, C, DropoutKind::kAttentionOutput, l, plan);
    k.MatmulBackward(a.datty.data(), dw.attproj_w, dw.attproj_b, dbranch, atty, w.attproj_w, N, C,
                     C, false);
    k.AttentionBackward(a.dqkv.data(), a.datty.data(), qkv, probs, B, T, C, NH, l, plan);
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
