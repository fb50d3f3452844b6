// The MPI test binary runs under `mpirun -np N`: one communicator for the
// whole process (MPI may be initialised once), shared by every test.
#ifndef DROPK_TESTS_MPI_MPI_TEST_ENV_H_
#define DROPK_TESTS_MPI_MPI_TEST_ENV_H_

#include <filesystem>
#include <string>

#include "comm/communicator.h"

namespace dropk {

// The MPI_COMM_WORLD communicator of this test process.
Communicator& World();

// A scratch directory shared by the ranks of this job (they run on one
// machine), holding data/ prepared from the bundled corpus by rank 0. For a
// suite's SetUpTestSuite; every rank must call it (it ends in a barrier).
// `name` and the world size keep concurrent jobs apart.
std::filesystem::path MakeSharedRunRoot(const std::string& name);

// Removes a root made by MakeSharedRunRoot (rank 0, after a barrier).
void RemoveSharedRunRoot(const std::filesystem::path& root);

}  // namespace dropk

#endif  // DROPK_TESTS_MPI_MPI_TEST_ENV_H_
