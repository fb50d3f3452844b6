// The CPU's fp32 matrix products against a double-precision reference, at
// shapes that take each of its paths: small backward products run as fixed
// tiles of single-threaded sgemm (model/cpu/tiled_sgemm.h; edges, several
// K chunks, accumulation), large ones as one threaded sgemm. And the tiles'
// promise: the same bits at any team size.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "model/kernels.h"

namespace dropk {
namespace {

using Vec = std::vector<float>;

Vec Random(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Vec v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

struct Shape {
  int N, C, OC;
};

struct Grads {
  Vec dinp, dw, dbias;
};

// MatmulBackward on fixed random inputs; dw and dbias start from 0.5 and
// dinp from 0.25 (accumulated when accumulate_dinp), so both accumulations
// are checked.
Grads Backward(Kernels& k, const Shape& s, bool accumulate_dinp) {
  const Vec dout = Random(static_cast<size_t>(s.N) * s.OC, 1);
  const Vec inp = Random(static_cast<size_t>(s.N) * s.C, 2);
  const Vec w = Random(static_cast<size_t>(s.OC) * s.C, 3);
  Grads g{Vec(static_cast<size_t>(s.N) * s.C, 0.25f), Vec(static_cast<size_t>(s.OC) * s.C, 0.5f),
          Vec(s.OC, 0.5f)};
  k.MatmulBackward(g.dinp.data(), g.dw.data(), g.dbias.data(), dout.data(), inp.data(), w.data(),
                   s.N, s.C, s.OC, accumulate_dinp);
  return g;
}

void ExpectMatchesReference(const Grads& g, const Shape& s, bool accumulate_dinp) {
  const Vec dout = Random(static_cast<size_t>(s.N) * s.OC, 1);
  const Vec inp = Random(static_cast<size_t>(s.N) * s.C, 2);
  const Vec w = Random(static_cast<size_t>(s.OC) * s.C, 3);
  // fp32 sums of up to ~800 terms of magnitude <= 1: well within 2e-3.
  for (int n = 0; n < s.N; ++n) {
    for (int c = 0; c < s.C; ++c) {
      double sum = accumulate_dinp ? 0.25 : 0.0;
      for (int o = 0; o < s.OC; ++o) {
        sum += static_cast<double>(dout[static_cast<size_t>(n) * s.OC + o]) *
               w[static_cast<size_t>(o) * s.C + c];
      }
      ASSERT_NEAR(g.dinp[static_cast<size_t>(n) * s.C + c], sum, 2e-3) << "dinp " << n << "," << c;
    }
  }
  for (int o = 0; o < s.OC; ++o) {
    for (int c = 0; c < s.C; ++c) {
      double sum = 0.5;
      for (int n = 0; n < s.N; ++n) {
        sum += static_cast<double>(dout[static_cast<size_t>(n) * s.OC + o]) *
               inp[static_cast<size_t>(n) * s.C + c];
      }
      ASSERT_NEAR(g.dw[static_cast<size_t>(o) * s.C + c], sum, 2e-3) << "dw " << o << "," << c;
    }
  }
}

TEST(CpuMatmulTest, BackwardMatchesADoubleReferenceOnEveryPath) {
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 2).value();
  // Tiled: ragged edges, N = 777 sums dw's K in three chunks, OC = 450 two
  // for dinp. Untiled: 1,024 x 384 x 384 (151M multiply-adds) takes one
  // threaded sgemm.
  for (const Shape s : {Shape{777, 70, 450}, Shape{33, 65, 129}, Shape{1024, 384, 384}}) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(testing::Message() << "N " << s.N << " C " << s.C << " OC " << s.OC
                                      << " accumulate_dinp " << accumulate);
      ExpectMatchesReference(Backward(*k, s, accumulate), s, accumulate);
    }
  }
}

TEST(CpuMatmulTest, BackwardGivesTheSameBitsAtEveryTeamSize) {
  const Shape s{777, 70, 450};
  std::unique_ptr<Kernels> one = MakeKernels(Device::kCpu, 1).value();
  const Grads reference = Backward(*one, s, true);
  for (int threads : {2, 3, 7}) {
    std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, threads).value();
    const Grads g = Backward(*k, s, true);
    EXPECT_TRUE(g.dinp == reference.dinp) << threads << " threads";
    EXPECT_TRUE(g.dw == reference.dw) << threads << " threads";
    EXPECT_TRUE(g.dbias == reference.dbias) << threads << " threads";
  }
}

}  // namespace
}  // namespace dropk
