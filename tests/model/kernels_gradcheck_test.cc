// Central finite differences against every CPU kernel's backward.
//
// Each op's output y is reduced to the scalar loss sum(y * r) for a fixed
// random r (accumulated in double), so the analytic gradient is backward with
// dout = r. float32 forward rounding bounds the achievable agreement; the
// tolerance |numeric - analytic| <= 2e-2 * |analytic| + 2e-3 is far below the
// error of any wrong formula (tested: sign flips or missing terms fail).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <ostream>
#include <random>
#include <vector>

#include "model/kernels.h"

namespace dropk {
namespace {

using Vec = std::vector<float>;

Vec Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Vec v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

double Dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Checks analytic[i] against d loss / d x[i] by central differences, where
// loss() reads x. Perturbs every element (inputs here are small).
void ExpectGradientMatches(const char* what, Vec& x, const Vec& analytic,
                           const std::function<double()>& loss, float eps = 1e-2f) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  for (size_t i = 0; i < x.size(); ++i) {
    const float saved = x[i];
    x[i] = saved + eps;
    const double up = loss();
    x[i] = saved - eps;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2.0 * eps);
    ASSERT_NEAR(numeric, analytic[i], 2e-2 * std::abs(analytic[i]) + 2e-3)
        << what << "[" << i << "]";
  }
}

class KernelGradTest : public ::testing::Test {
 protected:
  std::unique_ptr<Kernels> k_ = MakeKernels(Device::kCpu, 2).value();
};

TEST_F(KernelGradTest, LayerNorm) {
  const int N = 5, C = 12;
  Vec x = Random(N * C, 1), w = Random(C, 2, 0.5f), b = Random(C, 3, 0.5f), r = Random(N * C, 4);
  for (float& v : w) v += 1.0f;
  Vec out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    k_->LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return Dot(out, r);
  };
  loss();
  Vec dx(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  k_->LayerNormBackward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(),
                        rstd.data(), N, C);
  ExpectGradientMatches("dinp", x, dx, loss, 1e-3f);
  ExpectGradientMatches("dw", w, dw, loss);
  ExpectGradientMatches("db", b, db, loss);
}

TEST_F(KernelGradTest, Matmul) {
  const int N = 6, C = 7, OC = 5;
  Vec x = Random(N * C, 1), w = Random(OC * C, 2), bias = Random(OC, 3), r = Random(N * OC, 4);
  Vec out(N * OC);
  auto loss = [&] {
    k_->MatmulForward(out.data(), x.data(), w.data(), bias.data(), N, C, OC);
    return Dot(out, r);
  };
  Vec dx(N * C, 0.0f), dw(OC * C, 0.0f), dbias(OC, 0.0f);
  k_->MatmulBackward(dx.data(), dw.data(), dbias.data(), r.data(), x.data(), w.data(), N, C, OC,
                     false);
  ExpectGradientMatches("dinp", x, dx, loss);
  ExpectGradientMatches("dw", w, dw, loss);
  ExpectGradientMatches("dbias", bias, dbias, loss);
  // accumulate_dinp adds instead of overwriting.
  Vec dx2(N * C, 1.0f);
  k_->MatmulBackward(dx2.data(), dw.data(), dbias.data(), r.data(), x.data(), w.data(), N, C, OC,
                     true);
  for (int i = 0; i < N * C; ++i) EXPECT_FLOAT_EQ(dx2[i], dx[i] + 1.0f);
}

// An attention gradient check: the dropout rate of the probabilities and
// the sequence length. T = 70 gives the CPU kernel's query blocks of 32 rows
// two whole blocks and a ragged third, whose products read keys and values
// of the blocks before it and whose backward adds into their dk and dv.
struct AttentionCase {
  float p;
  int T;
};

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << "p " << c.p << ", T " << c.T; }

