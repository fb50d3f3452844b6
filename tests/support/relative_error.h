// The error measure of tests that compare two devices or precisions.
#ifndef DROPK_TESTS_SUPPORT_RELATIVE_ERROR_H_
#define DROPK_TESTS_SUPPORT_RELATIVE_ERROR_H_

#include <algorithm>
#include <cmath>
#include <span>

namespace dropk::test_util {

// ||got - want||_2 / ||want||_2 over the whole tensor (want's norm floored at
// 1e-30). NaN anywhere makes it NaN, so `RelativeError(...) < tol` fails.
inline double RelativeError(std::span<const float> got, std::span<const float> want) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
    norm += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_RELATIVE_ERROR_H_
