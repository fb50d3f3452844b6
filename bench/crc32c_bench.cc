// CRC32C throughput over 64 MiB: dropk's slice-by-8 and its dispatching
// Extend (SSE4.2 where available) against Boost.CRC parameterised as CRC-32C,
// the packaged alternative, measured in the same run. Prints figures and the
// ratio against Boost; asserts nothing.
#include <boost/crc.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <vector>

#include "bench_flags.h"
#include "checkpoint/crc32c.h"

int main(int argc, char** argv) {
  CLI::App app{"dropk-crc32c-bench: CRC32C over 64 MiB, dropk's against Boost.CRC (no options)"};
  if (std::optional<int> code = dropk::ParseBenchFlags(app, argc, argv, "dropk-crc32c-bench")) {
    return *code;
  }
  std::vector<uint8_t> data(64u << 20);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131);
  auto time_gbps = [&](auto&& fn) {
    const auto start = std::chrono::steady_clock::now();
    volatile uint32_t sink = fn();
    (void)sink;
    return data.size() / 1e9 /
           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const double boost_gbps = time_gbps([&] {
    boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
    crc.process_bytes(data.data(), data.size());
    return crc.checksum();
  });
  const double portable_gbps =
      time_gbps([&] { return dropk::crc32c::ExtendPortable(0, data.data(), data.size()); });
  const double dispatch_gbps =
      time_gbps([&] { return dropk::crc32c::Value(data.data(), data.size()); });
  std::printf(
      "CRC32C over 64 MiB: Boost.CRC %.2f GB/s (1.0x), slice-by-8 %.2f GB/s (%.1fx), "
      "Extend (%s) %.2f GB/s (%.1fx)\n",
      boost_gbps, portable_gbps, portable_gbps / boost_gbps,
      dropk::crc32c::HardwareAvailable() ? "sse4.2" : "portable", dispatch_gbps,
      dispatch_gbps / boost_gbps);
  return 0;
}
