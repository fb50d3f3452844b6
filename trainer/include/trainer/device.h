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
// CUDA; any precision but FP32 until the kernels implement it.
std::vector<std::string> DeviceProblems(const TrainConfig& config);

}  // namespace dropk

#endif  // DROPK_TRAINER_DEVICE_H_
