// Row-wise and elementwise CPU kernels: embedding, LayerNorm, GELU, dropout,
// cross-entropy.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/cpu_kernels.h"
#include "cpu/row_ops.h"
#include "model/generate.h"

namespace dropk {
namespace {

constexpr int kDropoutChunk = 256;  // scales computed per stack buffer
constexpr int kColumnChunk = 64;    // columns per task in column reductions

bool DropoutActive(const DropoutPlan* plan, DropoutKind kind) {
  return plan != nullptr && plan->rates.Of(kind) > 0.0f;
}

}  // namespace

void ApplyDropoutScales(float* x, const DropoutPlan& plan, uint32_t stream, uint32_t site,
                        uint64_t e0, int64_t n, float p) {
  float scale[kDropoutChunk];
  for (int64_t i = 0; i < n; i += kDropoutChunk) {
    const int64_t len = std::min<int64_t>(kDropoutChunk, n - i);
    DropoutScales(plan.seed, stream, site, plan.step, e0 + i, len, p, scale);
    for (int64_t j = 0; j < len; ++j) x[i + j] *= scale[j];
  }
}

void ResidualDropoutRun(float* out, const float* residual, const float* x, const DropoutPlan& plan,
                        uint32_t stream, uint32_t site, uint64_t e0, int64_t n, float p) {
  float scale[kDropoutChunk];
  for (int64_t i = 0; i < n; i += kDropoutChunk) {
    const int64_t len = std::min<int64_t>(kDropoutChunk, n - i);
    DropoutScales(plan.seed, stream, site, plan.step, e0 + i, len, p, scale);
    if (residual != nullptr) {
      for (int64_t j = 0; j < len; ++j) out[i + j] = residual[i + j] + x[i + j] * scale[j];
    } else {
      for (int64_t j = 0; j < len; ++j) out[i + j] = x[i + j] * scale[j];
    }
  }
}

void CpuKernels::EmbeddingForward(float* out, const int32_t* tokens, const float* wte,
                                  const float* wpe, int B, int T, int C,
                                  const DropoutPlan* dropout) {
  const bool drop = DropoutActive(dropout, DropoutKind::kEmbedding);
  const uint32_t site = DropoutSiteId(DropoutKind::kEmbedding, 0);
  const uint64_t per_sample = static_cast<uint64_t>(T) * C;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      float* o = out + (static_cast<size_t>(b) * T + t) * C;
      const float* te = wte + static_cast<size_t>(tokens[b * T + t]) * C;
      const float* pe = wpe + static_cast<size_t>(t) * C;
      for (int c = 0; c < C; ++c) o[c] = te[c] + pe[c];
      if (drop) {
        const DropoutAddress a =
            DropoutAddressOf(*dropout, b, per_sample, static_cast<uint64_t>(t) * C);
        ApplyDropoutScales(o, *dropout, a.stream, site, a.element, C, dropout->rates.embedding);
      }
    }
  }
}

void CpuKernels::EmbeddingBackward(float* dwte, float* dwpe, float* dout, const int32_t* tokens,
                                   int B, int T, int C, const DropoutPlan* dropout) {
  if (DropoutActive(dropout, DropoutKind::kEmbedding)) {
    DropoutBackward(dout, dout, B, T, C, DropoutKind::kEmbedding, 0, dropout);
  }
  // Position embedding: each row t sums over the batch, rows in parallel.
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    float* dp = dwpe + static_cast<size_t>(t) * C;
    for (int b = 0; b < B; ++b) {
      const float* d = dout + (static_cast<size_t>(b) * T + t) * C;
      for (int c = 0; c < C; ++c) dp[c] += d[c];
    }
  }
  // Token embedding: tokens repeat, so split by channel, not by token; each
  // task walks all positions in order (race-free and deterministic).
  const int chunks = (C + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel for schedule(static)
  for (int chunk = 0; chunk < chunks; ++chunk) {
    const int c0 = chunk * kColumnChunk, c1 = std::min(C, c0 + kColumnChunk);
    for (int bt = 0; bt < B * T; ++bt) {
      float* dt = dwte + static_cast<size_t>(tokens[bt]) * C;
      const float* d = dout + static_cast<size_t>(bt) * C;
      for (int c = c0; c < c1; ++c) dt[c] += d[c];
    }
  }
}

void CpuKernels::LayerNormForward(float* out, float* mean, float* rstd, const float* inp,
                                  const float* w, const float* b, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const size_t row = static_cast<size_t>(n) * C;
    LayerNormRow(out + row, inp + row, w, b, C, &mean[n], &rstd[n]);
  }
}

