#include "trainer/memory_budget.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/kernels.h"
#include "trainer/comm_backend.h"
#include "trainer/config.h"

namespace dropk {
namespace {

// The first line of `path`, or nullopt when it cannot be read.
std::optional<std::string> ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

// A byte count file of the cgroup filesystem; nullopt for "max" or unreadable.
std::optional<double> ReadBytes(const std::string& path) {
  const std::optional<std::string> line = ReadLine(path);
  uint64_t value = 0;
  if (!line || !absl::SimpleAtoi(*line, &value)) return std::nullopt;
  return static_cast<double>(value);
}

// MemAvailable from /proc/meminfo, in bytes.
std::optional<double> MemAvailable() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return static_cast<double>(kib) * 1024.0;
  }
  return std::nullopt;
}

// Headroom (limit - usage) under the tightest cgroup memory limit of this
// process, and the file that set it.
std::optional<AvailableMemory> CgroupHeadroom() {
  std::optional<AvailableMemory> best;
  auto consider = [&best](double limit, double usage, const std::string& source) {
    // A limit near 2^63 is v1's way of saying "none".
    if (limit >= static_cast<double>(uint64_t{1} << 60)) return;
    const double headroom = std::max(0.0, limit - usage);
    if (!best || headroom < best->bytes) best = AvailableMemory{headroom, source};
  };
  std::ifstream cgroups("/proc/self/cgroup");
  std::string line;
  while (std::getline(cgroups, line)) {
    // "0::/path" is v2; "N:memory:/path" (or "N:cpu,memory:...") is v1.
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    std::string path = line.substr(second + 1);
    if (controllers.empty()) {
      for (;;) {  // this cgroup and every ancestor may carry a limit
        std::string dir = "/sys/fs/cgroup";
        if (path != "/") dir.append(path);
        const std::optional<double> limit = ReadBytes(dir + "/memory.max");
        const std::optional<double> usage = ReadBytes(dir + "/memory.current");
        if (limit && usage) consider(*limit, *usage, dir + "/memory.max");
        const size_t slash = path.rfind('/');
        if (slash == 0 || slash == std::string::npos) break;  // the root was just read
        path.resize(slash);
      }
    } else if (absl::StrContains(absl::StrCat(",", controllers, ","), ",memory,")) {
      for (const std::string& dir :
           {"/sys/fs/cgroup/memory" + path, std::string("/sys/fs/cgroup/memory")}) {
        const std::optional<double> limit = ReadBytes(dir + "/memory.limit_in_bytes");
        const std::optional<double> usage = ReadBytes(dir + "/memory.usage_in_bytes");
        if (limit && usage) consider(*limit, *usage, dir + "/memory.limit_in_bytes");
      }
    }
  }
  return best;
}

}  // namespace

double TrainingMemory::TotalBytes() const {
  return model.TotalBytes() + optimizer_bytes + host_bytes + scratch_bytes + staging_params_bytes +
         staging_moments_bytes + device_scratch_bytes;
}

double TrainingMemory::DeviceBytes() const {
  return model.TotalBytes() + optimizer_bytes + device_scratch_bytes;
}

double TrainingMemory::HostOnlyBytes() const { return TotalBytes() - DeviceBytes(); }

