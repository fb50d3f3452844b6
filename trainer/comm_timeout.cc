#include "trainer/comm_timeout.h"

#include <algorithm>
#include <cmath>

namespace dropk {

std::chrono::milliseconds CommTimeout(double configured_s, double slowest_step_s) {
  double seconds = configured_s;
  if (seconds <= 0) {
    seconds = slowest_step_s <= 0
                  ? kCommTimeoutStartupS
                  : std::max(kCommTimeoutFloorS, kCommTimeoutStepMultiple * slowest_step_s);
  }
  // Converting a double beyond int64 is undefined (x86 gives INT64_MIN: a
  // negative timeout); a configured 1e-6 s must not become 0 ms.
  seconds = std::min(seconds, kCommTimeoutMaxS);
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(seconds * 1000)));
}

}  // namespace dropk
