// ProfiledKernels: the wrapped kernels' results bit for bit, each op's calls
// counted only while not paused, and a report that names what it counted.
#include "model/profiled_kernels.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace dropk {
namespace {

std::unique_ptr<Kernels> Cpu() { return MakeKernels(Device::kCpu, 1).value(); }

// Runs one GELU forward of `inp` through `k`.
std::vector<float> Gelu(Kernels* k, const std::vector<float>& inp) {
  std::vector<float> out(inp.size());
  k->GeluForward(out.data(), inp.data(), inp.size());
  return out;
}

std::vector<float> Ramp(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = -3.0f + 6.0f * static_cast<float>(i) / n;
  return v;
}

TEST(ProfiledKernelsTest, ResultsAreTheWrappedKernelsBitForBit) {
  const std::vector<float> inp = Ramp(4097);
  const std::vector<float> plain = Gelu(Cpu().get(), inp);
  ProfiledKernels profiled(Cpu());
  const std::vector<float> timed = Gelu(&profiled, inp);
  profiled.set_paused(true);
  const std::vector<float> untimed = Gelu(&profiled, inp);
  ASSERT_EQ(plain.size(), timed.size());
  EXPECT_EQ(0, std::memcmp(plain.data(), timed.data(), plain.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(plain.data(), untimed.data(), plain.size() * sizeof(float)));
}

TEST(ProfiledKernelsTest, PausedCallsAreNotCountedAndResetForgets) {
  ProfiledKernels profiled(Cpu());
  const std::vector<float> inp = Ramp(1024);
  Gelu(&profiled, inp);
  Gelu(&profiled, inp);
  profiled.set_paused(true);
  Gelu(&profiled, inp);
  profiled.Scale(std::vector<float>(8, 1.0f).data(), 2.0f, 8);
  EXPECT_EQ(2, profiled.totals(KernelOp::kGeluForward).calls);
  EXPECT_EQ(0, profiled.totals(KernelOp::kScale).calls);
  EXPECT_GE(profiled.totals(KernelOp::kGeluForward).seconds, 0.0);
  profiled.set_paused(false);
  profiled.Reset();
  EXPECT_EQ(0, profiled.totals(KernelOp::kGeluForward).calls);
  EXPECT_EQ(0.0, profiled.TotalSeconds());
}

TEST(ProfiledKernelsTest, ReportHasARowPerCalledOpTheRemainderAndTheStep) {
  ProfiledKernels profiled(Cpu());
  const std::vector<float> inp = Ramp(1024);
  for (int i = 0; i < 4; ++i) Gelu(&profiled, inp);
  const std::string report = profiled.Report(2, 1.0);
  EXPECT_NE(report.find("GeluForward"), std::string::npos) << report;
  // 4 calls over 2 steps.
  EXPECT_NE(report.find("2.0"), std::string::npos) << report;
  EXPECT_EQ(report.find("GeluBackward"), std::string::npos) << report;
  EXPECT_NE(report.find("(outside ops)"), std::string::npos) << report;
  EXPECT_NE(report.find("100.0%"), std::string::npos) << report;
  EXPECT_EQ('\n', report.back());
}

}  // namespace
}  // namespace dropk
