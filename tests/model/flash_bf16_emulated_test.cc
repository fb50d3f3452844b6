// The bf16 tensor-core flash attention kernels (model/cuda/flash_bf16_body.h)
// run on the host warp emulator (tests/support/warp_emulator.h), against a
// double-precision causal attention over the same bf16-rounded inputs and
// the CPU's dropout decisions. This checks the kernels' fragment, lane and
// Philox arithmetic on machines without a GPU; tests/model/
// cuda_kernels_test.cc checks the same kernels on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/flash_bf16_body.h"
#include "model/dropout.h"
#include "support/warp_emulator.h"

namespace dropk {
namespace {

namespace fb = cuda::flash_bf16;

struct Shape {
  int B, T, NH, HS;
  int C() const { return NH * HS; }
};

float RoundToBf16(float f) {
  const uint32_t word = cuda::PackBf16Pair(f, 0.0f);
  const uint32_t bits = word << 16;
  float r;
  std::memcpy(&r, &bits, sizeof(r));
  return r;
}

cuda::SiteDropout AttentionSite(float p, bool per_sample) {
  DropoutPlan plan;
  plan.seed = 1234567;
  plan.step = 17;
  plan.stream_base = per_sample ? 5 : 3;
  plan.per_sample = per_sample;
  plan.rates.attention_probs = p;
  return cuda::MakeSiteDropout(&plan, DropoutKind::kAttentionProbs, 2);
}

// What the kernels produce: forward's out and lse, backward's dqkv.
struct KernelResults {
  std::vector<float> out, lse, dqkv;
};

template <int HS>
KernelResults RunKernelsAt(const Shape& s, const cuda::SiteDropout& d,
                           const std::vector<float>& qkv, const std::vector<float>& dout) {
  KernelResults r;
  r.out.assign(static_cast<size_t>(s.B) * s.T * s.C(), 0.0f);
  r.lse.assign(static_cast<size_t>(s.B) * s.NH * s.T, 0.0f);
  r.dqkv.assign(qkv.size(), 0.0f);
  fb::Params p;
  p.qkv = qkv.data();
  p.out = r.out.data();
  p.lse = r.lse.data();
  p.T = s.T;
  p.C = s.C();
  p.NH = s.NH;
  p.scale = 1.0f / std::sqrt(static_cast<float>(HS));
  p.dropout = d;
  const int tiles = (s.T + fb::kTile - 1) / fb::kTile;
  testing::RunEmulatedGrid(
      s.B * s.NH, tiles, fb::kBlockThreads, fb::ForwardSharedBytes<HS>(),
      [&](const cuda::ThreadCoord& at, uint32_t* shared) { fb::Forward<HS>(p, at, shared); });
  // delta, as the delta kernel computes it: each row's dout . out, per head.
  std::vector<float> delta(r.lse.size());
  for (int b = 0; b < s.B; ++b) {
    for (int h = 0; h < s.NH; ++h) {
      for (int t = 0; t < s.T; ++t) {
        float sum = 0.0f;
        const size_t at = (static_cast<size_t>(b) * s.T + t) * s.C() + h * HS;
        for (int c = 0; c < HS; ++c) sum += dout[at + c] * r.out[at + c];
        delta[(static_cast<size_t>(b) * s.NH + h) * s.T + t] = sum;
      }
    }
  }
  p.dout = dout.data();
  p.delta = delta.data();
  p.dqkv = r.dqkv.data();
  testing::RunEmulatedGrid(
      s.B * s.NH, tiles, fb::kBlockThreads, fb::BackwardKvSharedBytes<HS>(),
      [&](const cuda::ThreadCoord& at, uint32_t* shared) { fb::BackwardKv<HS>(p, at, shared); });
  testing::RunEmulatedGrid(
      s.B * s.NH, tiles, fb::kBlockThreads, fb::BackwardQSharedBytes<HS>(),
      [&](const cuda::ThreadCoord& at, uint32_t* shared) { fb::BackwardQ<HS>(p, at, shared); });
  return r;
}

KernelResults RunKernels(const Shape& s, const cuda::SiteDropout& d, const std::vector<float>& qkv,
                         const std::vector<float>& dout) {
  switch (s.HS) {
    case 16: return RunKernelsAt<16>(s, d, qkv, dout);
    case 32: return RunKernelsAt<32>(s, d, qkv, dout);
    case 64: return RunKernelsAt<64>(s, d, qkv, dout);
  }
  ADD_FAILURE() << "no kernel for head size " << s.HS;
  return {};
}

// Causal attention with dropout in double over qkv as given: out, and dqkv
// for dout. The keep decisions are the CPU's (DropoutKeep at each
// element's address).
struct Reference {
  std::vector<double> out, dqkv;
};

Reference ReferenceAttention(const Shape& s, const cuda::SiteDropout& d,
                             const std::vector<float>& qkv, const std::vector<float>& dout) {
  const int C = s.C(), T = s.T, HS = s.HS;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  Reference r;
  r.out.assign(static_cast<size_t>(s.B) * T * C, 0.0);
  r.dqkv.assign(qkv.size(), 0.0);
  auto q = [&](int b, int t, int h, int c) {
    return qkv[(static_cast<size_t>(b) * T + t) * 3 * C + h * HS + c];
  };
  auto k = [&](int b, int t, int h, int c) {
    return qkv[(static_cast<size_t>(b) * T + t) * 3 * C + C + h * HS + c];
  };
  auto v = [&](int b, int t, int h, int c) {
    return qkv[(static_cast<size_t>(b) * T + t) * 3 * C + 2 * C + h * HS + c];
  };
  auto dq_at = [&](int b, int t, int h, int c) -> double& {
    return r.dqkv[(static_cast<size_t>(b) * T + t) * 3 * C + h * HS + c];
  };
  auto dk_at = [&](int b, int t, int h, int c) -> double& {
    return r.dqkv[(static_cast<size_t>(b) * T + t) * 3 * C + C + h * HS + c];
  };
  auto dv_at = [&](int b, int t, int h, int c) -> double& {
    return r.dqkv[(static_cast<size_t>(b) * T + t) * 3 * C + 2 * C + h * HS + c];
  };
  std::vector<double> p(T), w(T), keep(T);
  for (int b = 0; b < s.B; ++b) {
    for (int h = 0; h < s.NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const DropoutAddress row = cuda::AttentionRowAddress(d, b, h, t, s.NH, T);
        double m = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          double dot = 0.0;
          for (int c = 0; c < HS; ++c) dot += static_cast<double>(q(b, t, h, c)) * k(b, j, h, c);
          p[j] = dot * scale;
          m = std::max(m, p[j]);
        }
        double l = 0.0;
        for (int j = 0; j <= t; ++j) l += (p[j] = std::exp(p[j] - m));
        for (int j = 0; j <= t; ++j) {
          p[j] /= l;
          const bool kept = !(d.p > 0.0f) || DropoutKeep(d.plan.seed, row.stream, d.site,
                                                         d.plan.step, row.element + j, d.threshold);
          keep[j] = kept ? d.keep_scale : 0.0;
          w[j] = p[j] * keep[j];
        }
        const size_t at = (static_cast<size_t>(b) * T + t) * C + h * HS;
        double delta = 0.0;
        for (int c = 0; c < HS; ++c) {
          double o = 0.0;
          for (int j = 0; j <= t; ++j) o += w[j] * v(b, j, h, c);
          r.out[at + c] = o;
          delta += o * dout[at + c];
        }
        for (int j = 0; j <= t; ++j) {
          double dw = 0.0;
          for (int c = 0; c < HS; ++c) {
            dw += static_cast<double>(dout[at + c]) * v(b, j, h, c);
            dv_at(b, j, h, c) += w[j] * dout[at + c];
          }
          const double ds = p[j] * (dw * keep[j] - delta);
          for (int c = 0; c < HS; ++c) {
            dq_at(b, t, h, c) += scale * ds * k(b, j, h, c);
            dk_at(b, j, h, c) += scale * ds * q(b, t, h, c);
          }
        }
      }
    }
  }
  return r;
}

