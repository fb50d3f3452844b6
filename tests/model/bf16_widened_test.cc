// The CPU's bf16 products where oneDNN has none (an AVX2 CPU, or a build
// without oneDNN): the bf16 operands widened to fp32 and multiplied by
// OpenBLAS. Every layout of both operands, with a bias and accumulating,
// against a double-precision product of the same bf16 values; and the same
// bits at every team size.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "cpu/bf16_matmul.h"

namespace dropk {
namespace {

std::vector<uint16_t> RandomBf16(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<uint16_t> bits(n);
  for (uint16_t& b : bits) b = ToBf16Bits(dist(gen));
  return bits;
}

struct Case {
  LeftOperand a_layout;
  RightOperand b_layout;
  bool bias;
  bool accumulate;
};

// c as the widened product computes it, c starting at 0.5 everywhere.
std::vector<float> Widened(Bf16Matmul& matmul, const Case& c, const std::vector<uint16_t>& a,
                           const std::vector<uint16_t>& b, const std::vector<float>& bias, int M,
                           int N, int K) {
  std::vector<float> out(static_cast<size_t>(M) * N, 0.5f);
  matmul.Multiply(out.data(), a.data(), c.a_layout, b.data(), c.b_layout,
                  c.bias ? bias.data() : nullptr, M, N, K, c.accumulate);
  return out;
}

// got (M,N) against the double product of a and b's bf16 values, read in
// the case's layouts, starting from 0.5 (accumulate), the bias or 0.
void ExpectProduct(const std::vector<float>& got, const Case& c, const std::vector<uint16_t>& a,
                   const std::vector<uint16_t>& b, const std::vector<float>& bias, int M, int N,
                   int K) {
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      double want = c.accumulate ? 0.5 : (c.bias ? bias[n] : 0.0);
      double magnitude = std::abs(want);
      for (int k = 0; k < K; ++k) {
        const uint16_t ab = c.a_layout == LeftOperand::kMByK ? a[static_cast<size_t>(m) * K + k]
                                                             : a[static_cast<size_t>(k) * M + m];
        const uint16_t bb = c.b_layout == RightOperand::kKByN ? b[static_cast<size_t>(k) * N + n]
                                                              : b[static_cast<size_t>(n) * K + k];
        const double term = static_cast<double>(Bf16BitsToFloat(ab)) * Bf16BitsToFloat(bb);
        want += term;
        magnitude += std::abs(term);
      }
      // fp32 accumulation of K exact products: within about K ulps of the
      // sum of magnitudes.
      ASSERT_NEAR(got[static_cast<size_t>(m) * N + n], want, magnitude * K * 6e-8)
          << "a " << static_cast<int>(c.a_layout) << " b " << static_cast<int>(c.b_layout)
          << " bias " << c.bias << " accumulate " << c.accumulate << " at (" << m << ", " << n
          << ") of " << M << " x " << N << " x " << K;
    }
  }
}

TEST(WidenedBf16MatmulTest, EveryLayoutMatchesADoubleProductOfTheBf16Values) {
  const int M = 37, N = 53, K = 300;  // no multiple of a vector width or a tile
  const std::vector<uint16_t> a = RandomBf16(static_cast<size_t>(M) * K, 1);
  const std::vector<uint16_t> b = RandomBf16(static_cast<size_t>(K) * N, 2);
  std::vector<float> bias(N);
  for (int n = 0; n < N; ++n) bias[n] = 0.25f * static_cast<float>(n % 7) - 0.5f;
  std::unique_ptr<Bf16Matmul> matmul = MakeWidenedBf16Matmul("a test");
  EXPECT_EQ(matmul->Description(), "bf16 projections widened to fp32 for OpenBLAS (a test)");
  for (const LeftOperand a_layout : {LeftOperand::kMByK, LeftOperand::kKByM}) {
    for (const RightOperand b_layout : {RightOperand::kKByN, RightOperand::kNByK}) {
      for (const auto& [with_bias, accumulate] :
           {std::pair{false, false}, std::pair{true, false}, std::pair{false, true}}) {
        const Case c{a_layout, b_layout, with_bias, accumulate};
        ExpectProduct(Widened(*matmul, c, a, b, bias, M, N, K), c, a, b, bias, M, N, K);
      }
    }
  }
}

// A long K (the LM head's logit gradient against its weight) widens a in
// blocks of rows: 600 rows over K = 40,000 are three blocks, the last short.
TEST(WidenedBf16MatmulTest, ALongProductIsWidenedInBlocksOfRows) {
  const int M = 600, N = 3, K = 40000;
  ASSERT_EQ(WidenedRowsPerBlock(M, K), kWidenedMinRows);
  ASSERT_EQ(WidenedRowsPerBlock(M, 768), M);
  const std::vector<uint16_t> a = RandomBf16(static_cast<size_t>(M) * K, 5);
  const std::vector<uint16_t> b = RandomBf16(static_cast<size_t>(K) * N, 6);
  const std::vector<float> bias(N, 1.0f);
  std::unique_ptr<Bf16Matmul> matmul = MakeWidenedBf16Matmul("a test");
  for (const LeftOperand a_layout : {LeftOperand::kMByK, LeftOperand::kKByM}) {
    for (const RightOperand b_layout : {RightOperand::kKByN, RightOperand::kNByK}) {
      const Case c{a_layout, b_layout, /*bias=*/false, /*accumulate=*/true};
      ExpectProduct(Widened(*matmul, c, a, b, bias, M, N, K), c, a, b, bias, M, N, K);
    }
  }
}

TEST(WidenedBf16MatmulTest, TheSameBitsAtEveryTeamSize) {
  const int M = 300, N = 260, K = 200;
  const std::vector<uint16_t> a = RandomBf16(static_cast<size_t>(M) * K, 3);
  const std::vector<uint16_t> b = RandomBf16(static_cast<size_t>(K) * N, 4);
  const std::vector<float> bias(N, 0.125f);
  std::unique_ptr<Bf16Matmul> matmul = MakeWidenedBf16Matmul("a test");
  const Case c{LeftOperand::kKByM, RightOperand::kNByK, true, false};
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = Widened(*matmul, c, a, b, bias, M, N, K);
  for (const int threads : {2, 3, 7}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(Widened(*matmul, c, a, b, bias, M, N, K), one) << threads << " threads";
  }
  omp_set_num_threads(before);
}

}  // namespace
}  // namespace dropk
