#include "cpu/attention_rows.h"

#include <algorithm>
#include <cmath>

#include "kernel_math.h"

namespace dropk {

// The exponentials and the sum are separate loops so that the first vectorises.
void CausalSoftmaxRow(float* row, int t, int width) {
  float maxv = row[0];
  for (int j = 1; j <= t; ++j) maxv = std::max(maxv, row[j]);
  for (int j = 0; j <= t; ++j) row[j] = FastExp(row[j] - maxv);
  float sum = 0.0f;
  for (int j = 0; j <= t; ++j) sum += row[j];
  const float inv = 1.0f / sum;
  for (int j = 0; j <= t; ++j) row[j] *= inv;
  std::fill(row + t + 1, row + width, 0.0f);
}

// dpre = att * (datt - sum(att * datt)), att = |arow|.
void SoftmaxBackwardRow(float* drow, const float* arow, int t, int width, float keep_scale) {
  float dot = 0.0f;
  for (int j = 0; j <= t; ++j) {
    drow[j] = std::signbit(arow[j]) ? 0.0f : drow[j] * keep_scale;
    dot += std::fabs(arow[j]) * drow[j];
  }
  for (int j = 0; j <= t; ++j) drow[j] = std::fabs(arow[j]) * (drow[j] - dot);
  std::fill(drow + t + 1, drow + width, 0.0f);
}

const float* HeadView::DropWeights(float* dropped, float* scales, float* att, int t0,
                                   int t1) const {
  if (dropout == nullptr) return att + static_cast<size_t>(t0) * T;
  for (int t = t0; t < t1; ++t) {
    float* drow = dropped + static_cast<size_t>(t - t0) * T;
    float* arow = att + static_cast<size_t>(t) * T;
    float* srow = scales + static_cast<size_t>(t - t0) * T;
    const uint64_t i = (static_cast<uint64_t>(h) * T + t) * T;
    const DropoutAddress a = DropoutAddressOf(*dropout, b, per_sample, i);
    DropoutScales(dropout->seed, a.stream, site, dropout->step, a.element, t + 1, p, srow);
    for (int j = 0; j <= t; ++j) {
      drow[j] = arow[j] * srow[j];
      arow[j] = srow[j] == 0.0f ? -arow[j] : arow[j];
    }
    std::fill(drow + t + 1, drow + t1, 0.0f);
  }
  return dropped;
}

void HeadView::DroppedWeights(float* dropped, const float* att, int t0, int t1) const {
  const float keep_scale = DropoutKeepScale(p);
  for (int t = t0; t < t1; ++t) {
    float* drow = dropped + static_cast<size_t>(t - t0) * T;
    const float* arow = att + static_cast<size_t>(t) * T;
    for (int j = 0; j <= t; ++j) drow[j] = std::signbit(arow[j]) ? 0.0f : arow[j] * keep_scale;
    std::fill(drow + t + 1, drow + t1, 0.0f);
  }
}

}  // namespace dropk