double MaxAbs(const std::vector<double>& x) {
  double m = 0.0;
  for (double v : x) m = std::max(m, std::fabs(v));
  return m;
}

// The first element where |got - want| > tol, or "" when none.
std::string FirstMismatch(const char* what, const std::vector<float>& got,
                          const std::vector<double>& want, double tol) {
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol)) {
      return std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(got[i]) +
             ", want " + std::to_string(want[i]) + " (tolerance " + std::to_string(tol) + ")";
    }
  }
  return "";
}

std::vector<float> RandomBf16(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = RoundToBf16(normal(gen));
  return x;
}

struct Case {
  Shape shape;
  float p;
  bool per_sample;
};

class FlashBf16EmulatedTest : public ::testing::TestWithParam<Case> {};

// Random inputs: out and dqkv within 2% of the largest reference value (the
// probabilities and score gradients go through bf16), lse to 1e-3.
TEST_P(FlashBf16EmulatedTest, MatchesDoublePrecisionAttention) {
  const Case& k = GetParam();
  const Shape& s = k.shape;
  const cuda::SiteDropout d = AttentionSite(k.p, k.per_sample);
  const std::vector<float> qkv = RandomBf16(static_cast<size_t>(s.B) * s.T * 3 * s.C(), 11);
  const std::vector<float> dout = RandomBf16(static_cast<size_t>(s.B) * s.T * s.C(), 12);
  const KernelResults got = RunKernels(s, d, qkv, dout);
  const Reference want = ReferenceAttention(s, d, qkv, dout);
  EXPECT_EQ(FirstMismatch("out", got.out, want.out, 0.02 * MaxAbs(want.out)), "");
  EXPECT_EQ(FirstMismatch("dqkv", got.dqkv, want.dqkv, 0.02 * MaxAbs(want.dqkv)), "");
  for (float v : got.lse) ASSERT_TRUE(std::isfinite(v));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FlashBf16EmulatedTest,
    ::testing::Values(Case{{1, 130, 2, 64}, 0.0f, false}, Case{{1, 130, 2, 64}, 0.1f, true},
                      Case{{2, 70, 1, 32}, 0.1f, false}, Case{{1, 67, 3, 16}, 0.2f, true},
                      // One position, and exactly one tile.
                      Case{{2, 1, 2, 16}, 0.1f, true}, Case{{1, 64, 2, 32}, 0.1f, false}),
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& k = info.param;
      return "B" + std::to_string(k.shape.B) + "T" + std::to_string(k.shape.T) + "NH" +
             std::to_string(k.shape.NH) + "HS" + std::to_string(k.shape.HS) + "Drop" +
             std::to_string(static_cast<int>(k.p * 100)) + (k.per_sample ? "PerSample" : "PerRank");
    });