class AttentionGradTest : public KernelGradTest,
                          public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(AttentionGradTest, Attention) {
  const float p = GetParam().p;
  const int B = 2, T = GetParam().T, C = 8, NH = 2;
  Vec qkv = Random(B * T * 3 * C, 1), r = Random(B * T * C, 2);
  Vec out(B * T * C), probs(B * NH * T * T);
  DropoutPlan plan;
  plan.seed = 77;
  plan.step = 3;
  plan.stream_base = 1;
  plan.rates.attention_probs = p;
  auto loss = [&] {
    k_->AttentionForward(out.data(), probs.data(), qkv.data(), B, T, C, NH, 1, &plan);
    return Dot(out, r);
  };
  loss();
  Vec dqkv(B * T * 3 * C, 0.0f);
  k_->AttentionBackward(dqkv.data(), r.data(), qkv.data(), out.data(), probs.data(), B, T, C, NH, 1,
                        &plan);
  ExpectGradientMatches("dqkv", qkv, dqkv, loss, 1e-3f);
}

INSTANTIATE_TEST_SUITE_P(RatesAndLengths, AttentionGradTest,
                         ::testing::Values(AttentionCase{0.0f, 5}, AttentionCase{0.3f, 5},
                                           AttentionCase{0.2f, 70}));

TEST_F(KernelGradTest, AttentionProbsCarryTheDropoutMaskInTheirSigns) {
  // The CPU's backward reads the mask from probs: a dropped entry has its
  // sign bit set, and |probs| is the softmax that dropout did not change.
  // T = 37 spans two query blocks and rows that straddle Philox blocks.
  const int B = 2, T = 37, C = 8, NH = 2;
  const float p = 0.4f;
  Vec qkv = Random(B * T * 3 * C, 5), out(B * T * C), plain(B * NH * T * T), probs(B * NH * T * T);
  k_->AttentionForward(out.data(), plain.data(), qkv.data(), B, T, C, NH, 1, nullptr);
  DropoutPlan plan;
  plan.seed = 91;
  plan.step = 4;
  plan.stream_base = 2;
  plan.rates.attention_probs = p;
  k_->AttentionForward(out.data(), probs.data(), qkv.data(), B, T, C, NH, 1, &plan);
  const uint32_t site = DropoutSiteId(DropoutKind::kAttentionProbs, 1);
  int dropped = 0, causal = 0;
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        for (int j = 0; j <= t; ++j) {
          const size_t at = ((static_cast<size_t>(b) * NH + h) * T + t) * T + j;
          const DropoutAddress a =
              DropoutAddressOf(plan, b, static_cast<uint64_t>(NH) * T * T, (h * T + t) * T + j);
          const bool keep =
              DropoutKeep(plan.seed, a.stream, site, plan.step, a.element, DropoutKeepThreshold(p));
          ASSERT_EQ(std::signbit(probs[at]), !keep) << "b " << b << " h " << h << " t " << t;
          ASSERT_EQ(std::fabs(probs[at]), plain[at]);
          dropped += keep ? 0 : 1;
          ++causal;
        }
      }
    }
  }
  EXPECT_NEAR(static_cast<double>(dropped) / causal, p, 0.05);
}

TEST_F(KernelGradTest, AttentionIsCausal) {
  // Changing a later position's k or v must not change an earlier output.
  const int B = 1, T = 6, C = 8, NH = 2;
  Vec qkv = Random(B * T * 3 * C, 9), out(B * T * C), out2(B * T * C), probs(NH * T * T);
  k_->AttentionForward(out.data(), probs.data(), qkv.data(), B, T, C, NH, 0, nullptr);
  for (int c = C; c < 3 * C; ++c) qkv[(T - 1) * 3 * C + c] += 1.0f;
  k_->AttentionForward(out2.data(), probs.data(), qkv.data(), B, T, C, NH, 0, nullptr);
  for (int i = 0; i < (T - 1) * C; ++i) EXPECT_EQ(out[i], out2[i]) << i;
}

