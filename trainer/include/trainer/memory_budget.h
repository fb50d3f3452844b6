// How much memory a training run needs, how much the machine has, and the
// check dropk-train makes before allocating anything large.
//
// The need is computed from the model's own layout and buffer list
// (Gpt::Footprint), plus what the trainer adds: AdamW's moments, host copies
// of the parameters, input batches and per-thread scratch. Sizes are doubles,
// so shapes whose byte counts overflow 64 bits are sized (and refused) too.
#ifndef DROPK_TRAINER_MEMORY_BUDGET_H_
#define DROPK_TRAINER_MEMORY_BUDGET_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config.pb.h"
#include "model/gpt.h"

namespace dropk {

// The peak memory of one rank of a run, in bytes.
struct TrainingMemory {
  GptFootprint model;      // parameters, gradients, activations
  double optimizer_bytes;  // AdamW's first and second moments
  double host_bytes;       // host copies of the parameters (initial weights,
                           // final parameters; params and moments on resume)
  double scratch_bytes;    // input batches; on the CPU also the kernels' per-thread
                           // attention scratch (CpuKernelsScratchBytes) and bf16 operands
  // async_checkpoints' staging buffer (checkpoint/async_writer.h), a second
  // host copy of this rank's share of a checkpoint: the parameters (rank 0
  // only; counted once per node) and its slice of both moments.
  double staging_params_bytes = 0;
  double staging_moments_bytes = 0;
  // With device CUDA: the CUDA kernels' own scratch on the GPU
  // (CudaKernelsScratchBytes: attention's per-head buffers and score
  // gradients, cuBLASLt's workspace); 0 otherwise.
  double device_scratch_bytes = 0;
  double TotalBytes() const;  // of rank 0, the largest
  // With device CUDA: what lives on the GPU (parameters, gradients,
  // activations, moments, kernel scratch) and what stays on the host
  // (copies, batches, scratch, staging); their sum is TotalBytes().
  double DeviceBytes() const;
  double HostOnlyBytes() const;
};

// The need of one rank of `config` (rank 0's, the largest) over a vocabulary
// of vocab_size with `threads` compute threads, in a job of world_size
// ranks. With device CUDA and flash_attention (CudaFlashAttentionApplies for
// the run's kernel options and head size), attention keeps a float per row
// instead of (B,NH,T,T) probabilities per layer, and its kernel scratch no
// score buffers. InvalidArgument for a shape the model rejects.
absl::StatusOr<TrainingMemory> TrainingMemoryNeed(const TrainConfig& config, int vocab_size,
                                                  int threads, int world_size = 1,
                                                  bool flash_attention = false);

// Memory this process can still take: the smaller of /proc/meminfo's
// MemAvailable and, under a cgroup memory limit (v2 memory.max of this
// process's cgroup and its ancestors, or v1 memory.limit_in_bytes), the
// limit minus the usage. `source` names where the figure came from.
struct AvailableMemory {
  double bytes = 0;
  std::string source;
};
std::optional<AvailableMemory> AvailableMemoryNow();

// OK when `local_ranks` ranks of this need fit in `available` (the staged
// parameters counted once: only rank 0 holds them); else
// InvalidArgument naming the figure needed (and its parts), the figure
// available and its source, and the fields that size the run. When
// `available` is nullopt (no /proc) only sizes beyond any address space are
// refused. With device CUDA only the host part (HostOnlyBytes) is counted
// here; CheckGpuMemory checks the rest.
absl::Status CheckTrainingMemory(const TrainConfig& config, const TrainingMemory& need,
                                 int local_ranks, const std::optional<AvailableMemory>& available);

// The GPU memory CheckGpuMemory keeps back from `gpu_free_bytes`, for what
// it cannot count and what is allocated after it reads the free memory:
// cuBLAS's own workspaces, cudaMalloc's rounding of each buffer, kernel
// modules loaded on first use, NCCL's buffers, other processes. The larger
// of 5% of the free memory and 1 GiB.
double GpuMemoryMarginBytes(double gpu_free_bytes);

// With device CUDA: OK when `ranks_on_device` ranks' need.DeviceBytes() plus
// GpuMemoryMarginBytes fit in gpu_free_bytes, the free memory of this rank's
// GPU `cuda_device` (negative: unknown, then OK: the allocation itself
// reports). Ranks that share a GPU each measure the free memory before any
// of them allocates, so alone each would pass. Else InvalidArgument naming
// the GPU memory needed and its parts, the ranks sharing the GPU, the GPU,
// its free memory and the margin, and the fields that size the run. OK for
// any other device.
absl::Status CheckGpuMemory(const TrainConfig& config, const TrainingMemory& need, int cuda_device,
                            int ranks_on_device, double gpu_free_bytes);

// How many of a node's `local_ranks` ranks use GPU `cuda_device` when rank r
// takes GPU r % gpus (TrainingKernelOptions); at least 1. Right only where
// every rank sees all of the node's GPUs: RanksOnMyGpu's fallback.
int RanksSharingGpu(int local_ranks, int gpus, int cuda_device);

// How many ranks of the job use this rank's GPU, this rank included (at
// least 1), for CheckGpuMemory. `gpu_uuids` holds every rank's GPU UUID in
// rank order (ExchangeGpuUuids; all zeros where unknown) and `rank` is this
// rank's index in it. Counted by UUID when this rank's is known, so ranks
// that each see only their own GPU as device 0 (srun --gpus-per-task=1, or
// CUDA_VISIBLE_DEVICES set per rank) are not taken for ranks sharing it;
// else by RanksSharingGpu(local_ranks, gpus, cuda_device). Pure.
int RanksOnMyGpu(const std::vector<std::array<uint8_t, 16>>& gpu_uuids, int rank, int local_ranks,
                 int gpus, int cuda_device);

// Human-readable bytes: "512 B", "3.1 GiB", "2.9 TiB", "1.2e+25 B".
std::string FormatBytes(double bytes);

}  // namespace dropk

#endif  // DROPK_TRAINER_MEMORY_BUDGET_H_