absl::StatusOr<TrainingMemory> TrainingMemoryNeed(const TrainConfig& config, int vocab_size,
                                                  int threads, int world_size,
                                                  bool flash_attention) {
  const GptConfig shape{vocab_size, config.block_size(), config.n_layer(), config.n_head(),
                        config.n_embd()};
  flash_attention = flash_attention && config.device() == TrainConfig::CUDA;
  // The flash kernels keep each row's log-sum-exp (FlashAttentionSavedFloats).
  absl::StatusOr<GptFootprint> model =
      flash_attention ? Gpt::Footprint(shape, config.batch_size(),
                                       static_cast<double>(config.batch_size()) * config.n_head() *
                                           config.block_size())
                      : Gpt::Footprint(shape, config.batch_size());
  if (!model.ok()) return model.status();
  TrainingMemory need;
  need.model = *model;
  need.optimizer_bytes = 2 * model->params_bytes;
  // Resuming reads parameters and both moments into host vectors first;
  // otherwise one host copy (initial weights, then the final parameters).
  need.host_bytes = (config.resume().empty() ? 1 : 3) * model->params_bytes;
  if (config.async_checkpoints()) {
    // Each rank stages its slice of m and v; rank 0 the parameters too.
    need.staging_params_bytes = model->params_bytes;
    need.staging_moments_bytes =
        2 * std::ceil(model->params_bytes / sizeof(float) / std::max(world_size, 1)) *
        sizeof(float);
  }
  if (config.device() == TrainConfig::CUDA) {
    // Allocated by the kernels on the first step, not through the model: a
    // check without them passes runs that then fail inside that step.
    need.device_scratch_bytes = CudaKernelsScratchBytes(
        config.batch_size(), config.block_size(), config.n_embd(), config.n_head(), vocab_size,
        EffectiveDropout(config).attention_probs > 0, config.precision() == TrainConfig::BF16,
        flash_attention);
  }
  const double T = config.block_size();
  need.scratch_bytes = 2.0 * sizeof(int32_t) * config.batch_size() * T;  // inputs, targets
  if (config.device() != TrainConfig::CUDA) {
    // The CPU kernels' attention scratch; the CUDA kernels take none on the host.
    need.scratch_bytes +=
        CpuAttentionScratchBytes(threads, config.block_size(), config.n_embd() / config.n_head());
  }
  if (config.precision() == TrainConfig::BF16 && config.device() != TrainConfig::CUDA) {
    // The bf16 operands on the CPU: a bf16 copy of every weight (2 bytes a
    // parameter, an upper bound) and of the two operands of the largest
    // product, the LM head's (B*T, V) gradient against its (V, C) weight;
    // where oneDNN has no bf16 matmul (AVX2 CPUs), their fp32 widenings:
    // the right operand whole (a weight, or the (B*T, C) input), the left
    // in blocks of rows (model/cpu/bf16_matmul.h). Counted on every CPU,
    // an upper bound.
    const double rows = static_cast<double>(config.batch_size()) * T;
    const double widest = std::max(4.0 * config.n_embd(), static_cast<double>(vocab_size));
    need.scratch_bytes += model->params_bytes / 2 +
                          2.0 * (rows * widest + widest * config.n_embd()) +
                          CpuWidenedBf16ScratchBytes(rows, widest, config.n_embd());
  }
  return need;
}

std::optional<AvailableMemory> AvailableMemoryNow() {
  std::optional<AvailableMemory> available;
  if (const std::optional<double> bytes = MemAvailable()) {
    available = AvailableMemory{*bytes, "MemAvailable in /proc/meminfo"};
  }
  if (std::optional<AvailableMemory> cgroup = CgroupHeadroom()) {
    if (!available || cgroup->bytes < available->bytes) {
      available =
          AvailableMemory{cgroup->bytes, "the cgroup limit " + cgroup->source + " less its usage"};
    }
  }
  return available;
}

absl::Status CheckTrainingMemory(const TrainConfig& config, const TrainingMemory& need,
                                 int local_ranks, const std::optional<AvailableMemory>& available) {
  const double ranks = std::max(local_ranks, 1);
  const bool gpu = config.device() == TrainConfig::CUDA;
  const double per_rank = gpu ? need.HostOnlyBytes() : need.TotalBytes();
  const double total = (per_rank - need.staging_params_bytes) * ranks + need.staging_params_bytes;
  // Past half the address space nothing can be allocated, /proc or not.
  const double limit =
      available ? available->bytes : static_cast<double>(std::numeric_limits<size_t>::max() / 2);
  if (total <= limit) return absl::OkStatus();
  std::string message =
      gpu ? absl::StrCat("this run needs ", FormatBytes(per_rank),
                         " of host memory per rank (host copies ", FormatBytes(need.host_bytes),
                         ", batches and scratch ", FormatBytes(need.scratch_bytes))
          : absl::StrCat("this run needs ", FormatBytes(per_rank),
                         " of memory per rank (parameters ", FormatBytes(need.model.params_bytes),
                         ", gradients ", FormatBytes(need.model.grads_bytes), ", AdamW moments ",
                         FormatBytes(need.optimizer_bytes), ", activations ",
                         FormatBytes(need.model.activations_bytes), ", host copies ",
                         FormatBytes(need.host_bytes), ", batches and scratch ",
                         FormatBytes(need.scratch_bytes));
  const double staging = need.staging_params_bytes + need.staging_moments_bytes;
  if (staging > 0) {
    absl::StrAppend(&message, ", asynchronous checkpoint staging ", FormatBytes(staging),
                    " (async_checkpoints=false saves it)");
  }
  absl::StrAppend(&message, ")");
  if (ranks > 1)
    absl::StrAppend(&message, " x ", ranks, " ranks on this node = ", FormatBytes(total));
  if (available) {
    absl::StrAppend(&message, ", but ", FormatBytes(available->bytes), " is available (",
                    available->source, ")");
  } else {
    absl::StrAppend(&message, ", more than any address space holds");
  }
  absl::StrAppend(&message, "; lower batch_size=", config.batch_size(),
                  ", block_size=", config.block_size(), ", n_layer=", config.n_layer(),
                  " or n_embd=", config.n_embd());
  return absl::InvalidArgumentError(message);
}

