#include "trainer/metrics.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dropk {

absl::StatusOr<MetricsLog> MetricsLog::Create(const std::string& path) {
  MetricsLog log(path);
  log.out_.open(path, std::ios::out | std::ios::trunc);
  if (!log.out_) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return log;
}

absl::StatusOr<MetricsLog> MetricsLog::OpenForResume(const std::string& path, int64_t resume_step) {
  std::string kept;
  {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
          j["step"].get<int64_t>() < resume_step) {
        kept += line + "\n";
      }
    }
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::out | std::ios::trunc);
    out << kept;
    out.flush();
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot replace ", path));
  }
  MetricsLog log(path);
  log.out_.open(path, std::ios::out | std::ios::app);
  if (!log.out_) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return log;
}

absl::Status MetricsLog::Append(const MetricsRow& row) {
  nlohmann::ordered_json j;
  j["step"] = row.step;
  if (row.train_loss) j["train_loss"] = *row.train_loss;
  if (row.eval_train_loss) j["eval_train_loss"] = *row.eval_train_loss;
  if (row.val_loss) j["val_loss"] = *row.val_loss;
  j["lr"] = row.lr;
  j["tokens_per_s"] = std::round(row.tokens_per_s * 10) / 10;
  j["elapsed_s"] = std::round(row.elapsed_s * 1000) / 1000;
  out_ << j.dump() << '\n';
  out_.flush();
  if (!out_) return absl::DataLossError(absl::StrCat("writing ", path_, " failed"));
  return absl::OkStatus();
}

std::string FormatDuration(double seconds) {
  if (seconds < 60) return absl::StrFormat("%.1fs", seconds);
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm%02ds", s / 3600, (s / 60) % 60, s % 60);
}

std::string ProgressLine(const MetricsRow& row, int64_t max_steps) {
  std::string line = absl::StrFormat("step %d/%d", row.step, max_steps);
  if (row.train_loss) absl::StrAppendFormat(&line, " | loss %.4f", *row.train_loss);
  absl::StrAppendFormat(&line, " | lr %.2e | %.0f tok/s | %s elapsed | ETA %s", row.lr,
                        row.tokens_per_s, FormatDuration(row.elapsed_s), FormatDuration(row.eta_s));
  if (row.val_loss) {
    absl::StrAppendFormat(&line, " | eval train %.4f val %.4f", row.eval_train_loss.value_or(0),
                          *row.val_loss);
  }
  return line;
}

}  // namespace dropk