TEST_F(KernelGradTest, AttentionMatchesADoubleSoftmaxAtScoresThatOverflowWithoutTheMax) {
  // Scores of several hundred: exp overflows unless each row's true maximum
  // is subtracted first, so a row maximum that missed an entry (the kernel
  // takes it 16 lanes at a time; T = 53 leaves tails) gives inf or zeros.
  const int B = 2, T = 53, C = 8, NH = 2, hs = C / NH;
  Vec qkv = Random(B * T * 3 * C, 17, 12.0f), out(B * T * C), probs(B * NH * T * T);
  k_->AttentionForward(out.data(), probs.data(), qkv.data(), B, T, C, NH, 0, nullptr);
  double largest_score = 0.0;
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const float* q = qkv.data() + (static_cast<size_t>(b) * T + t) * 3 * C + h * hs;
        std::vector<double> score(t + 1);
        double maxv = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          const float* k = qkv.data() + (static_cast<size_t>(b) * T + j) * 3 * C + C + h * hs;
          double s = 0.0;
          for (int d = 0; d < hs; ++d) s += static_cast<double>(q[d]) * k[d];
          score[j] = s / std::sqrt(static_cast<double>(hs));
          maxv = std::max(maxv, score[j]);
          largest_score = std::max(largest_score, std::abs(score[j]));
        }
        double sum = 0.0;
        for (double& s : score) sum += (s = std::exp(s - maxv));
        for (int d = 0; d < hs; ++d) {
          double o = 0.0;
          for (int j = 0; j <= t; ++j) {
            o +=
                score[j] / sum * qkv[(static_cast<size_t>(b) * T + j) * 3 * C + 2 * C + h * hs + d];
          }
          ASSERT_NEAR(out[(static_cast<size_t>(b) * T + t) * C + h * hs + d], o,
                      1e-3 * (1.0 + std::abs(o)))
              << "b " << b << " h " << h << " t " << t << " d " << d;
        }
      }
    }
  }
  EXPECT_GT(largest_score, 200.0) << "the scores must be large enough to overflow exp";
}

TEST_F(KernelGradTest, Gelu) {
  const size_t n = 40;
  Vec x = Random(n, 1, 2.0f), r = Random(n, 2), out(n);
  auto loss = [&] {
    k_->GeluForward(out.data(), x.data(), n);
    return Dot(out, r);
  };
  Vec dx(n);
  k_->GeluBackward(dx.data(), x.data(), r.data(), n);
  ExpectGradientMatches("dinp", x, dx, loss, 1e-3f);
}

TEST_F(KernelGradTest, EmbeddingWithDropout) {
  const int V = 6, B = 2, T = 4, C = 8;
  Vec wte = Random(V * C, 1), wpe = Random(T * C, 2), r = Random(B * T * C, 3), out(B * T * C);
  const std::vector<int32_t> tokens = {1, 3, 3, 0, 5, 1, 2, 3};
  DropoutPlan plan;
  plan.seed = 4;
  plan.rates.embedding = 0.25f;
  auto loss = [&] {
    k_->EmbeddingForward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, &plan);
    return Dot(out, r);
  };
  Vec dwte(V * C, 0.0f), dwpe(T * C, 0.0f), dout = r;
  k_->EmbeddingBackward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C, &plan);
  ExpectGradientMatches("dwte", wte, dwte, loss);
  ExpectGradientMatches("dwpe", wpe, dwpe, loss);
}

TEST_F(KernelGradTest, ResidualDropout) {
  const int B = 2, T = 3, C = 8;
  Vec res = Random(B * T * C, 1), x = Random(B * T * C, 2), r = Random(B * T * C, 3);
  Vec out(B * T * C);
  DropoutPlan plan;
  plan.seed = 8;
  plan.per_sample = true;
  plan.rates.mlp_output = 0.5f;
  auto loss = [&] {
    k_->ResidualDropoutForward(out.data(), res.data(), x.data(), B, T, C, DropoutKind::kMlpOutput,
                               2, &plan);
    return Dot(out, r);
  };
  Vec dx(B * T * C);
  k_->DropoutBackward(dx.data(), r.data(), B, T, C, DropoutKind::kMlpOutput, 2, &plan);
  ExpectGradientMatches("dx", x, dx, loss);
  ExpectGradientMatches("dresidual", res, r, loss);
}

TEST_F(KernelGradTest, CrossEntropy) {
  const int N = 4, V = 9;
  Vec logits = Random(N * V, 1, 2.0f), losses(N), lse(N);
  const std::vector<int32_t> targets = {0, 8, 3, 3};
  auto loss = [&] {
    k_->CrossEntropyForward(losses.data(), lse.data(), logits.data(), targets.data(), N, V);
    double s = 0.0;
    for (float l : losses) s += l;
    return s * 0.5;
  };
  loss();
  Vec dlogits = logits;
  k_->CrossEntropyBackward(dlogits.data(), lse.data(), targets.data(), N, V, 0.5f);
  ExpectGradientMatches("dlogits", logits, dlogits, loss, 1e-3f);
}

