// CRC32C (Castagnoli, polynomial 0x1EDC6F41 reflected = 0x82F63B78), the
// checksum of iSCSI (RFC 3720), ext4, leveldb and TensorFlow's tensor bundle.
// Every tensor entry of a checkpoint carries one (DESIGN invariant 4).
//
// Why our own: Debian 12 ships no libcrc32c, its abseil (20220623) predates
// absl/crc, and the copies inside leveldb/rocksdb are not public API.
// Boost.CRC (boost::crc_optimal<32, 0x1EDC6F41, ~0, ~0, true, true>) is
// correct but byte-at-a-time (0.29 GB/s here against 1.5 GB/s for our
// slice-by-8 and 5.9 GB/s for SSE4.2; bench/crc32c_bench.cc
// prints them), too slow to checksum a 1.5 GB checkpoint at disk
// speed. So: the SSE4.2 crc32 instruction (8 bytes per instruction, several
// GB/s), chosen at run time, with a portable slice-by-8 table fallback; both
// are tested against the published check values.
#ifndef DROPK_CHECKPOINT_CRC32C_H_
#define DROPK_CHECKPOINT_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace dropk::crc32c {

// The CRC32C of data[0, n) continuing from `crc`, the CRC of the bytes
// before (0 for none): Extend(Extend(0, a), b) == Value(a + b).
uint32_t Extend(uint32_t crc, const void* data, size_t n);
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }

// The same through one implementation; for tests and benchmarks.
uint32_t ExtendPortable(uint32_t crc, const void* data, size_t n);
uint32_t ExtendHardware(uint32_t crc, const void* data, size_t n);  // needs HardwareAvailable()
bool HardwareAvailable();

}  // namespace dropk::crc32c

#endif  // DROPK_CHECKPOINT_CRC32C_H_
