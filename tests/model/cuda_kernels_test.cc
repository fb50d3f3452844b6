// Every CUDA kernel against the CPU kernel (the oracle) on random inputs,
// forward and backward, at each matmul precision; dropout masks bitwise equal
// between the two at all four sites in both stream modes; GPU results
// reproducible run to run.
//
// Tolerances, as ||gpu - cpu||_2 / ||cpu||_2 over a whole output:
//   ops without a matrix product (any precision)   1e-5
//   ops with one, fp32                             1e-5
//   ops with one, tf32 (10-bit mantissa inputs)    2e-3
//   ops with one, bf16 (7-bit mantissa inputs)     2e-2
// NaN never passes (the comparison is false).
//
// Without a GPU (or in a build without CUDA) every test skips with the
// reason MakeKernels gave, e.g. "no CUDA device: cudaGetDeviceCount returned
// cudaErrorNoDevice (no CUDA-capable device is detected)".
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "model/dropout.h"
#include "model/gpt.h"
#include "model/kernels.h"
#include "support/relative_error.h"

namespace dropk {

// Names the precision in test names and messages (found by gtest through ADL).
void PrintTo(MatmulPrecision p, std::ostream* os) { *os << MatmulPrecisionName(p); }

namespace {

using Vec = std::vector<float>;

Vec Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Vec v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<int32_t> RandomTokens(size_t n, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, V - 1);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = dist(gen);
  return t;
}

using test_util::RelativeError;

bool BitwiseEqual(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

constexpr double kExactOpTolerance = 1e-5;

double MatmulTolerance(MatmulPrecision p) {
  switch (p) {
    case MatmulPrecision::kFp32: return 1e-5;
    case MatmulPrecision::kTf32: return 2e-3;
    case MatmulPrecision::kBf16: return 2e-2;
  }
  return 0.0;
}

// A tensor held on both devices: the same host values uploaded to each.
template <typename T>
struct Twin {
  DeviceBuffer<T> cpu, gpu;
};

class CudaKernelsTest : public ::testing::TestWithParam<MatmulPrecision> {
 protected:
  void SetUp() override {
    KernelOptions options;
    options.precision = GetParam();
    absl::StatusOr<std::unique_ptr<Kernels>> gpu = MakeKernels(Device::kCuda, options);
    if (!gpu.ok()) GTEST_SKIP() << "needs a GPU: " << gpu.status().message();
    gpu_ = std::move(*gpu);
    cpu_ = MakeKernels(Device::kCpu, 1).value();
  }

  double Tolerance() const { return MatmulTolerance(GetParam()); }
  void ExpectGptMatchesCpu(int n_head, int n_embd, int T);

  template <typename T>
  Twin<T> Upload(const std::vector<T>& host) {
    Twin<T> t{DeviceBuffer<T>(cpu_.get(), host.size()), DeviceBuffer<T>(gpu_.get(), host.size())};
    cpu_->CopyToDevice(t.cpu.data(), host.data(), host.size() * sizeof(T));
    gpu_->CopyToDevice(t.gpu.data(), host.data(), host.size() * sizeof(T));
    return t;
  }
  Twin<float> Zeros(size_t n) { return Upload(Vec(n, 0.0f)); }

  // Both sides of a twin, back on the host, after the GPU's queue drained.
  std::pair<Vec, Vec> Download(const Twin<float>& t) {
    Vec c(t.cpu.size()), g(t.gpu.size());
    cpu_->CopyToHost(c.data(), t.cpu.data(), c.size() * sizeof(float));
    gpu_->CopyToHost(g.data(), t.gpu.data(), g.size() * sizeof(float));
    return {c, g};
  }

  void ExpectClose(const char* what, const Twin<float>& t, double tolerance) {
    auto [c, g] = Download(t);
    const double err = RelativeError(g, c);
    EXPECT_LE(err, tolerance) << what << " (" << MatmulPrecisionName(GetParam()) << ")";
  }

  std::unique_ptr<Kernels> cpu_, gpu_;
};

DropoutPlan Plan(bool per_sample, float p) {
  DropoutPlan plan;
  plan.seed = 0x1234abcd5678ull;
  plan.step = 77;
  plan.stream_base = 3;
  plan.per_sample = per_sample;
  plan.rates = {p, p, p, p};
  return plan;
}

TEST_P(CudaKernelsTest, EmbeddingForwardAndBackward) {
  const int B = 3, T = 5, C = 7, V = 6;  // T*C = 35: samples straddle Philox blocks
  for (bool per_sample : {false, true}) {
    const DropoutPlan plan = Plan(per_sample, 0.2f);
    auto tokens = Upload(RandomTokens(B * T, V, 1));  // repeats: V < B*T
    auto wte = Upload(Random(V * C, 2)), wpe = Upload(Random(T * C, 3));
    auto out = Zeros(B * T * C);
    cpu_->EmbeddingForward(out.cpu.data(), tokens.cpu.data(), wte.cpu.data(), wpe.cpu.data(), B, T,
                           C, &plan);
    gpu_->EmbeddingForward(out.gpu.data(), tokens.gpu.data(), wte.gpu.data(), wpe.gpu.data(), B, T,
                           C, &plan);
    auto [oc, og] = Download(out);
    EXPECT_TRUE(BitwiseEqual(oc, og)) << "embedding forward, per_sample=" << per_sample;

    auto dout = Upload(Random(B * T * C, 4));
    auto dwte = Upload(Random(V * C, 5)), dwpe = Upload(Random(T * C, 6));  // accumulates
    cpu_->EmbeddingBackward(dwte.cpu.data(), dwpe.cpu.data(), dout.cpu.data(), tokens.cpu.data(), B,
                            T, C, &plan);
    gpu_->EmbeddingBackward(dwte.gpu.data(), dwpe.gpu.data(), dout.gpu.data(), tokens.gpu.data(), B,
                            T, C, &plan);
    // Same additions in the same order: bitwise.
    auto [wc, wg] = Download(dwte);
    auto [pc, pg] = Download(dwpe);
    EXPECT_TRUE(BitwiseEqual(wc, wg)) << "dwte, per_sample=" << per_sample;
    EXPECT_TRUE(BitwiseEqual(pc, pg)) << "dwpe, per_sample=" << per_sample;
  }
}

TEST_P(CudaKernelsTest, LayerNormForwardAndBackward) {
  const int N = 37, C = 200;
  auto x = Upload(Random(N * C, 1, 2.0f)), w = Upload(Random(C, 2)), b = Upload(Random(C, 3));
  auto out = Zeros(N * C), mean = Zeros(N), rstd = Zeros(N);
  for (Kernels* k : {cpu_.get(), gpu_.get()}) {
    const bool g = k == gpu_.get();
    k->LayerNormForward((g ? out.gpu : out.cpu).data(), (g ? mean.gpu : mean.cpu).data(),
                        (g ? rstd.gpu : rstd.cpu).data(), (g ? x.gpu : x.cpu).data(),
                        (g ? w.gpu : w.cpu).data(), (g ? b.gpu : b.cpu).data(), N, C);
  }
  ExpectClose("layernorm out", out, kExactOpTolerance);
  ExpectClose("layernorm mean", mean, kExactOpTolerance);
  ExpectClose("layernorm rstd", rstd, kExactOpTolerance);

  auto dout = Upload(Random(N * C, 4));
  auto dx = Upload(Random(N * C, 5)), dw = Upload(Random(C, 6)), db = Upload(Random(C, 7));
  for (Kernels* k : {cpu_.get(), gpu_.get()}) {
    const bool g = k == gpu_.get();
    k->LayerNormBackward((g ? dx.gpu : dx.cpu).data(), (g ? dw.gpu : dw.cpu).data(),
                         (g ? db.gpu : db.cpu).data(), (g ? dout.gpu : dout.cpu).data(),
                         (g ? x.gpu : x.cpu).data(), (g ? w.gpu : w.cpu).data(),
                         (g ? mean.gpu : mean.cpu).data(), (g ? rstd.gpu : rstd.cpu).data(), N, C);
  }
  ExpectClose("layernorm dinp", dx, kExactOpTolerance);
  ExpectClose("layernorm dw", dw, kExactOpTolerance);
  ExpectClose("layernorm db", db, kExactOpTolerance);
}

TEST_P(CudaKernelsTest, MatmulForwardAndBackward) {
  // Odd sizes: no dimension a multiple of 4 or 8.
  const int N = 45, C = 67, OC = 93;
  auto x = Upload(Random(N * C, 1)), w = Upload(Random(OC * C, 2, 0.2f));
  auto bias = Upload(Random(OC, 3));
  for (bool with_bias : {true, false}) {
    auto out = Zeros(N * OC);
    cpu_->MatmulForward(out.cpu.data(), x.cpu.data(), w.cpu.data(),
                        with_bias ? bias.cpu.data() : nullptr, N, C, OC);
    gpu_->MatmulForward(out.gpu.data(), x.gpu.data(), w.gpu.data(),
                        with_bias ? bias.gpu.data() : nullptr, N, C, OC);
    ExpectClose(with_bias ? "matmul out (bias)" : "matmul out", out, Tolerance());
  }
  // Views at an odd float offset, as parameters inside the flat buffer are.
  auto wide = Upload(Random(OC * C + 1, 8, 0.2f));
  auto out = Zeros(N * OC);
  cpu_->MatmulForward(out.cpu.data(), x.cpu.data(), wide.cpu.data() + 1, bias.cpu.data(), N, C, OC);
  gpu_->MatmulForward(out.gpu.data(), x.gpu.data(), wide.gpu.data() + 1, bias.gpu.data(), N, C, OC);
  ExpectClose("matmul out (unaligned weights)", out, Tolerance());
  cpu_->MatmulForward(out.cpu.data(), x.cpu.data(), w.cpu.data(), wide.cpu.data() + 3, N, C, OC);
  gpu_->MatmulForward(out.gpu.data(), x.gpu.data(), w.gpu.data(), wide.gpu.data() + 3, N, C, OC);
  ExpectClose("matmul out (unaligned bias)", out, Tolerance());

  auto dout = Upload(Random(N * OC, 4));
  for (bool accumulate : {false, true}) {
    auto dx = Upload(Random(N * C, 5)), dw = Upload(Random(OC * C, 6)), db = Upload(Random(OC, 7));
    cpu_->MatmulBackward(dx.cpu.data(), dw.cpu.data(), db.cpu.data(), dout.cpu.data(), x.cpu.data(),
                         w.cpu.data(), N, C, OC, accumulate);
    gpu_->MatmulBackward(dx.gpu.data(), dw.gpu.data(), db.gpu.data(), dout.gpu.data(), x.gpu.data(),
                         w.gpu.data(), N, C, OC, accumulate);
    ExpectClose("matmul dinp", dx, Tolerance());
    ExpectClose("matmul dw", dw, Tolerance());
    ExpectClose("matmul dbias", db, kExactOpTolerance);
  }
}

TEST_P(CudaKernelsTest, AttentionForwardAndBackward) {
  const int B = 2, T = 13, NH = 3, C = 24;  // hs = 8; T*T = 169, rows straddle Philox blocks
  auto qkv = Upload(Random(B * T * 3 * C, 1));
  auto dout = Upload(Random(B * T * C, 2));
  for (float p : {0.0f, 0.1f}) {
    for (bool per_sample : {false, true}) {
      const DropoutPlan plan = Plan(per_sample, p);
      const DropoutPlan* dp = p > 0 ? &plan : nullptr;
      auto out = Zeros(B * T * C), probs = Zeros(B * NH * T * T);
      auto dqkv = Upload(Random(B * T * 3 * C, 3));  // overwritten
      cpu_->AttentionForward(out.cpu.data(), probs.cpu.data(), qkv.cpu.data(), B, T, C, NH, 2, dp);
      gpu_->AttentionForward(out.gpu.data(), probs.gpu.data(), qkv.gpu.data(), B, T, C, NH, 2, dp);
      cpu_->AttentionBackward(dqkv.cpu.data(), dout.cpu.data(), qkv.cpu.data(), out.cpu.data(),
                              probs.cpu.data(), B, T, C, NH, 2, dp);
      gpu_->AttentionBackward(dqkv.gpu.data(), dout.gpu.data(), qkv.gpu.data(), out.gpu.data(),
                              probs.gpu.data(), B, T, C, NH, 2, dp);
      SCOPED_TRACE(testing::Message() << "p=" << p << " per_sample=" << per_sample);
      ExpectClose("attention out", out, Tolerance());
      // Both devices mark the entries dropout dropped by setting their sign
      // bit (the softmax is |probs|): the marks agree bit for bit at and below
      // the diagonal, and there are some exactly when dropout is on.
      auto [cp, gp] = Download(probs);
      int marked = 0, marks_differ = 0;
      for (size_t i = 0; i < cp.size(); ++i) {
        if (i % T > (i / T) % T) continue;  // above the diagonal
        marked += std::signbit(cp[i]);
        marks_differ += std::signbit(cp[i]) != std::signbit(gp[i]);
        cp[i] = std::fabs(cp[i]);
        gp[i] = std::fabs(gp[i]);
      }
      EXPECT_EQ(marks_differ, 0) << "dropped-entry signs, CPU vs GPU";
      EXPECT_EQ(marked > 0, p > 0) << marked << " entries marked dropped";
      cpu_->CopyToDevice(probs.cpu.data(), cp.data(), cp.size() * sizeof(float));
      gpu_->CopyToDevice(probs.gpu.data(), gp.data(), gp.size() * sizeof(float));
      ExpectClose("attention probs", probs, Tolerance());
      ExpectClose("attention dqkv", dqkv, Tolerance());
    }
  }
}

TEST_P(CudaKernelsTest, GeluForwardAndBackward) {
  const size_t n = 10007;
  auto x = Upload(Random(n, 1, 3.0f)), dout = Upload(Random(n, 2));
  auto out = Zeros(n), dx = Zeros(n);
  cpu_->GeluForward(out.cpu.data(), x.cpu.data(), n);
  gpu_->GeluForward(out.gpu.data(), x.gpu.data(), n);
  cpu_->GeluBackward(dx.cpu.data(), x.cpu.data(), dout.cpu.data(), n);
  gpu_->GeluBackward(dx.gpu.data(), x.gpu.data(), dout.gpu.data(), n);
  ExpectClose("gelu out", out, kExactOpTolerance);
  ExpectClose("gelu dinp", dx, kExactOpTolerance);
  // In place, as the model calls it.
  cpu_->GeluBackward(dout.cpu.data(), x.cpu.data(), dout.cpu.data(), n);
  gpu_->GeluBackward(dout.gpu.data(), x.gpu.data(), dout.gpu.data(), n);
  ExpectClose("gelu dinp in place", dout, kExactOpTolerance);
}

TEST_P(CudaKernelsTest, ResidualDropoutForwardAndBackward) {
  const int B = 3, T = 6, C = 10;
  auto res = Upload(Random(B * T * C, 1)), x = Upload(Random(B * T * C, 2));
  for (bool per_sample : {false, true}) {
    const DropoutPlan plan = Plan(per_sample, 0.3f);
    auto out = Zeros(B * T * C), dx = Zeros(B * T * C);
    cpu_->ResidualDropoutForward(out.cpu.data(), res.cpu.data(), x.cpu.data(), B, T, C,
                                 DropoutKind::kMlpOutput, 1, &plan);
    gpu_->ResidualDropoutForward(out.gpu.data(), res.gpu.data(), x.gpu.data(), B, T, C,
                                 DropoutKind::kMlpOutput, 1, &plan);
    ExpectClose("residual dropout out", out, kExactOpTolerance);
    cpu_->DropoutBackward(dx.cpu.data(), x.cpu.data(), B, T, C, DropoutKind::kMlpOutput, 1, &plan);
    gpu_->DropoutBackward(dx.gpu.data(), x.gpu.data(), B, T, C, DropoutKind::kMlpOutput, 1, &plan);
    auto [c, g] = Download(dx);
    EXPECT_TRUE(BitwiseEqual(c, g)) << "dropout backward, per_sample=" << per_sample;
  }
}

TEST_P(CudaKernelsTest, CrossEntropyForwardAndBackward) {
  const int N = 19, V = 9001;
  auto logits = Upload(Random(N * V, 1, 3.0f));
  auto targets = Upload(RandomTokens(N, V, 2));
  auto losses = Zeros(N), lse = Zeros(N);
  cpu_->CrossEntropyForward(losses.cpu.data(), lse.cpu.data(), logits.cpu.data(),
                            targets.cpu.data(), N, V);
  gpu_->CrossEntropyForward(losses.gpu.data(), lse.gpu.data(), logits.gpu.data(),
                            targets.gpu.data(), N, V);
  ExpectClose("cross-entropy losses", losses, kExactOpTolerance);
  ExpectClose("cross-entropy lse", lse, kExactOpTolerance);
  cpu_->CrossEntropyBackward(logits.cpu.data(), lse.cpu.data(), targets.cpu.data(), N, V, 0.25f);
  gpu_->CrossEntropyBackward(logits.gpu.data(), lse.gpu.data(), targets.gpu.data(), N, V, 0.25f);
  ExpectClose("cross-entropy dlogits", logits, kExactOpTolerance);
}

TEST_P(CudaKernelsTest, SumSquaresAdamWAndScale) {
  const size_t n = 100003;
  auto x = Upload(Random(n, 1));
  const double want = cpu_->SumSquares(x.cpu.data(), n);
  const double got = gpu_->SumSquares(x.gpu.data(), n);
  EXPECT_NEAR(got, want, 1e-9 * want);
  EXPECT_EQ(gpu_->SumSquares(x.gpu.data(), n), got) << "not reproducible";

  auto params = Upload(Random(n, 2)), grads = Upload(Random(n, 3));
  auto m = Upload(Random(n, 4, 0.1f)), v = Zeros(n);
  AdamWArgs args;
  args.lr = 1e-3f;
  args.weight_decay = 0.1f;
  args.grad_scale = 0.5f;
  args.bias_correction1 = 0.1f;
  args.bias_correction2 = 0.001f;
  for (int step = 0; step < 3; ++step) {
    cpu_->AdamW(params.cpu.data(), grads.cpu.data(), m.cpu.data(), v.cpu.data(), n, args);
    gpu_->AdamW(params.gpu.data(), grads.gpu.data(), m.gpu.data(), v.gpu.data(), n, args);
  }
  ExpectClose("adamw params", params, kExactOpTolerance);
  ExpectClose("adamw m", m, kExactOpTolerance);
  ExpectClose("adamw v", v, kExactOpTolerance);

  cpu_->Scale(x.cpu.data(), 0.37f, n);
  gpu_->Scale(x.gpu.data(), 0.37f, n);
  auto [c, g] = Download(x);
  EXPECT_TRUE(BitwiseEqual(c, g)) << "scale";
}

// The keep decisions themselves, CPU vs GPU, bit for bit: at the three
// elementwise sites through DropoutBackward of ones (the output is the
// scale, or 0), and at the attention-probability site through attention
// whose v rows are one-hot, so out[t][j] is exactly the dropped probability
// of column j (0 exactly where dropped).
TEST_P(CudaKernelsTest, DropoutMasksBitwiseEqualAtAllSitesBothStreamModes) {
  if (GetParam() != MatmulPrecision::kFp32) GTEST_SKIP() << "masks do not depend on precision";
  for (bool per_sample : {false, true}) {
    const DropoutPlan plan = Plan(per_sample, 0.5f);
    SCOPED_TRACE(testing::Message() << "per_sample=" << per_sample);
    {  // embedding: (te + pe) * scale, exact on both.
      const int B = 3, T = 5, C = 9, V = 4;
      auto tokens = Upload(RandomTokens(B * T, V, 1));
      auto wte = Upload(Vec(V * C, 0.5f)), wpe = Upload(Vec(T * C, 0.25f));
      auto out = Zeros(B * T * C);
      cpu_->EmbeddingForward(out.cpu.data(), tokens.cpu.data(), wte.cpu.data(), wpe.cpu.data(), B,
                             T, C, &plan);
      gpu_->EmbeddingForward(out.gpu.data(), tokens.gpu.data(), wte.gpu.data(), wpe.gpu.data(), B,
                             T, C, &plan);
      auto [c, g] = Download(out);
      EXPECT_TRUE(BitwiseEqual(c, g)) << "embedding mask";
    }
    for (DropoutKind kind : {DropoutKind::kAttentionOutput, DropoutKind::kMlpOutput}) {
      const int B = 4, T = 7, C = 11;
      auto ones = Upload(Vec(B * T * C, 1.0f));
      auto dx = Zeros(B * T * C);
      for (int layer : {0, 5}) {
        cpu_->DropoutBackward(dx.cpu.data(), ones.cpu.data(), B, T, C, kind, layer, &plan);
        gpu_->DropoutBackward(dx.gpu.data(), ones.gpu.data(), B, T, C, kind, layer, &plan);
        auto [c, g] = Download(dx);
        EXPECT_TRUE(BitwiseEqual(c, g))
            << "site kind " << static_cast<int>(kind) << " layer " << layer;
      }
    }
    {                                                         // attention probabilities
      const int B = 2, T = 11, NH = 2, hs = 12, C = NH * hs;  // hs >= T
      Vec qkv = Random(B * T * 3 * C, 2, 0.3f);
      for (int b = 0; b < B; ++b) {
        for (int t = 0; t < T; ++t) {
          for (int h = 0; h < NH; ++h) {
            for (int d = 0; d < hs; ++d) {
              qkv[(static_cast<size_t>(b) * T + t) * 3 * C + 2 * C + h * hs + d] =
                  d == t ? 1.0f : 0.0f;
            }
          }
        }
      }
      auto in = Upload(qkv);
      auto out = Zeros(B * T * C), probs = Zeros(B * NH * T * T);
      cpu_->AttentionForward(out.cpu.data(), probs.cpu.data(), in.cpu.data(), B, T, C, NH, 3,
                             &plan);
      gpu_->AttentionForward(out.gpu.data(), probs.gpu.data(), in.gpu.data(), B, T, C, NH, 3,
                             &plan);
      auto [c, g] = Download(out);
      int dropped = 0, differ = 0;
      for (size_t i = 0; i < c.size(); ++i) {
        const size_t d = i % hs, t = (i / C) % T;
        if (d > t) continue;  // only columns j <= t are probabilities
        dropped += c[i] == 0.0f;
        differ += (c[i] == 0.0f) != (g[i] == 0.0f);
      }
      EXPECT_EQ(differ, 0) << "attention-probability mask";
      EXPECT_GT(dropped, 0);
    }
  }
}

// Forward and backward of a whole small GPT with dropout on: loss and every
// gradient against the CPU.
// A whole GPT of n_head heads, n_embd wide, on sequences of T tokens: loss
// and gradients on the GPU within 10x the product tolerance of the CPU's,
// with dropout 0.1 at every site, in both stream modes.
void CudaKernelsTest::ExpectGptMatchesCpu(int n_head, int n_embd, int T) {
  GptConfig config;
  config.vocab_size = 37;
  config.block_size = T;
  config.n_layer = 2;
  config.n_head = n_head;
  config.n_embd = n_embd;
  const int B = 3;
  std::unique_ptr<Gpt> cpu = Gpt::Create(config, B, cpu_.get()).value();
  std::unique_ptr<Gpt> gpu = Gpt::Create(config, B, gpu_.get()).value();
  cpu->InitWeights(7);
  gpu->InitWeights(7);
  const std::vector<int32_t> tokens = RandomTokens(B * T, config.vocab_size, 1);
  const std::vector<int32_t> targets = RandomTokens(B * T, config.vocab_size, 2);
  for (bool per_sample : {false, true}) {
    const DropoutPlan plan = Plan(per_sample, 0.1f);
    cpu->ZeroGrad();
    gpu->ZeroGrad();
    const float lc = cpu->Forward(tokens.data(), targets.data(), B, T, &plan);
    const float lg = gpu->Forward(tokens.data(), targets.data(), B, T, &plan);
    EXPECT_NEAR(lg, lc, 10 * Tolerance() * std::abs(lc)) << "loss, per_sample=" << per_sample;
    cpu->Backward(1.0f);
    gpu->Backward(1.0f);
    Vec gc(cpu->num_params()), gg(gpu->num_params());
    cpu_->CopyToHost(gc.data(), cpu->grads(), gc.size() * sizeof(float));
    gpu_->CopyToHost(gg.data(), gpu->grads(), gg.size() * sizeof(float));
    EXPECT_LE(RelativeError(gg, gc), 10 * Tolerance()) << "gradients, per_sample=" << per_sample;
  }
  // A smaller batch and a shorter sequence than the model was built for:
  // the layers' saved attention then packs at the call's own size.
  const int b = 2, t = T > 5 ? T - 5 : T;
  const DropoutPlan plan = Plan(true, 0.1f);
  cpu->ZeroGrad();
  gpu->ZeroGrad();
  const float lc = cpu->Forward(tokens.data(), targets.data(), b, t, &plan);
  const float lg = gpu->Forward(tokens.data(), targets.data(), b, t, &plan);
  EXPECT_NEAR(lg, lc, 10 * Tolerance() * std::abs(lc)) << "loss at B=" << b << " T=" << t;
  cpu->Backward(1.0f);
  gpu->Backward(1.0f);
  Vec gc(cpu->num_params()), gg(gpu->num_params());
  cpu_->CopyToHost(gc.data(), cpu->grads(), gc.size() * sizeof(float));
  gpu_->CopyToHost(gg.data(), gpu->grads(), gg.size() * sizeof(float));
  EXPECT_LE(RelativeError(gg, gc), 10 * Tolerance()) << "gradients at B=" << b << " T=" << t;
}

TEST_P(CudaKernelsTest, GptForwardBackwardMatchesCpu) { ExpectGptMatchesCpu(2, 32, 16); }

// The same inputs twice on the GPU: the same bits (no atomics, fixed orders).
TEST_P(CudaKernelsTest, BackwardIsReproducible) {
  const int B = 4, T = 32, C = 64, V = 8, N = B * T;
  auto tokens = Upload(RandomTokens(N, V, 1));
  auto dout = Upload(Random(N * C, 2)), x = Upload(Random(N * C, 3)), w = Upload(Random(C, 4));
  std::vector<Vec> runs;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> dwte(gpu_.get(), V * C), dwpe(gpu_.get(), T * C);
    DeviceBuffer<float> dx(gpu_.get(), N * C), dw(gpu_.get(), C), db(gpu_.get(), C);
    DeviceBuffer<float> mean(gpu_.get(), N), rstd(gpu_.get(), N), out(gpu_.get(), N * C);
    DeviceBuffer<float> d(gpu_.get(), N * C);
    gpu_->CopyToDevice(d.data(), Random(N * C, 2).data(), N * C * sizeof(float));
    gpu_->EmbeddingBackward(dwte.data(), dwpe.data(), d.data(), tokens.gpu.data(), B, T, C,
                            nullptr);
    gpu_->LayerNormForward(out.data(), mean.data(), rstd.data(), x.gpu.data(), w.gpu.data(),
                           w.gpu.data(), N, C);
    gpu_->LayerNormBackward(dx.data(), dw.data(), db.data(), dout.gpu.data(), x.gpu.data(),
                            w.gpu.data(), mean.data(), rstd.data(), N, C);
    Vec all;
    for (const DeviceBuffer<float>* b : {&dwte, &dwpe, &dx, &dw, &db}) {
      Vec h(b->size());
      gpu_->CopyToHost(h.data(), b->data(), h.size() * sizeof(float));
      all.insert(all.end(), h.begin(), h.end());
    }
    runs.push_back(all);
  }
  EXPECT_TRUE(BitwiseEqual(runs[0], runs[1]));
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaKernelsTest,
                         ::testing::Values(MatmulPrecision::kFp32, MatmulPrecision::kTf32,
                                           MatmulPrecision::kBf16),
                         [](const ::testing::TestParamInfo<MatmulPrecision>& info) {
                           return std::string(MatmulPrecisionName(info.param));
                         });

// The flash attention kernels (KernelOptions::flash_attention), which run
// attention's products in TF32 at both tf32 and bf16: held to tf32's
// tolerance at both.
class CudaKernelsFlashTest : public CudaKernelsTest {
 protected:
  void SetUp() override {
    KernelOptions options;
    options.precision = GetParam();
    options.flash_attention = true;
    options.flash_bf16_tensor_cores = Bf16TensorCores();
    absl::StatusOr<std::unique_ptr<Kernels>> gpu = MakeKernels(Device::kCuda, options);
    if (!gpu.ok()) GTEST_SKIP() << "needs a GPU: " << gpu.status().message();
    gpu_ = std::move(*gpu);
    cpu_ = MakeKernels(Device::kCpu, 1).value();
    // Else the bf16 tests would pass on the TF32 kernels, at bf16's looser
    // tolerance, and say nothing about the kernels they are named for.
    if (Bf16TensorCores()) {
      ASSERT_NE(gpu_->Describe().find("bf16 tensor-core flash attention"), std::string::npos)
          << gpu_->Describe();
    }
  }
  // Whether the kernels under test are the bf16 tensor-core ones
  // (KernelOptions::flash_bf16_tensor_cores).
  virtual bool Bf16TensorCores() const { return false; }
  // Attention's own outputs: tf32's tolerance at both precisions for the
  // TF32 kernels, bf16's for the bf16 ones.
  double AttentionTolerance() const {
    return MatmulTolerance(Bf16TensorCores() ? MatmulPrecision::kBf16 : MatmulPrecision::kTf32);
  }
  void ExpectAttentionMatchesTheCpuAtEveryHeadSize();
  void ExpectAttentionReproducible();
  // Whether this GPU runs attention of this shape through the flash kernels
  // (it keeps what they save): GPUs that give a block less shared memory
  // than their backward needs (sm_86, sm_89 at head size 64) do not.
  bool Flash(int B, int T, int C, int NH) const {
    return gpu_->AttentionSavedFloats(B, T, C, NH) == static_cast<size_t>(B) * NH * T;
  }
};

// Each head size the kernels take, sequences shorter than a tile, one tile,
// and ending inside a later tile; no dropout and 0.1 in both stream modes.
// Forward keeps a log-sum-exp per row, not T x T probabilities; backward
// reads forward's output.
TEST_P(CudaKernelsFlashTest, AttentionMatchesTheCpuAtEveryHeadSize) {
  ExpectAttentionMatchesTheCpuAtEveryHeadSize();
}

void CudaKernelsFlashTest::ExpectAttentionMatchesTheCpuAtEveryHeadSize() {
  std::string materialised;  // head sizes this GPU keeps on the other kernels
  int flash_sizes = 0;
  for (int hs : {16, 32, 64}) {
    if (!Flash(2, 64, 3 * hs, 3)) {
      materialised.append(1, ' ').append(std::to_string(hs));
      continue;
    }
    ++flash_sizes;
    for (int T : {1, 50, 64, 130}) {
      const int B = 2, NH = 3, C = NH * hs;
      const size_t saved = gpu_->AttentionSavedFloats(B, T, C, NH);
      ASSERT_TRUE(Flash(B, T, C, NH)) << "hs=" << hs << " T=" << T;
      auto qkv = Upload(Random(B * T * 3 * C, 1));
      auto dout = Upload(Random(B * T * C, 2));
      for (float p : {0.0f, 0.1f}) {
        for (bool per_sample : {false, true}) {
          SCOPED_TRACE(testing::Message()
                       << "hs=" << hs << " T=" << T << " p=" << p << " per_sample=" << per_sample);
          const DropoutPlan plan = Plan(per_sample, p);
          const DropoutPlan* dp = p > 0 ? &plan : nullptr;
          auto out = Zeros(B * T * C);
          auto dqkv = Upload(Random(B * T * 3 * C, 3));  // overwritten
          DeviceBuffer<float> cpu_probs(cpu_.get(), static_cast<size_t>(B) * NH * T * T);
          DeviceBuffer<float> gpu_saved(gpu_.get(), saved);
          cpu_->AttentionForward(out.cpu.data(), cpu_probs.data(), qkv.cpu.data(), B, T, C, NH, 1,
                                 dp);
          gpu_->AttentionForward(out.gpu.data(), gpu_saved.data(), qkv.gpu.data(), B, T, C, NH, 1,
                                 dp);
          cpu_->AttentionBackward(dqkv.cpu.data(), dout.cpu.data(), qkv.cpu.data(), out.cpu.data(),
                                  cpu_probs.data(), B, T, C, NH, 1, dp);
          gpu_->AttentionBackward(dqkv.gpu.data(), dout.gpu.data(), qkv.gpu.data(), out.gpu.data(),
                                  gpu_saved.data(), B, T, C, NH, 1, dp);
          ExpectClose("flash attention out", out, AttentionTolerance());
          ExpectClose("flash attention dqkv", dqkv, AttentionTolerance());
        }
      }
    }
  }
  if (flash_sizes == 0) {
    GTEST_SKIP() << "this GPU keeps the materialised kernels at every head size (too little "
                    "shared memory per block)";
  }
  if (!materialised.empty()) {
    std::printf("note: this GPU keeps the materialised kernels at head size%s\n",
                materialised.c_str());
  }
}

// fp32 and head sizes the kernels do not take stay on the materialised
// kernels (B*NH*T*T saved floats) and still match the CPU.
TEST_P(CudaKernelsFlashTest, OtherShapesKeepTheMaterialisedKernels) {
  const int B = 2, T = 13, NH = 3, C = 24;  // hs = 8
  EXPECT_EQ(gpu_->AttentionSavedFloats(B, T, C, NH), static_cast<size_t>(B) * NH * T * T);
  KernelOptions fp32;
  fp32.flash_attention = true;
  std::unique_ptr<Kernels> plain = MakeKernels(Device::kCuda, fp32).value();
  EXPECT_EQ(plain->AttentionSavedFloats(B, T, 4 * 16, 4), static_cast<size_t>(B) * 4 * T * T);
}

// A whole GPT through the flash kernels: head sizes 32 and 16, over one
// tile and over two.
TEST_P(CudaKernelsFlashTest, GptForwardBackwardMatchesCpu) {
  ExpectGptMatchesCpu(2, 64, 16);
  ExpectGptMatchesCpu(4, 64, 80);
}

// The same inputs twice: the same bits (no atomics; dq has its own kernel).
TEST_P(CudaKernelsFlashTest, AttentionIsReproducible) { ExpectAttentionReproducible(); }

void CudaKernelsFlashTest::ExpectAttentionReproducible() {
  const int B = 2, T = 100, NH = 2, C = 128;
  if (!Flash(B, T, C, NH)) GTEST_SKIP() << "this GPU keeps the materialised kernels at hs=64";
  auto qkv = Upload(Random(B * T * 3 * C, 1));
  auto dout = Upload(Random(B * T * C, 2));
  const DropoutPlan plan = Plan(true, 0.1f);
  std::vector<Vec> runs;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> out(gpu_.get(), B * T * C), dqkv(gpu_.get(), B * T * 3 * C);
    DeviceBuffer<float> saved(gpu_.get(), gpu_->AttentionSavedFloats(B, T, C, NH));
    gpu_->AttentionForward(out.data(), saved.data(), qkv.gpu.data(), B, T, C, NH, 0, &plan);
    gpu_->AttentionBackward(dqkv.data(), dout.gpu.data(), qkv.gpu.data(), out.data(), saved.data(),
                            B, T, C, NH, 0, &plan);
    Vec all(out.size() + dqkv.size());
    gpu_->CopyToHost(all.data(), out.data(), out.size() * sizeof(float));
    gpu_->CopyToHost(all.data() + out.size(), dqkv.data(), dqkv.size() * sizeof(float));
    runs.push_back(all);
  }
  EXPECT_TRUE(BitwiseEqual(runs[0], runs[1]));
}

