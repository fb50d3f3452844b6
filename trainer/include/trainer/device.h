// Which device a training run uses, read from its config: the one place the
// trainer maps TrainConfig.device and .precision onto the model's Device and
// the communicator's MemoryKind, so the loop holds no device literals.
#ifndef DROPK_TRAINER_DEVICE_H_
#define DROPK_TRAINER_DEVICE_H_

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "config.pb.h"
#include "model/kernels.h"

namespace dropk {

// The device config.device names (DEVICE_UNSPECIFIED means CPU).
Device TrainingDevice(const TrainConfig& config);

// The memory kind of buffers allocated by kernels of `device`, as the
// communicator needs it to read them.
MemoryKind MemoryKindOf(Device device);

// What this build cannot do of config.device and config.precision, one
// line each naming the field (empty when it can): CUDA in a build without
// CUDA; TF32 on the CPU (BF16 runs on every CPU: through oneDNN, or
// widened to fp32 where oneDNN has no bf16 matmul).
std::vector<std::string> DeviceProblems(const TrainConfig& config);

// The matmul precision config.precision names (UNSPECIFIED means FP32).
MatmulPrecision TrainingPrecision(const TrainConfig& config);

// How this rank builds its kernels: num_threads host threads, the config's
// precision, and on CUDA the GPU local_rank mod the node's GPU count.
KernelOptions TrainingKernelOptions(const TrainConfig& config, int num_threads, int local_rank);

}  // namespace dropk

#endif  // DROPK_TRAINER_DEVICE_H_
