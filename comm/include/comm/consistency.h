// Checks that every rank holds the same state (DESIGN invariant 2).
#ifndef DROPK_COMM_CONSISTENCY_H_
#define DROPK_COMM_CONSISTENCY_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "comm/communicator.h"

namespace dropk {

// A 64-bit digest of `bytes` bytes at data (host memory): equal inputs give
// equal digests; any changed bit changes it with overwhelming probability.
// Not cryptographic. About memory bandwidth speed.
uint64_t Digest(const void* data, size_t bytes);

// Gathers every rank's digest and compares them. OK when all are equal;
// otherwise DataLoss naming `what`, `step`, and each rank whose digest
// differs from rank 0's. A collective: every rank must call it.
absl::Status CheckSameOnAllRanks(Communicator* comm, uint64_t digest, const std::string& what,
                                 int64_t step, const CollectiveOptions& options = {});

}  // namespace dropk

#endif  // DROPK_COMM_CONSISTENCY_H_
