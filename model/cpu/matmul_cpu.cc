// Matrix products through OpenBLAS sgemm; bias sums in a fixed order.
#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "cpu/cpu_kernels.h"

namespace dropk {
namespace {
constexpr int kColumnChunk = 64;  // columns per task in column reductions
}  // namespace

void CpuKernels::MatmulForward(float* out, const float* inp, const float* w, const float* bias,
                               int N, int C, int OC) {
  float beta = 0.0f;
  if (bias != nullptr) {
    // Start each output row from the bias and let sgemm add the product.
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) std::memcpy(out + static_cast<size_t>(n) * OC, bias, OC * sizeof(float));
    beta = 1.0f;
  }
  // out (N,OC) = inp (N,C) · w (OC,C)^T
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, w, C, beta, out,
              OC);
}

void CpuKernels::MatmulBackward(float* dinp, float* dw, float* dbias, const float* dout,
                                const float* inp, const float* w, int N, int C, int OC,
                                bool accumulate_dinp) {
  // dinp (N,C) = dout (N,OC) · w (OC,C)
  if (dinp != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C,
                accumulate_dinp ? 1.0f : 0.0f, dinp, C);
  }
  // dw (OC,C) += dout^T (OC,N) · inp (N,C)
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw,
              C);
  if (dbias != nullptr) {
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
}

}  // namespace dropk