// Inputs that expose every keep decision: q = 0 makes row t's probabilities
// 1/(t+1); v one-hot (v_j = e_j) makes out[t][j] = keep(t, j)/(1-p)/(t+1);
// dout one-hot (dout_t = e_t) makes dv[j][t] the same. The kernels' and
// the CPU's decisions must agree at every element of both.
TEST(FlashBf16EmulatedMaskTest, OutAndDvShowTheCpuKeepDecisions) {
  const Shape s{2, 61, 2, 64};  // T odd: rows start at every offset in a Philox block
  for (bool per_sample : {false, true}) {
    const cuda::SiteDropout d = AttentionSite(0.3f, per_sample);
    std::vector<float> qkv(static_cast<size_t>(s.B) * s.T * 3 * s.C(), 0.0f);
    std::vector<float> dout(static_cast<size_t>(s.B) * s.T * s.C(), 0.0f);
    for (int b = 0; b < s.B; ++b) {
      for (int t = 0; t < s.T; ++t) {
        for (int h = 0; h < s.NH; ++h) {
          qkv[(static_cast<size_t>(b) * s.T + t) * 3 * s.C() + 2 * s.C() + h * s.HS + t] = 1.0f;
          dout[(static_cast<size_t>(b) * s.T + t) * s.C() + h * s.HS + t] = 1.0f;
        }
      }
    }
    const KernelResults got = RunKernels(s, d, qkv, dout);
    int kept = 0, dropped = 0;
    for (int b = 0; b < s.B; ++b) {
      for (int h = 0; h < s.NH; ++h) {
        for (int t = 0; t < s.T; ++t) {
          const DropoutAddress row = cuda::AttentionRowAddress(d, b, h, t, s.NH, s.T);
          for (int j = 0; j <= t; ++j) {
            const bool keep = DropoutKeep(d.plan.seed, row.stream, d.site, d.plan.step,
                                          row.element + j, d.threshold);
            (keep ? kept : dropped) += 1;
            const float out = got.out[(static_cast<size_t>(b) * s.T + t) * s.C() + h * s.HS + j];
            const float dv =
                got.dqkv[(static_cast<size_t>(b) * s.T + j) * 3 * s.C() + 2 * s.C() + h * s.HS + t];
            ASSERT_EQ(out != 0.0f, keep) << "out b " << b << " h " << h << " t " << t << " j " << j;
            ASSERT_EQ(dv != 0.0f, keep) << "dv b " << b << " h " << h << " t " << t << " j " << j;
          }
        }
      }
    }
    EXPECT_GT(dropped, kept / 4);  // p = 0.3: both kinds plentiful
  }
}

// dq's decisions come from the row-wise draw of the dq kernel: with q = 0,
// k and v one-hot and dout all ones, ds[t][j] = p(keep/(1-p) - delta[t]),
// which differs by p/(1-p) between a kept and a dropped j, and dq[t][j] =
// scale * ds[t][j]. Every element must be on the CPU's side of that gap.
TEST(FlashBf16EmulatedMaskTest, DqShowsTheCpuKeepDecisions) {
  const Shape s{1, 61, 2, 64};
  const cuda::SiteDropout d = AttentionSite(0.3f, true);
  std::vector<float> qkv(static_cast<size_t>(s.B) * s.T * 3 * s.C(), 0.0f);
  const std::vector<float> dout(static_cast<size_t>(s.B) * s.T * s.C(), 1.0f);
  for (int t = 0; t < s.T; ++t) {
    for (int h = 0; h < s.NH; ++h) {
      qkv[static_cast<size_t>(t) * 3 * s.C() + s.C() + h * s.HS + t] = 1.0f;
      qkv[static_cast<size_t>(t) * 3 * s.C() + 2 * s.C() + h * s.HS + t] = 1.0f;
    }
  }
  const KernelResults got = RunKernels(s, d, qkv, dout);
  const Reference want = ReferenceAttention(s, d, qkv, dout);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.HS));
  for (int h = 0; h < s.NH; ++h) {
    for (int t = 0; t < s.T; ++t) {
      const double gap = scale * d.keep_scale / (t + 1);
      for (int j = 0; j <= t; ++j) {
        const size_t at = static_cast<size_t>(t) * 3 * s.C() + h * s.HS + j;
        ASSERT_NEAR(got.dqkv[at], want.dqkv[at], gap / 4)
            << "dq h " << h << " t " << t << " j " << j;
      }
    }
  }
}

}  // namespace
}  // namespace dropk