INSTANTIATE_TEST_SUITE_P(Flash, CudaKernelsFlashTest,
                         ::testing::Values(MatmulPrecision::kTf32, MatmulPrecision::kBf16),
                         [](const ::testing::TestParamInfo<MatmulPrecision>& info) {
                           return std::string(MatmulPrecisionName(info.param)) + "_flash";
                         });

// The bf16 tensor-core flash kernels (KernelOptions::flash_bf16_tensor_cores,
// model/cuda/flash_bf16_body.h), held to bf16's tolerance; the warp-emulated
// test (flash_bf16_emulated_test.cc) checks the same bodies without a GPU.
class CudaKernelsFlashBf16Test : public CudaKernelsFlashTest {
 protected:
  bool Bf16TensorCores() const override { return true; }
};

TEST_P(CudaKernelsFlashBf16Test, AttentionMatchesTheCpuAtEveryHeadSize) {
  ExpectAttentionMatchesTheCpuAtEveryHeadSize();
}

TEST_P(CudaKernelsFlashBf16Test, GptForwardBackwardMatchesCpu) {
  ExpectGptMatchesCpu(2, 64, 16);
  ExpectGptMatchesCpu(4, 64, 80);
}

TEST_P(CudaKernelsFlashBf16Test, AttentionIsReproducible) { ExpectAttentionReproducible(); }

