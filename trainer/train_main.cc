// dropk-train: parses the config, runs the training job, prints a sample.
// Exit codes: 0 done, 2 a bad config value or argument, 1 any other failure.
#include <iostream>

#include "trainer/config.h"
#include "trainer/trainer.h"

int main(int argc, char** argv) {
  absl::StatusOr<dropk::TrainConfig> config = dropk::LoadTrainConfig(argc, argv);
  if (!config.ok()) {
    if (dropk::IsHelpRequest(config.status())) {
      std::cout << config.status().message();
      return 0;
    }
    std::cerr << "dropk-train: " << config.status().message() << "\n";
    return 2;
  }
  if (absl::Status s = dropk::ValidateTrainConfig(*config); !s.ok()) {
    std::cerr << "dropk-train: " << s.message() << "\n";
    return 2;
  }
  absl::StatusOr<dropk::TrainSummary> summary = dropk::RunTraining(*config, std::cerr);
  if (!summary.ok()) {
    std::cerr << "dropk-train: " << summary.status().message() << "\n";
    const bool config_error = absl::IsInvalidArgument(summary.status()) ||
                              absl::IsNotFound(summary.status());
    return config_error ? 2 : 1;
  }
  if (summary->stopped_by_signal) {
    std::cerr << "dropk-train: stopped by signal after step " << summary->steps
              << ", checkpoint saved; resume with --resume=latest\n";
    return 0;
  }
  std::cerr << "dropk-train: done, " << summary->steps << " steps";
  if (summary->val_loss) std::cerr << ", val loss " << *summary->val_loss;
  std::cerr << ", " << summary->elapsed_s << " s\n";
  if (!summary->sample.empty()) std::cout << summary->sample << "\n";
  return 0;
}
