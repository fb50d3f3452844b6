// main() of dropk_mpi_tests: initialises MPI, runs every test on every rank
// (only rank 0 prints), and exits non-zero on every rank if any rank failed,
// so mpirun's exit status is the suite's.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "comm/mpi_communicator.h"
#include "mpi_test_env.h"
#include "trainer/prepare_data.h"

namespace dropk {
namespace {
std::unique_ptr<Communicator> g_world;
}  // namespace

Communicator& World() { return *g_world; }

std::filesystem::path MakeSharedRunRoot(const std::string& name) {
  const std::filesystem::path root =
      std::filesystem::path(::testing::TempDir()) / (name + "_np" + std::to_string(World().Size()));
  if (World().Rank() == 0) {
    std::filesystem::remove_all(root);
    PrepareOptions options;
    options.inputs = {DROPK_SOURCE_DIR "/data/tinyshakespeare.txt"};
    options.out_dir = (root / "data").string();
    const absl::StatusOr<PrepareSummary> prepared = PrepareData(options);
    EXPECT_TRUE(prepared.ok()) << prepared.status();
  }
  EXPECT_TRUE(World().Barrier()->Wait().ok());
  return root;
}

void RemoveSharedRunRoot(const std::filesystem::path& root) {
  (void)World().Barrier()->Wait();
  if (World().Rank() == 0) std::filesystem::remove_all(root);
}

}  // namespace dropk

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  absl::StatusOr<std::unique_ptr<dropk::Communicator>> comm = dropk::MakeMpiCommunicator();
  if (!comm.ok()) {
    std::fprintf(stderr, "dropk_mpi_tests: %s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  dropk::g_world = *std::move(comm);
  const int rank = dropk::g_world->Rank();
  if (rank != 0) {
    // Failures still reach stderr through gtest's assertion output.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int64_t any = failed;
  if (!dropk::g_world->AllReduce(dropk::HostBuffer(&any, 1), dropk::ReduceOp::kMax)->Wait().ok()) {
    any = 1;
  }
  if (rank == 0) {
    std::printf("dropk_mpi_tests: %d rank(s), %s\n", dropk::g_world->Size(),
                any ? "FAILED on some rank" : "passed on every rank");
  }
  dropk::g_world.reset();  // MPI_Finalize
  return any ? 1 : 0;
}
