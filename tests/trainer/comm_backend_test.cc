// comm_backend: what each value chooses from a rank's facts, and the lines
// that refuse NCCL where it cannot work. Joining NCCL for real needs GPUs
// and skips, saying so, where there are none.
#include "trainer/comm_backend.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/nccl_communicator.h"
#include "model/kernels.h"
#include "support/thread_communicator.h"
#include "trainer/config.h"

namespace dropk {
namespace {

using ::testing::HasSubstr;

TrainConfig ConfigWith(TrainConfig::CommBackend backend, TrainConfig::Device device) {
  TrainConfig config = DefaultTrainConfig();
  config.set_comm_backend(backend);
  config.set_device(device);
  return config;
}

// A node with `gpus` GPUs, `ranks` ranks of an mpirun job, NCCL loadable.
CommFacts Node(int ranks, int gpus) {
  CommFacts facts;
  facts.launched_by_mpi = true;
  facts.local_ranks = ranks;
  facts.cuda_devices = gpus;
  facts.nccl = absl::OkStatus();
  return facts;
}

CommBackendChoice Choice(const TrainConfig& config, const CommFacts& facts) {
  absl::StatusOr<CommBackendChoice> choice = ChooseCommBackend(config, facts);
  EXPECT_TRUE(choice.ok()) << choice.status();
  return choice.value_or(CommBackendChoice::kSingleProcess);
}

TEST(CommBackendTest, AutoIsSingleProcessOutsideMpirun) {
  CommFacts alone = Node(1, 8);
  alone.launched_by_mpi = false;
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::AUTO, TrainConfig::CUDA), alone),
            CommBackendChoice::kSingleProcess);
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::AUTO, TrainConfig::CPU), alone),
            CommBackendChoice::kSingleProcess);
}

TEST(CommBackendTest, AutoPicksNcclOnCudaWithAGpuPerRank) {
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::AUTO, TrainConfig::CUDA), Node(4, 8)),
            CommBackendChoice::kNccl);
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::AUTO, TrainConfig::CUDA), Node(8, 8)),
            CommBackendChoice::kNccl);
}

TEST(CommBackendTest, AutoFallsBackToMpiWhereNcclCannotWork) {
  const TrainConfig cuda = ConfigWith(TrainConfig::AUTO, TrainConfig::CUDA);
  EXPECT_EQ(Choice(cuda, Node(2, 1)), CommBackendChoice::kMpi);  // two ranks share a GPU
  EXPECT_EQ(Choice(cuda, Node(1, 0)), CommBackendChoice::kMpi);  // no GPU visible
  CommFacts no_library = Node(2, 2);
  no_library.nccl = absl::FailedPreconditionError("cannot load NCCL: libnccl.so.2: not found");
  EXPECT_EQ(Choice(cuda, no_library), CommBackendChoice::kMpi);
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::AUTO, TrainConfig::CPU), Node(2, 2)),
            CommBackendChoice::kMpi);
}

TEST(CommBackendTest, ExplicitBackendsAreTaken) {
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::MPI, TrainConfig::CUDA), Node(2, 2)),
            CommBackendChoice::kMpi);
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::SINGLE_PROCESS, TrainConfig::CPU), Node(1, 0)),
            CommBackendChoice::kSingleProcess);
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::NCCL, TrainConfig::CUDA), Node(2, 2)),
            CommBackendChoice::kNccl);
}