void CpuKernels::LayerNormBackward(float* dinp, float* dw, float* db, const float* dout,
                                   const float* inp, const float* w, const float* mean,
                                   const float* rstd, int N, int C) {
  // One parallel region for both parts, which are independent: a team
  // wake-up per region cost more than the work at the Shakespeare recipe's
  // shapes (768 x 128).
  const int chunks = (C + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel
  {
    // Input gradient, row by row.
#pragma omp for schedule(static) nowait
    for (int n = 0; n < N; ++n) {
      const float* x = inp + static_cast<size_t>(n) * C;
      const float* dy = dout + static_cast<size_t>(n) * C;
      const float m = mean[n], s = rstd[n];
      const float dnorm_mean = FixedOrderSum(C, [&](int c) { return w[c] * dy[c]; }) / C;
      const float dnorm_norm_mean =
          FixedOrderSum(C, [&](int c) { return w[c] * dy[c] * ((x[c] - m) * s); }) / C;
      float* dx = dinp + static_cast<size_t>(n) * C;
      for (int c = 0; c < C; ++c) {
        const float norm = (x[c] - m) * s;
        const float dnorm = w[c] * dy[c];
        dx[c] += LayerNormInputGrad(dnorm, norm, dnorm_mean, dnorm_norm_mean, s);
      }
    }
    // Weight and bias gradients: columns in parallel, rows in order.
#pragma omp for schedule(static)
    for (int chunk = 0; chunk < chunks; ++chunk) {
      const int c0 = chunk * kColumnChunk, c1 = std::min(C, c0 + kColumnChunk);
      float dws[kColumnChunk] = {}, dbs[kColumnChunk] = {};
      for (int n = 0; n < N; ++n) {
        const float* x = inp + static_cast<size_t>(n) * C;
        const float* dy = dout + static_cast<size_t>(n) * C;
        const float m = mean[n], s = rstd[n];
        for (int c = c0; c < c1; ++c) {
          dws[c - c0] += (x[c] - m) * s * dy[c];
          dbs[c - c0] += dy[c];
        }
      }
      for (int c = c0; c < c1; ++c) {
        dw[c] += dws[c - c0];
        db[c] += dbs[c - c0];
      }
    }
  }  // omp parallel
}

void CpuKernels::GeluForward(float* out, const float* inp, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    out[i] = Gelu(inp[i]);
  }
}

void CpuKernels::GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    dinp[i] = GeluGrad(inp[i]) * dout[i];
  }
}

void CpuKernels::ResidualDropoutForward(float* out, const float* residual, const float* x, int B,
                                        int T, int C, DropoutKind kind, int layer,
                                        const DropoutPlan* dropout) {
  const size_t per_sample = static_cast<size_t>(T) * C;
  if (!DropoutActive(dropout, kind)) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < B * per_sample; ++i) out[i] = residual[i] + x[i];
    return;
  }
  const uint32_t site = DropoutSiteId(kind, layer);
  const float p = dropout->rates.Of(kind);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const size_t row = (static_cast<size_t>(b) * T + t) * C;
      const DropoutAddress a =
          DropoutAddressOf(*dropout, b, per_sample, static_cast<uint64_t>(t) * C);
      ResidualDropoutRun(out + row, residual + row, x + row, *dropout, a.stream, site, a.element, C,
                         p);
    }
  }
}

void CpuKernels::ResidualDropoutLayerNormForward(float* out, float* ln_out, float* mean,
                                                 float* rstd, const float* residual, const float* x,
                                                 const float* w, const float* b, int B, int T,
                                                 int C, DropoutKind kind, int layer,
                                                 const DropoutPlan* dropout) {
  const size_t per_sample = static_cast<size_t>(T) * C;
  const bool drop = DropoutActive(dropout, kind);
  const uint32_t site = DropoutSiteId(kind, layer);
  const float p = drop ? dropout->rates.Of(kind) : 0.0f;
#pragma omp parallel for collapse(2) schedule(static)
  for (int bi = 0; bi < B; ++bi) {
    for (int t = 0; t < T; ++t) {
      const size_t n = static_cast<size_t>(bi) * T + t, row = n * C;
      if (drop) {
        const DropoutAddress a =
            DropoutAddressOf(*dropout, bi, per_sample, static_cast<uint64_t>(t) * C);
        ResidualDropoutRun(out + row, residual + row, x + row, *dropout, a.stream, site, a.element,
                           C, p);
      } else {
        for (int c = 0; c < C; ++c) out[row + c] = residual[row + c] + x[row + c];
      }
      LayerNormRow(ln_out + row, out + row, w, b, C, &mean[n], &rstd[n]);
    }
  }
}

void CpuKernels::DropoutBackward(float* dx, const float* dout, int B, int T, int C,
                                 DropoutKind kind, int layer, const DropoutPlan* dropout) {
  const size_t per_sample = static_cast<size_t>(T) * C;
  if (!DropoutActive(dropout, kind)) {
    if (dx != dout) std::memcpy(dx, dout, B * per_sample * sizeof(float));
    return;
  }
  const uint32_t site = DropoutSiteId(kind, layer);
  const float p = dropout->rates.Of(kind);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const size_t row = (static_cast<size_t>(b) * T + t) * C;
      const DropoutAddress a =
          DropoutAddressOf(*dropout, b, per_sample, static_cast<uint64_t>(t) * C);
      ResidualDropoutRun(dx + row, nullptr, dout + row, *dropout, a.stream, site, a.element, C, p);
    }
  }
}

void CpuKernels::CrossEntropyForward(float* losses, float* lse, const float* logits,
                                     const int32_t* targets, int N, int V) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    // Vectorised: with GPT-2's 50,257-token vocabulary the scalar double exp
    // of every logit was 29% of a training step.
    const float* row = logits + static_cast<size_t>(n) * V;
    const float log_sum_exp = LogSumExp(std::span<const float>(row, V));
    lse[n] = log_sum_exp;
    losses[n] = log_sum_exp - row[targets[n]];
  }
}

void CpuKernels::CrossEntropyBackward(float* logits, const float* lse, const int32_t* targets,
                                      int N, int V, float scale) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* row = logits + static_cast<size_t>(n) * V;
    const float l = lse[n];
    for (int v = 0; v < V; ++v) row[v] = FastExp(row[v] - l) * scale;
    row[targets[n]] -= scale;
  }
}

}  // namespace dropk