TEST_F(KernelGradTest, AdamWMatchesTheFormula) {
  Vec p = {1.0f, -2.0f}, g = {0.5f, -0.25f}, m = {0.1f, 0.0f}, v = {0.01f, 0.0f};
  AdamWArgs a;
  a.lr = 0.1f;
  a.beta1 = 0.9f;
  a.beta2 = 0.99f;
  a.eps = 1e-8f;
  a.weight_decay = 0.1f;
  a.grad_scale = 0.5f;
  a.bias_correction1 = 1.0f - 0.9f * 0.9f;
  a.bias_correction2 = 1.0f - 0.99f * 0.99f;
  Vec expected(2);
  for (int i = 0; i < 2; ++i) {
    const double gi = g[i] * 0.5;
    const double mi = 0.9 * m[i] + 0.1 * gi, vi = 0.99 * v[i] + 0.01 * gi * gi;
    expected[i] = static_cast<float>(p[i] * (1 - 0.1 * 0.1) -
                                     0.1 * (mi / a.bias_correction1) /
                                         (std::sqrt(vi / a.bias_correction2) + 1e-8));
  }
  k_->AdamW(p.data(), g.data(), m.data(), v.data(), 2, a);
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(p[i], expected[i], 1e-6f);
}

// The optimizer's one-pass AdamWRanges against one AdamW call per range, at
// team sizes that split the ranges' concatenation at different places:
// the same bits, each range with its own decay, and the gaps between the
// ranges untouched.
TEST(AdamWRangesTest, EqualsOneAdamWCallPerRangeBitForBit) {
  const size_t n = 10007;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Vec p0(n), g(n), m0(n), v0(n);
  for (size_t i = 0; i < n; ++i) {
    p0[i] = normal(rng);
    g[i] = normal(rng);
    m0[i] = 0.1f * normal(rng);
    v0[i] = std::fabs(0.01f * normal(rng));
  }
  // Odd lengths, a one-element range and a gap [4100, 4200) left out.
  const std::vector<AdamWRange> ranges = {
      {0, 3001, 0.1f}, {3001, 3002, 0.0f}, {3002, 4100, 0.1f}, {4200, n, 0.0f}};
  AdamWArgs a;
  a.lr = 3e-3f;
  a.beta2 = 0.99f;
  a.grad_scale = 0.75f;
  a.bias_correction1 = 1.0f - 0.9f * 0.9f * 0.9f;
  a.bias_correction2 = 1.0f - 0.99f * 0.99f * 0.99f;
  a.weight_decay = 123.0f;  // ignored: each range brings its own

  Vec p_ref = p0, m_ref = m0, v_ref = v0;
  std::unique_ptr<Kernels> ref = MakeKernels(Device::kCpu, 1).value();
  for (const AdamWRange& r : ranges) {
    AdamWArgs ra = a;
    ra.weight_decay = r.weight_decay;
    ref->AdamW(p_ref.data() + r.begin, g.data() + r.begin, m_ref.data() + r.begin,
               v_ref.data() + r.begin, r.end - r.begin, ra);
  }
  ASSERT_NE(p_ref[10], p0[10]);
  for (int threads : {1, 2, 3, 7}) {
    SCOPED_TRACE(threads);
    std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, threads).value();
    Vec p = p0, m = m0, v = v0;
    k->AdamWRanges(p.data(), g.data(), m.data(), v.data(), ranges, a);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(p[i], p_ref[i]) << "parameter " << i;
      ASSERT_EQ(m[i], m_ref[i]) << "first moment " << i;
      ASSERT_EQ(v[i], v_ref[i]) << "second moment " << i;
    }
    for (size_t i = 4100; i < 4200; ++i) ASSERT_EQ(p[i], p0[i]) << "gap " << i;
  }
}

}  // namespace
}  // namespace dropk
