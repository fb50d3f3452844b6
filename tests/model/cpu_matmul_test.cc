// The CPU's fp32 matrix products against a double-precision reference, at
// shapes that take each path of the library in use, and the CPU kernels'
// promise: the same bits at any team size. Where libxsmm generates AVX-512
// code, every product is a fixed tile of its kernels (model/cpu/
// xsmm_gemm.h: ragged edges, K in several chunks, the bias added per tile);
// elsewhere, and in the OpenBLAS run of these tests that tests/CMakeLists.txt
// registers (DROPK_CPU_GEMM=openblas), small backward products are fixed
// tiles of single-threaded sgemm on OpenBLAS's AVX-512 cores
// (model/cpu/tiled_sgemm.h) and the others larger fixed tiles of it
// (FixedTileSgemm); a third run takes OpenBLAS's Haswell kernels
// (OPENBLAS_CORETYPE=Haswell), whose threaded sgemm gave other bits at
// other thread counts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
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
  // fp32 sums of up to 1,100 terms of magnitude <= 1: well within 3e-3.
  for (int n = 0; n < s.N; ++n) {
    for (int c = 0; c < s.C; ++c) {
      double sum = accumulate_dinp ? 0.25 : 0.0;
      for (int o = 0; o < s.OC; ++o) {
        sum += static_cast<double>(dout[static_cast<size_t>(n) * s.OC + o]) *
               w[static_cast<size_t>(o) * s.C + c];
      }
      ASSERT_NEAR(g.dinp[static_cast<size_t>(n) * s.C + c], sum, 3e-3) << "dinp " << n << "," << c;
    }
  }
  for (int o = 0; o < s.OC; ++o) {
    for (int c = 0; c < s.C; ++c) {
      double sum = 0.5;
      for (int n = 0; n < s.N; ++n) {
        sum += static_cast<double>(dout[static_cast<size_t>(n) * s.OC + o]) *
               inp[static_cast<size_t>(n) * s.C + c];
      }
      ASSERT_NEAR(g.dw[static_cast<size_t>(o) * s.C + c], sum, 3e-3) << "dw " << o << "," << c;
    }
  }
}

// MatmulForward on fixed random inputs, with or without a bias.
Vec Forward(Kernels& k, const Shape& s, bool with_bias) {
  const Vec inp = Random(static_cast<size_t>(s.N) * s.C, 4);
  const Vec w = Random(static_cast<size_t>(s.OC) * s.C, 5);
  const Vec bias = Random(s.OC, 6);
  Vec out(static_cast<size_t>(s.N) * s.OC, 7.0f);  // stale values must not survive
  k.MatmulForward(out.data(), inp.data(), w.data(), with_bias ? bias.data() : nullptr, s.N, s.C,
                  s.OC);
  return out;
}

TEST(CpuMatmulTest, ForwardMatchesADoubleReferenceOnEveryPath) {
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 2).value();
  // Ragged tiles in both directions (777 = 12 x 64 + 9, 450 = 7 x 64 + 2);
  // C = 1,100 sums K in three chunks; a product smaller than one tile;
  // 1,024 x 384 x 384, which OpenBLAS takes in its large fixed tiles; and
  // 8,200 outputs wide, which even with libxsmm goes to OpenBLAS.
  for (const Shape s : {Shape{777, 70, 450}, Shape{130, 1100, 70}, Shape{33, 65, 129},
                        Shape{5, 3, 2}, Shape{1024, 384, 384}, Shape{3, 5, 8200}}) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(testing::Message()
                   << "N " << s.N << " C " << s.C << " OC " << s.OC << " bias " << with_bias);
      const Vec out = Forward(*k, s, with_bias);
      const Vec inp = Random(static_cast<size_t>(s.N) * s.C, 4);
      const Vec w = Random(static_cast<size_t>(s.OC) * s.C, 5);
      const Vec bias = Random(s.OC, 6);
      for (int n = 0; n < s.N; ++n) {
        for (int o = 0; o < s.OC; ++o) {
          double sum = with_bias ? bias[o] : 0.0;
          for (int c = 0; c < s.C; ++c) {
            sum += static_cast<double>(inp[static_cast<size_t>(n) * s.C + c]) *
                   w[static_cast<size_t>(o) * s.C + c];
          }
          // fp32 sums of up to 1,100 terms of magnitude <= 1.
          ASSERT_NEAR(out[static_cast<size_t>(n) * s.OC + o], sum, 3e-3) << n << "," << o;
        }
      }
    }
  }
}