int RanksSharingGpu(int local_ranks, int gpus, int cuda_device) {
  if (gpus <= 0 || cuda_device < 0 || cuda_device >= gpus || local_ranks <= cuda_device) return 1;
  return (local_ranks - cuda_device + gpus - 1) / gpus;
}

int RanksOnMyGpu(const std::vector<std::array<uint8_t, 16>>& gpu_uuids, int rank, int local_ranks,
                 int gpus, int cuda_device) {
  if (rank >= 0 && rank < static_cast<int>(gpu_uuids.size()) &&
      gpu_uuids[rank] != std::array<uint8_t, 16>{}) {
    return 1 + RanksSharingGpu(gpu_uuids, rank);
  }
  return RanksSharingGpu(local_ranks, gpus, cuda_device);
}

double GpuMemoryMarginBytes(double gpu_free_bytes) {
  return std::max(0.05 * gpu_free_bytes, 1024.0 * 1024.0 * 1024.0);
}

absl::Status CheckGpuMemory(const TrainConfig& config, const TrainingMemory& need, int cuda_device,
                            int ranks_on_device, double gpu_free_bytes) {
  if (config.device() != TrainConfig::CUDA || gpu_free_bytes < 0) return absl::OkStatus();
  const int sharing = std::max(1, ranks_on_device);
  const double margin = GpuMemoryMarginBytes(gpu_free_bytes);
  if (need.DeviceBytes() * sharing + margin <= gpu_free_bytes) return absl::OkStatus();
  const std::string shared = sharing > 1 ? absl::StrCat(" x ", sharing, " ranks sharing the GPU = ",
                                                        FormatBytes(need.DeviceBytes() * sharing))
                                         : "";
  return absl::InvalidArgumentError(absl::StrCat(
      "this run needs ", FormatBytes(need.DeviceBytes()), " of GPU memory per rank (parameters ",
      FormatBytes(need.model.params_bytes), ", gradients ", FormatBytes(need.model.grads_bytes),
      ", AdamW moments ", FormatBytes(need.optimizer_bytes), ", activations ",
      FormatBytes(need.model.activations_bytes), ", kernel scratch ",
      FormatBytes(need.device_scratch_bytes), ")", shared, ", but cuda device ", cuda_device,
      " has ", FormatBytes(gpu_free_bytes), " free, of which ", FormatBytes(margin),
      " (5% or at least 1 GiB) is kept for what the check cannot count (cuBLAS workspaces, "
      "allocation rounding, NCCL buffers); lower batch_size=",
      config.batch_size(), ", block_size=", config.block_size(), ", n_layer=", config.n_layer(),
      " or n_embd=", config.n_embd()));
}

std::string FormatBytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (!std::isfinite(bytes) || bytes < 0) return absl::StrCat(bytes, " B");
  int unit = 0;
  double value = bytes;
  while (value >= 1024 && unit + 1 < static_cast<int>(std::size(kUnits))) {
    value /= 1024;
    ++unit;
  }
  if (value >= 1024) return absl::StrFormat("%.3g B", bytes);  // past EiB
  if (unit == 0) return absl::StrFormat("%.0f B", value);
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

}  // namespace dropk
