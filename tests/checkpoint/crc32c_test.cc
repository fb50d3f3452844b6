// CRC32C against published check values (the CRC catalogue's check value
// and RFC 3720 B.4), both implementations, and agreement with Boost.CRC
// parameterised as CRC-32C. Throughput lives in bench/crc32c_bench.cc.
#include <gtest/gtest.h>

#include <boost/crc.hpp>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/crc32c.h"

namespace dropk {
namespace {

using Fn = uint32_t (*)(uint32_t, const void*, size_t);

std::vector<std::pair<const char*, Fn>> Implementations() {
  std::vector<std::pair<const char*, Fn>> fns = {{"portable", crc32c::ExtendPortable},
                                                 {"dispatch", crc32c::Extend}};
  if (crc32c::HardwareAvailable()) fns.push_back({"sse4.2", crc32c::ExtendHardware});
  return fns;
}

TEST(Crc32cTest, PublishedCheckValues) {
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF), inc(32), dec(32);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<uint8_t>(i);
    dec[i] = static_cast<uint8_t>(31 - i);
  }
  // RFC 3720 B.4: an iSCSI read command PDU.
  const uint8_t iscsi[48] = {0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                             0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00,
                             0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
                             0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                             0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  for (const auto& [name, fn] : Implementations()) {
    SCOPED_TRACE(name);
    EXPECT_EQ(fn(0, "123456789", 9), 0xE3069283u);
    EXPECT_EQ(fn(0, zeros.data(), 32), 0x8A9136AAu);
    EXPECT_EQ(fn(0, ones.data(), 32), 0x62A8AB43u);
    EXPECT_EQ(fn(0, inc.data(), 32), 0x46DD794Eu);
    EXPECT_EQ(fn(0, dec.data(), 32), 0x113FDB5Cu);
    EXPECT_EQ(fn(0, iscsi, 48), 0xD9963A56u);
    EXPECT_EQ(fn(0, "", 0), 0u);
  }
}

TEST(Crc32cTest, ImplementationsAgreeOnEveryLengthAndAlignmentAndExtend) {
  std::mt19937 rng(7);
  std::vector<uint8_t> data(4096 + 16);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> boost_crc;
  for (size_t offset = 0; offset < 9; ++offset) {
    for (size_t n : {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4096}) {
      const uint8_t* p = data.data() + offset;
      boost_crc.reset();
      boost_crc.process_bytes(p, n);
      const uint32_t expected = boost_crc.checksum();
      for (const auto& [name, fn] : Implementations()) {
        ASSERT_EQ(fn(0, p, n), expected) << name << " offset " << offset << " n " << n;
        // Extending in two pieces gives the CRC of the whole.
        const size_t half = n / 3;
        ASSERT_EQ(fn(fn(0, p, half), p + half, n - half), expected) << name;
      }
    }
  }
}

}  // namespace
}  // namespace dropk
