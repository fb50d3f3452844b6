// The memory check of dropk-train: the need is the model's own footprint plus
// the trainer's buffers, and a run that does not fit is refused naming both
// figures.
#include "trainer/memory_budget.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "model/kernels.h"
#include "trainer/config.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int kVocab = 65;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

TEST(MemoryBudgetTest, NeedAddsTheOptimizerAndHostCopiesToTheModel) {
  const TrainConfig config = DefaultTrainConfig();
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, /*threads=*/2).value();
  const GptFootprint model = Gpt::Footprint({kVocab, config.block_size(), config.n_layer(),
                                             config.n_head(), config.n_embd()},
                                            config.batch_size())
                                 .value();
  EXPECT_EQ(need.model.TotalBytes(), model.TotalBytes());
  EXPECT_EQ(need.optimizer_bytes, 2 * model.params_bytes);  // AdamW m and v
  EXPECT_EQ(need.host_bytes, model.params_bytes);
  EXPECT_GT(need.scratch_bytes, 0);
  TrainConfig resuming = config;
  resuming.set_resume("latest");  // reads params, m and v into host memory
  EXPECT_EQ(TrainingMemoryNeed(resuming, kVocab, 2).value().host_bytes, 3 * model.params_bytes);
}

// async_checkpoints (the default) stages a second copy of the checkpoint:
// rank 0 the parameters and its moment slice, every other rank its slice.
TEST(MemoryBudgetTest, AsyncCheckpointStagingIsCountedOnlyWhenOn) {
  TrainConfig config = DefaultTrainConfig();
  ASSERT_TRUE(config.async_checkpoints());
  const TrainingMemory one = TrainingMemoryNeed(config, kVocab, 2).value();
  const double params = one.model.params_bytes;
  EXPECT_EQ(one.staging_params_bytes, params);
  EXPECT_EQ(one.staging_moments_bytes, 2 * params);
  const TrainingMemory four = TrainingMemoryNeed(config, kVocab, 2, /*world_size=*/4).value();
  EXPECT_EQ(four.staging_params_bytes, params);
  EXPECT_NEAR(four.staging_moments_bytes, params / 2, sizeof(float) * 2);
  config.set_async_checkpoints(false);
  const TrainingMemory sync = TrainingMemoryNeed(config, kVocab, 2).value();
  EXPECT_EQ(sync.staging_params_bytes + sync.staging_moments_bytes, 0);
  EXPECT_EQ(one.TotalBytes() - sync.TotalBytes(), 3 * params);

  // A run that fits only without the staging buffer is refused, saying so.
  const AvailableMemory room{sync.TotalBytes() + params, "test"};
  EXPECT_TRUE(CheckTrainingMemory(config, sync, 1, room).ok());
  const absl::Status s = CheckTrainingMemory(DefaultTrainConfig(), one, 1, room);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("asynchronous checkpoint staging"),
                                 HasSubstr("async_checkpoints=false")));
}

// precision BF16 on the CPU adds oneDNN's bf16 operands: a copy of every
// weight (half the fp32 parameters) and the LM head's gradient and weight.
TEST(MemoryBudgetTest, CpuBf16CountsItsOperandCopies) {
  TrainConfig config = DefaultTrainConfig();
  const TrainingMemory fp32 = TrainingMemoryNeed(config, kVocab, 2).value();
  config.set_precision(TrainConfig::BF16);
  const TrainingMemory bf16 = TrainingMemoryNeed(config, kVocab, 2).value();
  const double widest = 4.0 * config.n_embd();  // wider than the 65-token head
  const double rows = static_cast<double>(config.batch_size()) * config.block_size();
  // And the fp32 widenings where oneDNN has no bf16 matmul (AVX2 CPUs):
  // the right operand whole, the left in 32 MiB blocks of rows.
  const double widened = 4 * (std::max(widest, rows) * config.n_embd() + (1 << 23));
  EXPECT_DOUBLE_EQ(bf16.scratch_bytes - fp32.scratch_bytes,
                   fp32.model.params_bytes / 2 + 2 * (rows * widest + widest * config.n_embd()) +
                       widened);
  // cuBLASLt converts on the fly: no copies (and the CUDA kernels take no
  // host scratch), so only the batches remain.
  config.set_device(TrainConfig::CUDA);
  EXPECT_EQ(TrainingMemoryNeed(config, kVocab, 2).value().scratch_bytes,
            2.0 * sizeof(int32_t) * rows);
}

