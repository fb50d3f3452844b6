// The MPI test binary runs under `mpirun -np N`: one communicator for the
// whole process (MPI may be initialised once), shared by every test.
#ifndef DROPK_TESTS_MPI_MPI_TEST_ENV_H_
#define DROPK_TESTS_MPI_MPI_TEST_ENV_H_

#include "comm/communicator.h"

namespace dropk {

// The MPI_COMM_WORLD communicator of this test process.
Communicator& World();

}  // namespace dropk

#endif  // DROPK_TESTS_MPI_MPI_TEST_ENV_H_
