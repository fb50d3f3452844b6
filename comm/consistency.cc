#include "comm/consistency.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dropk {

uint64_t Digest(const void* data, size_t bytes) {
  // Four independent multiply-xorshift lanes over 64-bit words (so the loop
  // is not one long dependency chain), folded at the end.
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t lanes[4] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull, 0xA4093822299F31D0ull,
                       0x082EFA98EC4E6C89ull};
  const auto* p = static_cast<const unsigned char*>(data);
  const size_t words = bytes / 8;
  size_t i = 0;
  for (; i + 4 <= words; i += 4) {
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + 8 * (i + l), 8);
      lanes[l] = (lanes[l] ^ w) * kMul;
      lanes[l] ^= lanes[l] >> 29;
    }
  }
  uint64_t h = bytes;
  for (; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, p + 8 * i, 8);
    h = ((h ^ w) * kMul) ^ (h >> 31);
  }
  for (size_t b = words * 8; b < bytes; ++b) h = ((h ^ p[b]) * kMul) ^ (h >> 31);
  for (uint64_t lane : lanes) h = ((h ^ lane) * kMul) ^ (h >> 31);
  return h;
}

absl::Status CheckSameOnAllRanks(Communicator* comm, uint64_t digest, const std::string& what,
                                 int64_t step, const CollectiveOptions& options) {
  const int n = comm->Size();
  int64_t mine = static_cast<int64_t>(digest);
  std::vector<int64_t> all(n);
  absl::Status s =
      comm->AllGather(HostBuffer(&mine, 1), HostBuffer(all.data(), n), options)->Wait();
  if (!s.ok()) return s;
  std::string diverged;
  for (int r = 1; r < n; ++r) {
    if (all[r] != all[0]) {
      absl::StrAppendFormat(&diverged, "%srank %d (%016x)", diverged.empty() ? "" : ", ", r,
                            static_cast<uint64_t>(all[r]));
    }
  }
  if (diverged.empty()) return absl::OkStatus();
  return absl::DataLossError(
      absl::StrFormat("%s diverged across ranks at step %d: %s differ from rank 0 (%016x)", what,
                      step, diverged, static_cast<uint64_t>(all[0])));
}

}  // namespace dropk
