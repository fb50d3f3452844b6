// Matrix products: in fp32, libxsmm's kernels as fixed tiles where it
// generates AVX-512 code (xsmm_gemm.h), else OpenBLAS sgemm in tiles fixed
// by the shape (tiled_sgemm.h); oneDNN with
// bf16 inputs (precision bf16); bias sums in a fixed order either way.
#include <algorithm>
#include <cstring>

#include "cpu/cpu_kernels.h"
#include "cpu/tiled_sgemm.h"
#include "cpu/xsmm_gemm.h"

namespace dropk {
namespace {
constexpr int kColumnChunk = 64;  // columns per task in column reductions
}  // namespace

void CpuKernels::MatmulForward(float* out, const float* inp, const float* w, const float* bias,
                               int N, int C, int OC) {
  if (bf16_ != nullptr) return MatmulForwardBf16(out, inp, w, bias, N, C, OC);
  // out (N,OC) = inp (N,C) · w (OC,C)^T + bias
  if (UseXsmmGemm()) return XsmmGemmTransposedB(N, OC, C, inp, C, w, C, bias, out, OC);
  float beta = 0.0f;
  if (bias != nullptr) {
    // Start each output row from the bias and let sgemm add the product.
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n)
      std::memcpy(out + static_cast<size_t>(n) * OC, bias, OC * sizeof(float));
    beta = 1.0f;
  }
  // out (N,OC) = inp (N,C) · w (OC,C)^T
  FixedTileSgemm(false, true, N, OC, C, inp, C, w, C, beta, out, OC);
}

void CpuKernels::MatmulBackward(float* dinp, float* dw, float* dbias, const float* dout,
                                const float* inp, const float* w, int N, int C, int OC,
                                bool accumulate_dinp) {
  if (bf16_ != nullptr) {
    MatmulBackwardBf16(dinp, dw, dout, inp, w, N, C, OC, accumulate_dinp);
  } else if (UseXsmmGemm()) {
    // dinp (N,C) = dout (N,OC) · w (OC,C); dw (OC,C) += dout^T (OC,N) · inp (N,C)
    if (dinp != nullptr) XsmmGemm(N, C, OC, dout, OC, w, C, accumulate_dinp, dinp, C);
    XsmmGemmTransposedA(OC, C, N, dout, OC, inp, C, /*accumulate=*/true, dw, C);
  } else {
    // dinp (N,C) = dout (N,OC) · w (OC,C)
    if (dinp != nullptr) {
      if (UseTiledSgemm(N, C, OC)) {
        TiledSgemm(false, N, C, OC, dout, OC, w, C, accumulate_dinp ? 1.0f : 0.0f, dinp, C);
      } else {
        FixedTileSgemm(false, false, N, C, OC, dout, OC, w, C, accumulate_dinp ? 1.0f : 0.0f, dinp,
                       C);
      }
    }
    // dw (OC,C) += dout^T (OC,N) · inp (N,C)
    if (UseTiledSgemm(OC, C, N)) {
      TiledSgemm(true, OC, C, N, dout, OC, inp, C, 1.0f, dw, C);
    } else {
      FixedTileSgemm(true, false, OC, C, N, dout, OC, inp, C, 1.0f, dw, C);
    }
  }
  if (dbias != nullptr) AccumulateColumnSums(dbias, dout, N, OC);
}

void CpuKernels::AccumulateColumnSums(float* dbias, const float* dout, int N, int OC) {
  const int chunks = (OC + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel for schedule(static)
  for (int chunk = 0; chunk < chunks; ++chunk) {
    const int o0 = chunk * kColumnChunk, o1 = std::min(OC, o0 + kColumnChunk);
    float sums[kColumnChunk] = {};
    for (int n = 0; n < N; ++n) {
      const float* row = dout + static_cast<size_t>(n) * OC;
      for (int o = o0; o < o1; ++o) sums[o - o0] += row[o];
    }
    for (int o = o0; o < o1; ++o) dbias[o] += sums[o - o0];
  }
}

uint16_t* CpuKernels::Bf16Scratch(std::vector<uint16_t>& buffer, size_t count) {
  if (buffer.size() < count) buffer.resize(count);
  return buffer.data();
}

void CpuKernels::MatmulForwardBf16(float* out, const float* inp, const float* w, const float* bias,
                                   int N, int C, int OC) {
  uint16_t* inp16 = Bf16Scratch(bf16_lhs_, static_cast<size_t>(N) * C);
  ConvertToBf16(inp16, inp, static_cast<size_t>(N) * C);
  const uint16_t* w16 = bf16_weights_.Get(w, static_cast<size_t>(OC) * C);
  // out (N,OC) = inp (N,C) · w (OC,C)^T + bias
  bf16_->Multiply(out, inp16, LeftOperand::kMByK, w16, RightOperand::kNByK, bias, N, OC, C,
                  /*accumulate=*/false);
}

void CpuKernels::MatmulBackwardBf16(float* dinp, float* dw, const float* dout, const float* inp,
                                    const float* w, int N, int C, int OC, bool accumulate_dinp) {
  // dout is converted once: the dinp product reads it as it is, the dw
  // product through a transposed view. oneDNN multiplies a transposed bf16
  // operand ~5-10% slower than a plain one on these shapes (Zen 4,
  // brg:avx512_core_bf16), which costs less than a second, transposing
  // conversion of dout did.
  uint16_t* dout16 = Bf16Scratch(bf16_lhs_, static_cast<size_t>(N) * OC);
  ConvertToBf16(dout16, dout, static_cast<size_t>(N) * OC);
  if (dinp != nullptr) {
    // dinp (N,C) = dout (N,OC) · w (OC,C)
    const uint16_t* w16 = bf16_weights_.Get(w, static_cast<size_t>(OC) * C);
    bf16_->Multiply(dinp, dout16, LeftOperand::kMByK, w16, RightOperand::kKByN, nullptr, N, C, OC,
                    accumulate_dinp);
  }
  // dw (OC,C) += dout^T (OC,N) · inp (N,C)
  uint16_t* inp16 = Bf16Scratch(bf16_rhs_, static_cast<size_t>(N) * C);
  ConvertToBf16(inp16, inp, static_cast<size_t>(N) * C);
  bf16_->Multiply(dw, dout16, LeftOperand::kKByM, inp16, RightOperand::kKByN, nullptr, OC, C, N,
                  /*accumulate=*/true);
}

}  // namespace dropk