// With device CUDA the model, its gradients, moments and activations are
// checked against the GPU's free memory, and only the host copies, batches
// and staging against the host's.
TEST(MemoryBudgetTest, CudaRunsSplitTheNeedBetweenGpuAndHost) {
  TrainConfig config = DefaultTrainConfig();
  config.set_device(TrainConfig::CUDA);
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, 2).value();
  EXPECT_DOUBLE_EQ(need.DeviceBytes() + need.HostOnlyBytes(), need.TotalBytes());
  EXPECT_DOUBLE_EQ(need.DeviceBytes(),
                   need.model.TotalBytes() + need.optimizer_bytes + need.device_scratch_bytes);

  const double fits = need.DeviceBytes() + kGiB;  // the margin of a small GPU
  EXPECT_TRUE(CheckGpuMemory(config, need, 3, 1, fits).ok());
  const absl::Status gpu = CheckGpuMemory(config, need, 3, 1, fits - 1);
  EXPECT_TRUE(absl::IsInvalidArgument(gpu));
  EXPECT_THAT(gpu.message(), AllOf(HasSubstr("of GPU memory per rank"), HasSubstr("cuda device 3"),
                                   HasSubstr("batch_size=")));
  EXPECT_TRUE(CheckGpuMemory(config, need, 3, 1, -1).ok());  // unknown: the allocation reports
  EXPECT_TRUE(CheckGpuMemory(DefaultTrainConfig(), need, 0, 1, 0).ok());  // not a GPU run

  // The host holds only its part: a host smaller than the whole need fits.
  const AvailableMemory host{need.HostOnlyBytes() + 1, "test"};
  EXPECT_TRUE(CheckTrainingMemory(config, need, 1, host).ok());
  EXPECT_FALSE(CheckTrainingMemory(DefaultTrainConfig(), need, 1, host).ok());
  const absl::Status tight =
      CheckTrainingMemory(config, need, 1, AvailableMemory{need.HostOnlyBytes() / 2, "test"});
  EXPECT_THAT(tight.message(), HasSubstr("of host memory per rank"));
}

// Ranks beyond a node's GPU count share GPUs (rank r takes GPU r % gpus),
// and each measured the free memory before any of them allocated: three
// ranks on one GPU each passed with room for one, then failed allocating.
TEST(MemoryBudgetTest, RanksSharingAGpuAreCheckedTogether) {
  EXPECT_EQ(RanksSharingGpu(/*local_ranks=*/3, /*gpus=*/1, /*cuda_device=*/0), 3);
  EXPECT_EQ(RanksSharingGpu(5, 2, 0), 3);  // ranks 0, 2, 4
  EXPECT_EQ(RanksSharingGpu(5, 2, 1), 2);  // ranks 1, 3
  EXPECT_EQ(RanksSharingGpu(8, 8, 7), 1);
  EXPECT_EQ(RanksSharingGpu(2, 8, 1), 1);
  EXPECT_EQ(RanksSharingGpu(2, 0, 0), 1);  // no GPU: the device check refuses elsewhere

  TrainConfig config = DefaultTrainConfig();
  config.set_device(TrainConfig::CUDA);
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, 2).value();
  EXPECT_TRUE(CheckGpuMemory(config, need, 0, 3, 3 * need.DeviceBytes() + kGiB).ok());
  const absl::Status s = CheckGpuMemory(config, need, 0, 3, 2 * need.DeviceBytes() + kGiB);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr(" x 3 ranks sharing the GPU = "));
}