// Inputs that show every dropout decision in the outputs: q = 0 gives row t
// the probabilities 1/(t+1); v one-hot (v_j = e_j) makes out[t][j] nonzero
// exactly where (t, j) is kept, and dout one-hot (dout_t = e_t) does the same
// for dv[j][t]. The GPU's zeros must be the CPU's, element for element.
TEST_P(CudaKernelsFlashBf16Test, DropoutZerosAreTheCpus) {
  const int B = 2, T = 61, NH = 2, hs = 64, C = NH * hs;
  if (!Flash(B, T, C, NH)) GTEST_SKIP() << "no flash kernels at hs=64 here";
  Vec qkv(static_cast<size_t>(B) * T * 3 * C, 0.0f), dout(static_cast<size_t>(B) * T * C, 0.0f);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < NH; ++h) {
        qkv[(static_cast<size_t>(b) * T + t) * 3 * C + 2 * C + h * hs + t] = 1.0f;
        dout[(static_cast<size_t>(b) * T + t) * C + h * hs + t] = 1.0f;
      }
    }
  }
  auto qkv_twin = Upload(qkv);
  auto dout_twin = Upload(dout);
  for (bool per_sample : {false, true}) {
    const DropoutPlan plan = Plan(per_sample, 0.3f);
    auto out = Zeros(B * T * C);
    auto dqkv = Zeros(B * T * 3 * C);
    DeviceBuffer<float> cpu_probs(cpu_.get(), static_cast<size_t>(B) * NH * T * T);
    DeviceBuffer<float> gpu_saved(gpu_.get(), gpu_->AttentionSavedFloats(B, T, C, NH));
    cpu_->AttentionForward(out.cpu.data(), cpu_probs.data(), qkv_twin.cpu.data(), B, T, C, NH, 1,
                           &plan);
    gpu_->AttentionForward(out.gpu.data(), gpu_saved.data(), qkv_twin.gpu.data(), B, T, C, NH, 1,
                           &plan);
    cpu_->AttentionBackward(dqkv.cpu.data(), dout_twin.cpu.data(), qkv_twin.cpu.data(),
                            out.cpu.data(), cpu_probs.data(), B, T, C, NH, 1, &plan);
    gpu_->AttentionBackward(dqkv.gpu.data(), dout_twin.gpu.data(), qkv_twin.gpu.data(),
                            out.gpu.data(), gpu_saved.data(), B, T, C, NH, 1, &plan);
    for (const Twin<float>* twin : {&out, &dqkv}) {
      auto [c, g] = Download(*twin);
      size_t differ = 0, zeros = 0;
      for (size_t i = 0; i < c.size(); ++i) {
        differ += (c[i] == 0.0f) != (g[i] == 0.0f);
        zeros += c[i] == 0.0f;
      }
      EXPECT_EQ(differ, 0u) << (twin == &out ? "out" : "dqkv") << " per_sample=" << per_sample;
      EXPECT_GT(zeros, 0u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(FlashBf16, CudaKernelsFlashBf16Test,
                         ::testing::Values(MatmulPrecision::kBf16),
                         [](const ::testing::TestParamInfo<MatmulPrecision>&) {
                           return std::string("bf16_tensor_cores");
                         });

// Without a GPU the request fails with one clear line, never a crash.
TEST(CudaKernelsAvailabilityTest, MissingGpuIsAClearError) {
  absl::StatusOr<std::unique_ptr<Kernels>> gpu = MakeKernels(Device::kCuda, KernelOptions{});
  if (gpu.ok()) GTEST_SKIP() << "this machine has a GPU: " << (*gpu)->Describe();
  EXPECT_EQ(CudaDeviceCount(), 0);
  const std::string message(gpu.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_TRUE(message.find("no CUDA device") != std::string::npos ||
              message.find("no CUDA kernels") != std::string::npos)
      << message;
  // A machine without NVIDIA's driver is told so: CUDA's own words for it
  // ("CUDA driver version is insufficient for CUDA runtime version") sent
  // users to update a driver they did not have.
  void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (driver != nullptr) {
    dlclose(driver);
  } else if (message.find("no CUDA device") != std::string::npos) {
    EXPECT_EQ(message, "no CUDA device: no NVIDIA driver on this machine (libcuda.so.1 not found)");
  }
}

}  // namespace
}  // namespace dropk