// mpirun -np 2 dropk-train --comm_backend=single_process ran two independent
// runs into the same out_dir, both "done".
TEST(CommBackendTest, SingleProcessUnderALauncherOfSeveralRanksIsRefused) {
  CommFacts two = Node(2, 0);
  two.launcher_ranks = 2;
  const absl::StatusOr<CommBackendChoice> choice =
      ChooseCommBackend(ConfigWith(TrainConfig::SINGLE_PROCESS, TrainConfig::CPU), two);
  ASSERT_FALSE(choice.ok());
  EXPECT_EQ(choice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(choice.status().message().find("comm_backend=SINGLE_PROCESS, but the launcher "
                                           "started 2 ranks"),
            std::string::npos)
      << choice.status();
  CommFacts one = Node(1, 0);  // mpirun -np 1: one process either way
  one.launcher_ranks = 1;
  EXPECT_EQ(Choice(ConfigWith(TrainConfig::SINGLE_PROCESS, TrainConfig::CPU), one),
            CommBackendChoice::kSingleProcess);
}

// One line, naming the field, for every reason NCCL cannot be had.
void ExpectRefused(const TrainConfig& config, const CommFacts& facts, const std::string& why) {
  const absl::StatusOr<CommBackendChoice> choice = ChooseCommBackend(config, facts);
  ASSERT_FALSE(choice.ok());
  const std::string message(choice.status().message());
  EXPECT_TRUE(absl::IsFailedPrecondition(choice.status())) << message;
  EXPECT_EQ(message.rfind("comm_backend=NCCL: ", 0), 0u) << message;
  EXPECT_NE(message.find(why), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(CommBackendTest, NcclThatCannotWorkIsRefusedInOneLine) {
  const TrainConfig nccl = ConfigWith(TrainConfig::NCCL, TrainConfig::CUDA);
  CommFacts no_library = Node(2, 2);
  no_library.nccl = absl::FailedPreconditionError("cannot load NCCL: libnccl.so.2: not found");
  ExpectRefused(nccl, no_library, "cannot load NCCL: libnccl.so.2: not found");
  ExpectRefused(nccl, Node(1, 0), "no CUDA device");
  ExpectRefused(nccl, Node(4, 2), "4 ranks on this node share 2 GPU(s)");
  ExpectRefused(ConfigWith(TrainConfig::NCCL, TrainConfig::CPU), Node(2, 2), "device: CUDA");
}

// Whether ranks share a GPU is decided by UUID once the ranks have exchanged
// them: eight ranks that each see one GPU of their own (srun
// --gpus-per-task=1) get NCCL, and two ranks on one GPU do not, whatever the
// counts say.
TEST(CommBackendTest, GpuUuidsDecideWhetherRanksShareAGpu) {
  const TrainConfig cuda = ConfigWith(TrainConfig::AUTO, TrainConfig::CUDA);
  CommFacts own_gpu_each = Node(8, 1);
  EXPECT_EQ(Choice(cuda, own_gpu_each), CommBackendChoice::kMpi);  // before the exchange
  own_gpu_each.ranks_sharing_my_gpu = 0;
  EXPECT_EQ(Choice(cuda, own_gpu_each), CommBackendChoice::kNccl);
  CommFacts shared = Node(2, 2);
  shared.ranks_sharing_my_gpu = 1;
  EXPECT_EQ(Choice(cuda, shared), CommBackendChoice::kMpi);
  ExpectRefused(ConfigWith(TrainConfig::NCCL, TrainConfig::CUDA), shared,
                "this rank's GPU is also the GPU of 1 other rank(s)");
}

TEST(CommBackendTest, RanksSharingGpuCountsOtherRanksWithTheSameUuid) {
  const std::array<uint8_t, 16> a{1, 2, 3}, b{9}, unknown{};
  EXPECT_EQ(RanksSharingGpu({a, b, a, a}, 0), 2);
  EXPECT_EQ(RanksSharingGpu({a, b, a, a}, 1), 0);
  EXPECT_EQ(RanksSharingGpu({unknown, unknown}, 0), 0);  // unknown: never a match
  EXPECT_EQ(RanksSharingGpu({a}, 0), 0);
}

// Each rank of a `facts_of.size()`-rank job (thread ranks) agrees with the
// others, giving its facts and GPU UUID; returns every rank's answer.
std::vector<absl::StatusOr<CommBackendChoice>> Agree(
    const TrainConfig& config, const std::vector<CommFacts>& facts_of,
    const std::vector<std::array<uint8_t, 16>>& uuid_of) {
  const int world = static_cast<int>(facts_of.size());
  std::vector<absl::StatusOr<CommBackendChoice>> answers(world, absl::UnknownError("not run"));
  CollectiveOptions options;
  options.timeout = std::chrono::seconds(20);  // a mismatch fails, rather than hangs, the test
  test_util::RunRanks(world, [&](Communicator& comm) {
    answers[comm.Rank()] =
        AgreeOnCommBackend(config, facts_of[comm.Rank()], uuid_of[comm.Rank()], comm, options);
  });
  return answers;
}

// `world` ranks of one node that each see one GPU of their own, numbered 0
// (srun --gpus-per-task=1).
std::vector<CommFacts> OwnGpuEach(int world) {
  return std::vector<CommFacts>(world, Node(world, 1));
}

// UUIDs 1, 2, ...: a GPU for each rank.
std::vector<std::array<uint8_t, 16>> DistinctUuids(int world) {
  std::vector<std::array<uint8_t, 16>> uuids;
  for (int r = 0; r < world; ++r) uuids.push_back({static_cast<uint8_t>(r + 1)});
  return uuids;
}

TEST(CommBackendTest, RanksAgreeOnNcclByUuid) {
  for (auto answer :
       Agree(ConfigWith(TrainConfig::AUTO, TrainConfig::CUDA), OwnGpuEach(3), DistinctUuids(3))) {
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(*answer, CommBackendChoice::kNccl);
  }
  // Ranks 0 and 2 on one GPU: MPI for all under AUTO; under NCCL ranks 0
  // and 2 say why and rank 1 names the lowest of them.
  std::vector<std::array<uint8_t, 16>> shared = DistinctUuids(3);
  shared[2] = shared[0];
  for (auto answer :
       Agree(ConfigWith(TrainConfig::AUTO, TrainConfig::CUDA), OwnGpuEach(3), shared)) {
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(*answer, CommBackendChoice::kMpi);
  }
  const auto nccl = Agree(ConfigWith(TrainConfig::NCCL, TrainConfig::CUDA), OwnGpuEach(3), shared);
  EXPECT_THAT(nccl[0].status().message(), HasSubstr("this rank's GPU is also the GPU of 1 other"));
  EXPECT_THAT(nccl[1].status().message(), HasSubstr("rank 0 cannot use NCCL"));
  EXPECT_THAT(nccl[2].status().message(), HasSubstr("this rank's GPU is also the GPU of 1 other"));
}

// A rank that sees no GPU (driver missing on its node, empty
// CUDA_VISIBLE_DEVICES) skipped the UUID exchange the others entered, so
// the job's collectives paired up wrongly and it hung without a word. It
// takes part with a zero UUID, and every rank answers at once: under NCCL
// that rank says why and the others name it; under AUTO all take MPI.
TEST(CommBackendTest, ARankWithoutAGpuStillTakesPartInTheAgreement) {
  std::vector<CommFacts> facts = OwnGpuEach(3);
  facts[1].cuda_devices = 0;
  std::vector<std::array<uint8_t, 16>> uuids = DistinctUuids(3);
  uuids[1] = {};  // CudaDeviceUuid where there is no GPU
  const auto nccl = Agree(ConfigWith(TrainConfig::NCCL, TrainConfig::CUDA), facts, uuids);
  for (int r = 0; r < 3; ++r) {
    ASSERT_FALSE(nccl[r].ok()) << "rank " << r;
    EXPECT_TRUE(absl::IsFailedPrecondition(nccl[r].status())) << nccl[r].status();
  }
  EXPECT_THAT(nccl[1].status().message(), HasSubstr("no CUDA device is visible to this rank"));
  EXPECT_THAT(nccl[0].status().message(), HasSubstr("rank 1 cannot use NCCL"));
  EXPECT_THAT(nccl[2].status().message(), HasSubstr("rank 1 cannot use NCCL"));
  for (auto answer : Agree(ConfigWith(TrainConfig::AUTO, TrainConfig::CUDA), facts, uuids)) {
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(*answer, CommBackendChoice::kMpi);
  }
}

TEST(CommBackendTest, ValidationRefusesNcclOnTheCpu) {
  for (TrainConfig::Device device : {TrainConfig::CPU, TrainConfig::DEVICE_UNSPECIFIED}) {
    const absl::Status s = ValidateTrainConfig(ConfigWith(TrainConfig::NCCL, device));
    ASSERT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_NE(s.message().find("comm_backend=NCCL: needs device: CUDA"), std::string::npos) << s;
  }
  EXPECT_TRUE(ValidateTrainConfig(ConfigWith(TrainConfig::MPI, TrainConfig::CPU)).ok());
}

TEST(CommBackendTest, NcclIsNamedOnTheCommandLine) {
  const char* argv[] = {"dropk-train", "--comm_backend=nccl", "--device=cuda", nullptr};
  absl::StatusOr<TrainConfig> config = LoadTrainConfig(3, const_cast<char**>(argv));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->comm_backend(), TrainConfig::NCCL);
}

// The build without NCCL says so when NCCL is asked for; one with it, on a
// machine with GPUs, joins it (outside mpirun: a job of one rank).
TEST(CommBackendTest, NcclOnThisMachine) {
  const TrainConfig nccl = ConfigWith(TrainConfig::NCCL, TrainConfig::CUDA);
  CommFacts facts = GatherCommFacts(nccl);
  if (!NcclAvailable()) {
    ExpectRefused(nccl, facts, "this build of dropk has no NCCL");
    GTEST_SKIP() << "this build has no NCCL: checked the refusal only, not a real NCCL job";
  }
  if (!facts.nccl.ok() || facts.cuda_devices < 1) {
    GTEST_SKIP() << "no usable NCCL or GPU here (" << facts.nccl.message() << ", "
                 << facts.cuda_devices << " GPU(s)): a real NCCL job is not tried";
  }
  if (facts.launched_by_mpi) GTEST_SKIP() << "runs outside mpirun only (MPI would start here)";
  absl::StatusOr<std::unique_ptr<Communicator>> comm = JoinTrainingJob(nccl);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->BackendName(), "nccl+single-process");
  EXPECT_EQ((*comm)->Size(), 1);
}

}  // namespace
}  // namespace dropk