// Ranks that each see only their own GPU, as device 0 (srun
// --gpus-per-task=1, or CUDA_VISIBLE_DEVICES set per rank), do not share
// it: eight such ranks on a node were counted as eight on one GPU and a run
// needing more than an eighth of it was refused. Counted by UUID; by the
// node's rank and GPU counts only where this rank's UUID is unknown.
TEST(MemoryBudgetTest, RanksOnMyGpuCountsByUuid) {
  const std::array<uint8_t, 16> a{1}, b{2}, c{3}, d{4}, unknown{};
  // Eight ranks, one GPU visible to each, all numbered 0.
  std::vector<std::array<uint8_t, 16>> own_each;
  for (uint8_t r = 1; r <= 8; ++r) own_each.push_back({r});
  for (int rank = 0; rank < 8; ++rank) {
    EXPECT_EQ(RanksOnMyGpu(own_each, rank, /*local_ranks=*/8, /*gpus=*/1, /*cuda_device=*/0), 1);
  }
  EXPECT_EQ(RanksOnMyGpu({a, b, c, d}, 2, 4, 1, 0), 1);
  EXPECT_EQ(RanksOnMyGpu({a, a, b}, 0, 3, 2, 0), 2);
  EXPECT_EQ(RanksOnMyGpu({a, a, b}, 1, 3, 2, 1), 2);
  EXPECT_EQ(RanksOnMyGpu({a, a, b}, 2, 3, 2, 0), 1);
  // A rank with no GPU (zero UUID) shares nobody's.
  EXPECT_EQ(RanksOnMyGpu({a, unknown, a}, 0, 3, 1, 0), 2);
  // This rank's UUID unknown: the count formula (rank r takes GPU r % gpus).
  EXPECT_EQ(RanksOnMyGpu({unknown, unknown, unknown}, 0, 3, 1, 0), 3);
  EXPECT_EQ(RanksOnMyGpu({unknown, unknown, unknown, unknown, unknown}, 1, 5, 2, 1), 2);
  EXPECT_EQ(RanksOnMyGpu({}, 0, 2, 2, 0), 1);  // nothing exchanged

  // So the GPU check of such a rank asks for one rank's need, not eight's.
  TrainConfig config = DefaultTrainConfig();
  config.set_device(TrainConfig::CUDA);
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, 2).value();
  const double free = 2 * need.DeviceBytes() + kGiB;
  EXPECT_TRUE(CheckGpuMemory(config, need, 0, RanksOnMyGpu(own_each, 3, 8, 1, 0), free).ok());
  EXPECT_FALSE(CheckGpuMemory(config, need, 0, RanksSharingGpu(8, 1, 0), free).ok());
}

// Allocations the check cannot count come after it (cuBLAS's workspaces,
// cudaMalloc's rounding, NCCL's buffers): it keeps back the larger of 5% of
// the free memory and 1 GiB, so a run at the boundary is refused up front
// instead of failing in its first step.
TEST(MemoryBudgetTest, GpuCheckKeepsAMargin) {
  EXPECT_DOUBLE_EQ(GpuMemoryMarginBytes(0), kGiB);
  EXPECT_DOUBLE_EQ(GpuMemoryMarginBytes(10 * kGiB), kGiB);
  EXPECT_DOUBLE_EQ(GpuMemoryMarginBytes(20 * kGiB), kGiB);
  EXPECT_DOUBLE_EQ(GpuMemoryMarginBytes(140 * kGiB), 7 * kGiB);

  TrainConfig config = DefaultTrainConfig();
  config.set_device(TrainConfig::CUDA);
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, 2).value();
  // Exactly the need free: refused, naming the margin.
  const absl::Status exact = CheckGpuMemory(config, need, 0, 1, need.DeviceBytes());
  EXPECT_TRUE(absl::IsInvalidArgument(exact)) << exact;
  EXPECT_THAT(exact.message(),
              AllOf(HasSubstr("1.0 GiB (5% or at least 1 GiB) is kept"), HasSubstr("batch_size=")));
  // A large GPU: 5% of it is kept, 1 GiB would not do.
  const double big_free = 100 * kGiB;
  const double room = big_free - GpuMemoryMarginBytes(big_free);  // 95 GiB
  const int fitting = static_cast<int>(room / need.DeviceBytes());
  EXPECT_TRUE(CheckGpuMemory(config, need, 0, fitting, big_free).ok());
  EXPECT_FALSE(CheckGpuMemory(config, need, 0, fitting + 1, big_free).ok());
  EXPECT_LT((fitting + 1) * need.DeviceBytes(), big_free - kGiB)
      << "the case must be one that a 1 GiB margin alone would pass";
}

