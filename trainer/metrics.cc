#include "trainer/metrics.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dropk {

namespace {

// Refuses an existing `path` that is not a regular file: a stream opened on a
// FIFO waits for the other end, maybe for ever.
absl::Status CheckRegularOrMissing(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", path, ": not a regular file"));
  }
  return absl::OkStatus();
}

std::string CannotWrite(const std::string& path) {
  return absl::StrCat("cannot write ", path, ": ", std::strerror(errno));
}

// Whether `path` names anything, a dangling link included.
bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

std::string KeptEarlierLogPath(const std::string& path, std::time_t last_write,
                               bool (*taken)(const std::string& candidate),
                               const std::string& label) {
  std::string stem = path;
  if (absl::EndsWith(stem, ".jsonl")) stem.resize(stem.size() - std::string(".jsonl").size());
  std::tm utc = {};
  ::gmtime_r(&last_write, &utc);
  char stamp[32] = {};
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
  const std::string base = absl::StrCat(stem, ".", label, "-", stamp);
  std::string candidate = base + ".jsonl";
  for (int n = 2; taken(candidate); ++n) candidate = absl::StrCat(base, "-", n, ".jsonl");
  return candidate;
}

absl::StatusOr<MetricsLog> MetricsLog::Create(const std::string& path, std::ostream& log) {
  if (absl::Status s = CheckRegularOrMissing(path); !s.ok()) return s;
  // An earlier run's log (another checkpoint_dir, or none saved, with this
  // out_dir) was truncated here, its metrics lost without a word.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && st.st_size > 0) {
    const std::string kept = KeptEarlierLogPath(path, st.st_mtime, Exists);
    if (std::rename(path.c_str(), kept.c_str()) != 0) {
      return absl::PermissionDeniedError(absl::StrCat("cannot keep the earlier run's ", path,
                                                      " as ", kept, ": ", std::strerror(errno)));
    }
    log << "dropk-train: " << path << " held an earlier run's metrics; kept as " << kept
        << std::endl;
  }
  MetricsLog log_file(path);
  log_file.out_.open(path, std::ios::out | std::ios::trunc);
  if (!log_file.out_) return absl::PermissionDeniedError(CannotWrite(path));
  return log_file;
}

absl::StatusOr<MetricsLog> MetricsLog::OpenForResume(const std::string& path, int64_t resume_step,
                                                     int64_t latest_step, std::ostream& log) {
  const std::string tmp = path + ".tmp";
  for (const std::string& p : {path, tmp}) {
    if (absl::Status s = CheckRegularOrMissing(p); !s.ok()) return s;
  }
  std::string kept;
  int not_rows = 0, first_not_row = 0;  // whole lines (ended by '\n') that are not rows
  int64_t dropped_rows = 0;             // rows of steps from resume_step on
  {
    std::ifstream in(path);
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("step") && j["step"].is_number_integer()) {
        if (j["step"].get<int64_t>() < resume_step) {
          kept += line + "\n";
        } else {
          ++dropped_rows;
        }
      } else if (!in.eof() && not_rows++ == 0) {  // eof: the last line, torn by a crash
        first_not_row = number;
      }
    }
  }
  {
    std::ofstream out(tmp, std::ios::out | std::ios::trunc);
    out << kept;
    out.flush();
    if (!out) return absl::PermissionDeniedError(CannotWrite(tmp));
  }
  // Such lines were dropped without a word, and so were the rows of a
  // later branch when a run went back to an older checkpoint (they are not
  // written again: the resumed run takes another course). The log is kept
  // as it was.
  const bool going_back = resume_step < latest_step && dropped_rows > 0;
  if (not_rows > 0 || going_back) {
    struct stat st;
    const std::time_t last_write =
        ::stat(path.c_str(), &st) == 0 ? st.st_mtime : std::time(nullptr);
    const std::string aside = KeptEarlierLogPath(path, last_write, Exists, "before-resume");
    if (std::rename(path.c_str(), aside.c_str()) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot keep ", path, " as ", aside, ": ", std::strerror(errno)));
    }
    if (not_rows > 0) {
      log << "dropk-train: " << path << " line " << first_not_row << " is not a metrics row ("
          << not_rows << " such line(s)); the log as it was is kept as " << aside << std::endl;
    }
    if (going_back) {
      log << "dropk-train: resuming at step " << resume_step << ", before the checkpoint LATEST "
          << "names (step " << latest_step << "): " << path << " keeps its rows before step "
          << resume_step << "; the log as it was (" << dropped_rows << " row(s) from step "
          << resume_step << " on) is kept as " << aside << std::endl;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot replace ", path));
  }
  MetricsLog log_file(path);
  log_file.out_.open(path, std::ios::out | std::ios::app);
  if (!log_file.out_) return absl::PermissionDeniedError(CannotWrite(path));
  return log_file;
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
  if (!out_) {
    return absl::DataLossError(absl::StrCat("writing ", path_, " failed: ", std::strerror(errno)));
  }
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
