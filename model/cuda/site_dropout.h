// One dropout site as the CUDA kernels see it (SiteDropout), kept apart from
// launch.h so that host code without the CUDA headers (the warp-emulated
// kernel tests) can build the same value. Private to model/cuda/.
#ifndef DROPK_MODEL_CUDA_SITE_DROPOUT_H_
#define DROPK_MODEL_CUDA_SITE_DROPOUT_H_

#include <cstdint>

#include "model/dropout.h"

namespace dropk::cuda {

// One dropout site as the kernels see it: the plan, the site id and its rate.
// p == 0 means no dropout (every scale is 1).
struct SiteDropout {
  DropoutPlan plan;
  uint32_t site = 0;
  float p = 0.0f;
  uint64_t threshold = 0;   // DropoutKeepThreshold(p)
  float keep_scale = 1.0f;  // DropoutKeepScale(p)
};

// The site (kind, layer) of `plan`; no dropout when plan is null or its rate
// for kind is 0 (evaluation).
inline SiteDropout MakeSiteDropout(const DropoutPlan* plan, DropoutKind kind, int layer) {
  SiteDropout d;
  if (plan == nullptr || !(plan->rates.Of(kind) > 0.0f)) return d;
  d.plan = *plan;
  d.site = DropoutSiteId(kind, layer);
  d.p = plan->rates.Of(kind);
  d.threshold = DropoutKeepThreshold(d.p);
  d.keep_scale = DropoutKeepScale(d.p);
  return d;
}

// The Philox address of element (t, 0) of head h's T x T attention
// probabilities of sample b at site d (element (h*T + t)*T + j of the
// sample): every attention kernel, flash or materialised, draws from it.
DROPK_HOST_DEVICE DropoutAddress AttentionRowAddress(const SiteDropout& d, int b, int h, int t,
                                                     int NH, int T) {
  const uint64_t per_sample = static_cast<uint64_t>(NH) * T * T;
  return DropoutAddressOf(d.plan, b, per_sample, (static_cast<uint64_t>(h) * T + t) * T);
}

}  // namespace dropk::cuda

#endif  // DROPK_MODEL_CUDA_SITE_DROPOUT_H_
