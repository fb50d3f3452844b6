// libFuzzer target over a training config as a user writes it: a
// text-format TrainConfig file (trainer/config.h's parsing and
// ValidateTrainConfig) or --field=value flags (SetTrainConfigField), then,
// for a config that validates, the memory sizing every run does before it
// allocates (trainer/memory_budget.h). Any input must give a config or an
// error; under UBSan that includes no overflow in the size arithmetic of
// the extreme shapes validation lets through.
//
// Input: one mode byte, then the text.
//   mode even: the text is a config file, merged over the defaults.
//   mode odd:  each line "name=value" is one flag.
//
// Built with -DDROPK_FUZZ=ON under clang; run by tools/run_fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "google/protobuf/text_format.h"
#include "trainer/config.h"
#include "trainer/memory_budget.h"
#include "quiet_protobuf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  dropk::TrainConfig config = dropk::DefaultTrainConfig();
  if (data[0] & 1) {
    const std::vector<std::string> lines = absl::StrSplit(text, '\n');
    for (const std::string& line : lines) {
      const size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      if (!dropk::SetTrainConfigField(line.substr(0, eq), line.substr(eq + 1), &config).ok()) {
        return 0;
      }
    }
  } else {
    dropk::TrainConfig file;
    if (!google::protobuf::TextFormat::ParseFromString(text, &file)) return 0;
    config.MergeFrom(file);
  }
  if (!dropk::ValidateTrainConfig(config).ok()) return 0;
  for (const int vocab : {1, 65, 50304}) {
    absl::StatusOr<dropk::TrainingMemory> need =
        dropk::TrainingMemoryNeed(config, vocab, /*threads=*/2, /*world_size=*/3);
    if (!need.ok()) continue;
    if (!(need->TotalBytes() >= 0)) std::abort();  // NaN or negative: the sizing broke
    dropk::CheckTrainingMemory(config, *need, 2, dropk::AvailableMemory{64e9, "fuzz"})
        .IgnoreError();
    dropk::CheckGpuMemory(config, *need, 0, 2, 80e9).IgnoreError();
  }
  return 0;
}