// The team-size tests take, besides the tiled shapes, the shapes that go to
// OpenBLAS even where libxsmm is in use (8,200 outputs wide; a weight
// gradient 1,600 wide), each several of OpenBLAS's fixed tiles.
// Each reference is computed right after making its one-thread kernels:
// making kernels sets the process's team size, so a reference computed
// after the 7-thread kernels were made would run on 7 threads.
TEST(CpuMatmulTest, ForwardGivesTheSameBitsAtEveryTeamSize) {
  for (const Shape s : {Shape{777, 70, 450}, Shape{130, 1100, 70}, Shape{300, 40, 8200}}) {
    const Vec reference = Forward(*MakeKernels(Device::kCpu, 1).value(), s, true);
    for (int threads : {2, 3, 7}) {
      std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, threads).value();
      EXPECT_TRUE(Forward(*k, s, true) == reference) << threads << " threads, C " << s.C;
    }
  }
}

TEST(CpuMatmulTest, BackwardMatchesADoubleReferenceOnEveryPath) {
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 2).value();
  // Ragged edges; N = 777 sums dw's K in several chunks, OC = 1,100 dinp's;
  // a product smaller than one tile. With OpenBLAS, 1,024 x 384 x 384
  // (151M multiply-adds) takes FixedTileSgemm's tiles and the others
  // TiledSgemm's small ones (on OpenBLAS's AVX-512 cores).
  // With libxsmm, OC = 8,200 (dinp's K, dw's M) and a dw 1,600 wide go to
  // OpenBLAS.
  for (const Shape s :
       {Shape{777, 70, 450}, Shape{130, 70, 1100}, Shape{33, 65, 129}, Shape{5, 3, 2},
        Shape{1024, 384, 384}, Shape{3, 5, 8200}, Shape{20, 1600, 3}}) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(testing::Message() << "N " << s.N << " C " << s.C << " OC " << s.OC
                                      << " accumulate_dinp " << accumulate);
      ExpectMatchesReference(Backward(*k, s, accumulate), s, accumulate);
    }
  }
}

TEST(CpuMatmulTest, BackwardGivesTheSameBitsAtEveryTeamSize) {
  for (const Shape s :
       {Shape{777, 70, 450}, Shape{130, 70, 1100}, Shape{300, 1600, 40}, Shape{300, 40, 8200}}) {
    const Grads reference = Backward(*MakeKernels(Device::kCpu, 1).value(), s, true);
    for (int threads : {2, 3, 7}) {
      std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, threads).value();
      const Grads g = Backward(*k, s, true);
      EXPECT_TRUE(g.dinp == reference.dinp) << threads << " threads, OC " << s.OC;
      EXPECT_TRUE(g.dw == reference.dw) << threads << " threads, OC " << s.OC;
      EXPECT_TRUE(g.dbias == reference.dbias) << threads << " threads, OC " << s.OC;
    }
  }
}

// Describe() names the library that multiplies the fp32 projections;
// DROPK_CPU_GEMM=openblas (the variable the OpenBLAS run of these tests
// sets) is obeyed, and a value it does not take is named as ignored (the
// run tests/CMakeLists.txt registers with DROPK_CPU_GEMM=fastest).
TEST(CpuMatmulTest, DescribeNamesTheProjectionLibrary) {
  const std::string described = MakeKernels(Device::kCpu, 1).value()->Describe();
  const char* env = std::getenv("DROPK_CPU_GEMM");
  const std::string asked = env == nullptr ? "" : env;
  if (asked == "openblas") {
    EXPECT_THAT(described, testing::HasSubstr("fp32 projections and attention through OpenBLAS ("));
    EXPECT_THAT(described, testing::HasSubstr("DROPK_CPU_GEMM=openblas)"));
    return;
  }
  EXPECT_THAT(described,
              testing::ContainsRegex("fp32 projections and attention through (libxsmm|OpenBLAS)"));
  // On an AVX-512 CPU, libxsmm is chosen unless the build has none or
  // libxsmm itself finds no AVX-512, and the description says which.
  if (__builtin_cpu_supports("avx512f")) {
    EXPECT_THAT(described, testing::ContainsRegex(
                               "fp32 projections and attention through libxsmm|built without "
                               "libxsmm|here, not AVX-512"));
  }
  if (!asked.empty() && asked != "libxsmm") {
    EXPECT_THAT(described, testing::HasSubstr("(DROPK_CPU_GEMM=" + asked +
                                              " ignored: it takes openblas or libxsmm)"));
  }
}

}  // namespace
}  // namespace dropk
