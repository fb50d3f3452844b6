#include "trainer/comm_timeout.h"

#include <algorithm>

namespace dropk {

std::chrono::milliseconds CommTimeout(double configured_s, double slowest_step_s) {
  double seconds = configured_s;
  if (seconds <= 0) {
    seconds = slowest_step_s <= 0
                  ? kCommTimeoutStartupS
                  : std::max(kCommTimeoutFloorS, kCommTimeoutStepMultiple * slowest_step_s);
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace dropk