// The host scratch is what the kernels allocate: the CPU attention's
// per-thread blocks, (2 x 32 + hs) x T floats per thread
// (model/cpu/attention_cpu.cc), and none for CUDA, whose kernels keep their
// scratch on the GPU. It was charged as threads x 2 x T^2 floats to both:
// 128 threads at T=4096 added 16 GiB of host memory to a GPU run.
TEST(MemoryBudgetTest, HostScratchIsWhatTheKernelsAllocate) {
  TrainConfig config = DefaultTrainConfig();
  config.set_block_size(1024);
  config.set_async_checkpoints(false);
  const double B = config.batch_size(), T = config.block_size();
  const double hs = config.n_embd() / config.n_head();
  const double batches = 2.0 * sizeof(int32_t) * B * T;
  const int threads = 16;
  EXPECT_DOUBLE_EQ(TrainingMemoryNeed(config, kVocab, threads).value().scratch_bytes,
                   batches + threads * (2 * 32 + hs) * T * sizeof(float));
  EXPECT_DOUBLE_EQ(CpuAttentionScratchBytes(threads, config.block_size(), static_cast<int>(hs)),
                   threads * (2 * 32 + hs) * T * sizeof(float));
  config.set_device(TrainConfig::CUDA);
  EXPECT_DOUBLE_EQ(TrainingMemoryNeed(config, kVocab, threads).value().scratch_bytes, batches);
}

// The CUDA kernels' own scratch (attention's per-head buffers and score
// gradients, cuBLASLt's workspace) lives on the GPU too: a GPU with room for
// the model and moments but not for it is refused before the first step,
// not failed inside it.
TEST(MemoryBudgetTest, CudaRunsCountTheKernelsScratchOnTheGpu) {
  TrainConfig config = DefaultTrainConfig();
  config.set_device(TrainConfig::CUDA);
  config.set_dropout(0.0f);
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, 2).value();
  const double B = config.batch_size(), T = config.block_size(), C = config.n_embd(),
               NH = config.n_head();
  const double lt_workspace = 32.0 * 1024 * 1024;
  // q, k, v, heads, dq, dk, dv; the scores' gradient; column-sum partials.
  const double floats = 7 * B * T * C + B * NH * T * T + 2 * 128 * 4 * C;
  // The embedding gradient's sort of positions by token (an estimate).
  const double token_sort = 7.0 * 4 * B * T + (1 << 20);
  EXPECT_DOUBLE_EQ(need.device_scratch_bytes, floats * sizeof(float) + token_sort + lt_workspace);
  EXPECT_GT(need.DeviceBytes(), need.model.TotalBytes() + need.optimizer_bytes);

  const double model_and_moments = need.model.TotalBytes() + need.optimizer_bytes;
  ASSERT_LT(model_and_moments + kGiB, 20 * kGiB);  // so the margin is 1 GiB
  const absl::Status s = CheckGpuMemory(config, need, 0, 1, model_and_moments + kGiB);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("kernel scratch"));

  // Attention-probability dropout keeps one more (B,NH,T,T) buffer.
  config.set_dropout_attention_probs(0.1f);
  EXPECT_DOUBLE_EQ(TrainingMemoryNeed(config, kVocab, 2).value().device_scratch_bytes -
                       need.device_scratch_bytes,
                   B * NH * T * T * sizeof(float));
  // bf16 operands: the largest projection's weight, input and output
  // gradient rounded to bf16 (2 bytes each), the widest being 4C or V.
  config.set_dropout_attention_probs(0.0f);
  config.set_precision(TrainConfig::BF16);
  const double widest = std::max(4.0 * C, static_cast<double>(kVocab));
  EXPECT_DOUBLE_EQ(TrainingMemoryNeed(config, kVocab, 2).value().device_scratch_bytes -
                       need.device_scratch_bytes,
                   2.0 * (widest * C + B * T * 4 * C + B * T * widest));
  // None on the CPU.
  EXPECT_EQ(TrainingMemoryNeed(DefaultTrainConfig(), kVocab, 2).value().device_scratch_bytes, 0);
}

