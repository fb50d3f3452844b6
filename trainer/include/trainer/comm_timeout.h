// How long a collective may take before the job is declared stuck. A fixed
// figure is either too short for slow steps or far too long for fast ones (a
// lost host then stalls the job for minutes), so by default it follows the
// measured step time.
#ifndef DROPK_TRAINER_COMM_TIMEOUT_H_
#define DROPK_TRAINER_COMM_TIMEOUT_H_

#include <chrono>

namespace dropk {

// Auto policy, used when comm_timeout_s is 0.
inline constexpr double kCommTimeoutStartupS = 300;  // until a step is measured
inline constexpr double kCommTimeoutFloorS = 30;
inline constexpr double kCommTimeoutStepMultiple = 20;
// The longest timeout, configured or auto: 30 days. Deadlines are
// steady_clock time points in nanoseconds; far beyond this (about 1e10 s) a
// deadline overflows to the past and every collective times out at once.
inline constexpr double kCommTimeoutMaxS = 30 * 24 * 3600;

// The timeout for the next collective: `configured_s` when > 0; else
// kCommTimeoutStartupS while no step was measured (`slowest_step_s` <= 0:
// starting ranks load data and may start apart), else
// max(kCommTimeoutFloorS, kCommTimeoutStepMultiple x slowest_step_s); at
// most kCommTimeoutMaxS, and at least 1 ms when configured.
std::chrono::milliseconds CommTimeout(double configured_s, double slowest_step_s);

}  // namespace dropk

#endif  // DROPK_TRAINER_COMM_TIMEOUT_H_