// With the flash attention kernels a layer keeps one float per row, not its
// (B,NH,T,T) probabilities, and the kernels keep no per-head copies or score
// buffers: a run that only flash fits is not refused. Asked on the CPU, the
// flag changes nothing.
TEST(MemoryBudgetTest, FlashAttentionRunsCountARowFloatInsteadOfTheProbabilities) {
  TrainConfig config = DefaultTrainConfig();
  config.set_device(TrainConfig::CUDA);
  config.set_precision(TrainConfig::BF16);
  config.set_dropout_attention_probs(0.1f);
  const double B = config.batch_size(), T = config.block_size(), C = config.n_embd(),
               NH = config.n_head(), L = config.n_layer();
  const TrainingMemory materialised = TrainingMemoryNeed(config, kVocab, 2).value();
  const TrainingMemory flash =
      TrainingMemoryNeed(config, kVocab, 2, /*world_size=*/1, /*flash_attention=*/true).value();
  EXPECT_DOUBLE_EQ(materialised.model.activations_bytes - flash.model.activations_bytes,
                   L * (B * NH * T * T - B * NH * T) * sizeof(float));
  // Gone: q, k, v, heads, dq, dk, dv and two score buffers; added: a float
  // per row (the backward's delta).
  EXPECT_DOUBLE_EQ(materialised.device_scratch_bytes - flash.device_scratch_bytes,
                   (7 * B * T * C + 2 * B * NH * T * T - B * NH * T) * sizeof(float));
  EXPECT_EQ(flash.model.params_bytes, materialised.model.params_bytes);

  TrainConfig cpu = DefaultTrainConfig();
  EXPECT_EQ(TrainingMemoryNeed(cpu, kVocab, 2, 1, true).value().TotalBytes(),
            TrainingMemoryNeed(cpu, kVocab, 2).value().TotalBytes());
}

// No GPU here, or a build without CUDA: the rule says no, and asking does
// not fail. (On a GPU the flash kernel tests check the rule.)
TEST(MemoryBudgetTest, FlashAttentionRuleWithoutAGpuSaysNo) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is here";
  KernelOptions options;
  options.flash_attention = true;
  options.precision = MatmulPrecision::kBf16;
  EXPECT_FALSE(CudaFlashAttentionApplies(options, 64));
}

TEST(MemoryBudgetTest, RunThatFitsPasses) {
  const TrainConfig config = DefaultTrainConfig();
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, 2).value();
  EXPECT_TRUE(CheckTrainingMemory(config, need, 1, AvailableMemory{1e12, "test"}).ok());
}

TEST(MemoryBudgetTest, RefusalNamesNeededAvailableAndTheSizingFields) {
  TrainConfig config = DefaultTrainConfig();
  config.set_batch_size(2147483647);
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, 2).value();
  const absl::Status s =
      CheckTrainingMemory(config, need, 1, AvailableMemory{16.0 * (1 << 30), "MemAvailable"});
  ASSERT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), AllOf(HasSubstr("this run needs"), HasSubstr("PiB"),
                                 HasSubstr("16.0 GiB is available (MemAvailable)"),
                                 HasSubstr("batch_size=2147483647")));
}

TEST(MemoryBudgetTest, RanksOnOneNodeShareItsMemory) {
  const TrainConfig config = DefaultTrainConfig();
  const TrainingMemory need = TrainingMemoryNeed(config, kVocab, 1).value();
  const AvailableMemory room{1.5 * need.TotalBytes(), "test"};
  EXPECT_TRUE(CheckTrainingMemory(config, need, 1, room).ok());
  const absl::Status two = CheckTrainingMemory(config, need, 2, room);
  EXPECT_THAT(two.message(), HasSubstr("x 2 ranks on this node"));
}

TEST(MemoryBudgetTest, WithoutProcOnlyImpossibleSizesAreRefused) {
  TrainConfig config = DefaultTrainConfig();
  EXPECT_TRUE(
      CheckTrainingMemory(config, TrainingMemoryNeed(config, kVocab, 1).value(), 1, std::nullopt)
          .ok());
  config.set_batch_size(2147483647);
  config.set_block_size(1 << 20);
  EXPECT_FALSE(
      CheckTrainingMemory(config, TrainingMemoryNeed(config, kVocab, 1).value(), 1, std::nullopt)
          .ok());
}

TEST(MemoryBudgetTest, AvailableMemoryIsReadOnLinux) {
  const std::optional<AvailableMemory> available = AvailableMemoryNow();
  ASSERT_TRUE(available.has_value());
  EXPECT_GT(available->bytes, 0);
  EXPECT_FALSE(available->source.empty());
}

TEST(MemoryBudgetTest, FormatBytes) {
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1.5 * (1 << 30)), "1.5 GiB");
  EXPECT_EQ(FormatBytes(3.0 * (uint64_t{1} << 50)), "3.0 PiB");
}

}  // namespace
}  // namespace dropk
