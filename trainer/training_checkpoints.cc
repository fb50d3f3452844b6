#include "trainer/training_checkpoints.h"

#include <algorithm>
#include <atomic>
#include <ctime>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <set>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/ignored_signal.h"
#include "base/path_status.h"
#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/text_format.h"
#include "config_text.h"
#include "trainer/config.h"

namespace dropk {
namespace {

namespace pb = google::protobuf;

std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
// When the first stop signal came (CLOCK_MONOTONIC, ns).
std::atomic<int64_t> g_first_stop_ns{0};
static_assert(std::atomic<int64_t>::is_always_lock_free);

// How long after the first stop signal another one is taken as the same
// stop. GNU timeout sends its signal to the child and then to the child's
// process group, so one `timeout 1h dropk-train ...` stop came as two
// SIGTERMs microseconds apart, and the second killed the run unsaved
// (exit 143, the steps since the last save lost) 1 time in 5.
constexpr int64_t kSameStopNs = 1'000'000'000;

// CLOCK_MONOTONIC in ns; async-signal-safe.
int64_t MonotonicNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

extern "C" void OnStopSignal(int signo) {
  const int64_t now = MonotonicNs();
  // Set before the signal is: a signal between the two is still the first's.
  int64_t unset = 0;
  g_first_stop_ns.compare_exchange_strong(unset, now);
  // The first signal is the one kept (StopSignal names it in the stop line).
  int none = 0;
  if (g_stop_signal.compare_exchange_strong(none, signo)) return;
  // A second signal, past the first's echo: give up on the graceful path.
  if (now - g_first_stop_ns.load() >= kSameStopNs) {
    std::signal(signo, SIG_DFL);
    std::raise(signo);
  }
}

// What --resume=PATH names: one checkpoint, or a directory of them to try
// newest first.
struct ResumeTarget {
  std::string root;     // the checkpoint, or the checkpoints directory
  bool latest = false;  // root is a checkpoints directory
};

// Resolves --resume=PATH as `dropk ckpt` resolves its PATH: a checkpoint
// (holds manifest.pb, or model.data: a damaged one, reported as corruption
// when opened), a checkpoints directory (holds LATEST or step-*), or a run
// directory (its checkpoints/). A missing path is NotFound and any other
// path InvalidArgument (usage, exit 2), naming it. Before, both read as
// corruption: "no checkpoint verifies: ... manifest.pb: stat: ..." (exit 1).
// A step number (--resume=40) that is not a path names the checkpoint of
// that step in `checkpoints_dir`, to pass instead.
absl::StatusOr<ResumeTarget> ResolveResumePath(const std::string& path,
                                               const std::string& checkpoints_dir, Env* fs) {
  const std::string flag = absl::StrCat("--resume=", path);
  const std::string kinds =
      "name a checkpoint (CHECKPOINT_DIR/step-N), a checkpoints directory, a run directory (its "
      "checkpoints/), or latest";
  absl::StatusOr<std::filesystem::file_status> status = PathStatus(path, flag);
  if (!status.ok()) return status.status();
  if (!std::filesystem::exists(*status)) {
    const bool meant_latest = absl::AsciiStrToLower(path) == "latest";
    int64_t step = -1;
    if (!meant_latest && absl::SimpleAtoi(path, &step) && step >= 0) {
      return absl::NotFoundError(absl::StrCat(
          flag, ": does not exist; a step's checkpoint is named by its directory: --resume=",
          (std::filesystem::path(checkpoints_dir) / CheckpointDirName(step)).string()));
    }
    return absl::NotFoundError(absl::StrCat(
        flag, ": does not exist; ",
        meant_latest ? "--resume=latest (lower case) resumes from the newest checkpoint of "
                       "checkpoint_dir"
                     : kinds));
  }
  if (!std::filesystem::is_directory(*status)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": not a directory; ", kinds));
  }
  const auto holds = [&](const std::string& name) { return fs->FileExists(path + "/" + name); };
  if (holds(kManifestFileName)) return ResumeTarget{path, false};
  if (holds(kLatestFileName)) return ResumeTarget{path, true};
  std::error_code ec;
  if (std::filesystem::is_directory(std::filesystem::path(path) / "checkpoints", ec)) {
    return ResumeTarget{path + "/checkpoints", true};
  }
  if (holds(kModelDataFileName)) return ResumeTarget{path, false};
  if (!CheckpointCandidates(path, nullptr, fs).empty()) return ResumeTarget{path, true};
  return absl::InvalidArgumentError(absl::StrCat(
      flag, ": holds no checkpoint (no ", kManifestFileName, ", ", kLatestFileName,
      ", step-* or checkpoints/); ", kinds));
}

// The checkpoints directory that holds what resume_from names.
std::filesystem::path CheckpointsDirHolding(const ResumeTarget& resume_from) {
  if (resume_from.latest) return resume_from.root;
  // Canonical, so that "step-N/", "step-N/." and links name step-N's parent.
  std::error_code ec;
  const std::filesystem::path checkpoint = std::filesystem::canonical(resume_from.root, ec);
  return ec ? std::filesystem::path() : checkpoint.parent_path();
}

// A resume from a checkpoint outside checkpoint_dir into a checkpoint_dir
// that already holds checkpoints would mix two runs there, as a fresh start
// would: `--resume=runA/checkpoints/step-10 --out_dir=runB` saved runA's
// continuation beside runB's own step-*, pointed LATEST at it and let
// keep_last delete runB's checkpoints (and a later save of the same step
// replace one). InvalidArgument (exit 2) naming both; OK otherwise.
absl::Status RefuseResumingIntoAnotherRun(const TrainConfig& config,
                                          const ResumeTarget& resume_from, Env* env) {
  const std::string own = CheckpointsDirOf(config);
  const std::vector<std::string> held = CheckpointCandidates(own, nullptr, env);
  if (held.empty()) return absl::OkStatus();
  std::error_code ec;
  // (An error, such as a path that no longer exists, reads as not the same.)
  if (std::filesystem::equivalent(CheckpointsDirHolding(resume_from), own, ec)) {
    return absl::OkStatus();
  }
  const std::string others =
      held.size() == 1 ? "" : absl::StrCat(" and ", held.size() - 1, " more");
  return absl::InvalidArgumentError(absl::StrCat(
      "--resume=", config.resume(), ": resumes from outside checkpoint_dir ", own,
      ", which already holds checkpoints (", held.front(), others,
      "); saving this run there would mix it with theirs and let keep_last delete them: pass "
      "--resume=latest to continue the run in ",
      own, ", or give this run its own --out_dir (or --checkpoint_dir)"));
}

// Whether `now` is other data than the checkpoint's `recorded`: other token
// counts, or other tokens. Where both record the tokens' checksum, that
// decides, so the same tokens split into other shards or prepared again
// (another dataset id) are the same data: batches are drawn from the
// tokens alone. Otherwise dataset ids are compared where both are known (0:
// prepared before ids, told apart by token counts alone).
bool DataChanged(const DataIdentity& recorded, const DataIdentity& now) {
  if (recorded.train_tokens() != now.train_tokens() || recorded.val_tokens() != now.val_tokens()) {
    return true;
  }
  if (recorded.has_tokens_crc32c() && now.has_tokens_crc32c()) {
    return recorded.tokens_crc32c() != now.tokens_crc32c();
  }
  return recorded.dataset_id() != 0 && now.dataset_id() != 0 &&
         recorded.dataset_id() != now.dataset_id();
}

// A warning naming `newer`, a checkpoint newer than the one LATEST names
// in `root` (NewerCheckpointThanLatest), which this run resumed from at
// `resumed_step`: --resume=latest passed it over in silence, and this run's
// saves then replaced or deleted it.
std::string NewerThanLatestWarning(const std::string& newer, const std::string& root,
                                   int64_t resumed_step) {
  const int64_t step = ParseStepDirName(std::filesystem::path(newer).filename().string());
  return absl::StrCat(
      "dropk-train: warning: ", newer, " (step ", step, ") is newer than the checkpoint ", root,
      "/", kLatestFileName, " names, and looks complete: a save cut off before it updated ",
      kLatestFileName, ", or a run that went on from an older checkpoint; resumed from ",
      kLatestFileName, "'s step ", resumed_step,
      " as it says, and this run's saves may replace or ", "delete ", newer,
      ". To go on from step ", step, " instead, stop this run, check it with ",
      "`dropk ckpt verify ", newer, "` and pass --resume=", newer, "\n");
}

// A tokenizer's kind, and its code point count where it has code points
// (CHAR): "BYTE", "CHAR, 65 code points".
std::string DescribeTokenizer(const Tokenizer& tokenizer) {
  if (tokenizer.kind() != Tokenizer::CHAR) return Tokenizer::Kind_Name(tokenizer.kind());
  return absl::StrCat(Tokenizer::Kind_Name(tokenizer.kind()), ", ", tokenizer.code_points_size(),
                      " code points");
}

// "2 rank(s) x batch_size=4 x gradient_accumulation_steps=1 x block_size=64":
// how a run of `config` on `world_size` ranks makes up its global batch.
std::string DescribeGlobalBatch(const TrainConfig& config, int world_size) {
  return absl::StrCat(world_size, " rank(s) x batch_size=", config.batch_size(),
                      " x gradient_accumulation_steps=", config.gradient_accumulation_steps(),
                      " x block_size=", config.block_size());
}

// Sequences one optimizer step trains on, over all ranks.
int64_t SequencesPerStep(const TrainConfig& config, int world_size) {
  return static_cast<int64_t>(world_size) * config.batch_size() *
         config.gradient_accumulation_steps();
}

// The flags that give a run of `now` on `world_size` ranks `sequences` per
// step, changing one of batch_size and gradient_accumulation_steps where
// that suffices: "--batch_size=4 or --gradient_accumulation_steps=2".
std::string FlagsKeepingGlobalBatch(const TrainConfig& now, int world_size, int64_t sequences) {
  if (sequences % world_size != 0) {
    return absl::StrCat("no batch_size x gradient_accumulation_steps on ", world_size,
                        " rank(s) keeps it (its ", sequences,
                        " sequences per step do not divide by ", world_size, ")");
  }
  const int64_t per_rank = sequences / world_size;
  std::vector<std::string> flags;
  if (per_rank % now.gradient_accumulation_steps() == 0) {
    flags.push_back(absl::StrCat("--batch_size=", per_rank / now.gradient_accumulation_steps()));
  }
  if (per_rank % now.batch_size() == 0) {
    flags.push_back(absl::StrCat("--gradient_accumulation_steps=", per_rank / now.batch_size()));
  }
  if (flags.empty()) {
    flags.push_back(absl::StrCat("--batch_size=", per_rank, " --gradient_accumulation_steps=1"));
  }
  return absl::StrCat("pass ", absl::StrJoin(flags, " or "));
}

// One log line when resuming `checkpoint` (written by `checkpoint_ranks`)
// as `now` on `world_size` ranks trains on another number of tokens per
// step than the checkpoint's run did, naming both and the flags that keep
// the checkpoint's; "" when they are equal. batch_size is per rank, so
// resuming on another number of ranks changes it unless a flag does too.
std::string GlobalBatchChangeLine(const TrainConfig& checkpoint, int checkpoint_ranks,
                                  const TrainConfig& now, int world_size) {
  const int64_t before = SequencesPerStep(checkpoint, checkpoint_ranks);
  const int64_t after = SequencesPerStep(now, world_size);
  // A manifest's config is not validated: one without a batch to speak of
  // (0: a config that does not record it) has no figure to compare with.
  if (checkpoint.batch_size() <= 0 || checkpoint.gradient_accumulation_steps() <= 0 ||
      before * checkpoint.block_size() == after * now.block_size()) {
    return "";
  }
  return absl::StrCat("dropk-train: warning: resume: the global batch changes from ",
                      before * checkpoint.block_size(), " tokens per step (",
                      DescribeGlobalBatch(checkpoint, checkpoint_ranks), ") to ",
                      after * now.block_size(), " (", DescribeGlobalBatch(now, world_size),
                      "); to keep ", before * checkpoint.block_size(), " on ", world_size,
                      " rank(s), ", FlagsKeepingGlobalBatch(now, world_size, before), "\n");
}

}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  // A signal the launcher set to be ignored stays ignored: `nohup` (SIGHUP)
  // and a script's background job (SIGINT) mean the run should outlive them.
  const auto install = [&action](int signo) {
    if (!SignalIgnoredAtStart(signo)) sigaction(signo, &action, nullptr);
  };
  sigaction(SIGTERM, &action, nullptr);
  install(SIGINT);
  // mpirun kills the ranks a second after its own SIGTERM, too soon to save
  // a large checkpoint, but forwards SIGUSR1 to every rank: a launcher's
  // script passes its warning on as SIGUSR1 (deploy/slurm/train.sbatch).
  sigaction(SIGUSR1, &action, nullptr);
  // A dropped ssh session or closed terminal (SIGHUP) stops the run the same
  // way, saved, instead of killing it with its steps since the last save.
  install(SIGHUP);
  // A closed pipe on stdout or stderr (`dropk-train ... | head`) made the
  // next log line kill the run (SIGPIPE), unsaved and silent; the write now
  // fails instead and training goes on.
  std::signal(SIGPIPE, SIG_IGN);
}

bool StopRequested() { return g_stop_signal.load() != 0; }

int StopSignal() { return g_stop_signal.load(); }

std::string StoppedBySignalLine(int signo, int64_t steps, int world_size,
                                const std::string& out_dir,
                                const std::vector<std::string>& failures) {
  std::string line = steps == 0
                         ? "dropk-train: stopped by signal before the first step; nothing was saved"
                         : absl::StrCat("dropk-train: stopped by signal after step ", steps,
                                        ", checkpoint saved; resume with --resume=latest");
  // The process cannot tell who sent it; it can tell what else it knows.
  if (signo == SIGTERM && world_size > 1) {
    if (!failures.empty()) {
      absl::StrAppend(&line, "; the signal was a SIGTERM, and ", out_dir,
                      "/failures recorded a failure since this run started (", failures.back(),
                      "): mpirun may have sent it on ending the job after that failure");
    } else {
      absl::StrAppend(&line, "; the signal was a SIGTERM: from a user or a scheduler, or from ",
                      "mpirun ending the job after another rank failed (see that rank's report ",
                      "or ", out_dir, "/failures/)");
    }
  }
  return line;
}

std::string DescribeData(const DataIdentity& data) {
  return absl::StrCat("dataset id ",
                      data.dataset_id() == 0 ? "none" : absl::StrCat(data.dataset_id()), ", ",
                      data.train_tokens(), " train and ", data.val_tokens(), " val tokens");
}

namespace {

// A checkpoint of checkpoints_dir that a newer dropk wrote (its manifest
// declares a format version this build cannot read) was skipped like a
// corrupt one, and this run's saves then replaced it (the same step's
// directory) or keep_last deleted it: going back to an older build lost the
// run's newest checkpoint. Refused before anything is loaded, naming it.
absl::Status RefuseNewerFormatCheckpoints(const std::string& checkpoints_dir, Env* env) {
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(checkpoints_dir);
  if (!names.ok()) return absl::OkStatus();  // CheckpointCandidates names it
  std::sort(names->begin(), names->end());
  for (const std::string& name : *names) {
    if (ParseStepDirName(name) < 0) continue;
    const std::string dir = checkpoints_dir + "/" + name;
    absl::StatusOr<std::string> bytes =
        ReadSmallFile(env, dir + "/" + kManifestFileName, kMaxManifestBytes);
    if (!bytes.ok()) continue;  // judged, and named, as a candidate
    if (const uint32_t version = DeclaredFormatVersion(*bytes);
        version > kCheckpointFormatVersion) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--resume: checkpoint ", dir, " was written by a newer dropk (checkpoint format version ",
          version, "; this build reads ", kOldestReadableFormatVersion, " to ",
          kCheckpointFormatVersion,
          "), and this run's saves would replace or delete it; resume "
          "with the dropk that wrote it, or move it out of ",
          checkpoints_dir, " first"));
    }
  }
  return absl::OkStatus();
}

// A checkpoint that this run may not read (a file or directory at mode 000,
// another user's: PermissionDenied from the checkpoint reader) was skipped
// like a corrupt one, and this run's save of its step then replaced it. It
// is the operator's to fix: refused, naming the checkpoint, the file and the
// system's reason. `unreadable` is the reader's status for checkpoint `dir`.
absl::Status RefuseUnreadableCheckpoint(const std::string& dir, const absl::Status& unreadable) {
  const std::string parent = dir.substr(0, dir.find_last_of('/'));
  return absl::InvalidArgumentError(absl::StrCat(
      "--resume: ", unreadable.message(),
      "; a checkpoint this run may not read is not passed over like a corrupt one, since this "
      "run's saves would replace or delete it: give the run's user read access to ",
      dir, " and its files, or move it out of ", parent, " first"));
}

// A LATEST that this run may not read (mode 000, another user's) was
// passed over with the step-* directories tried instead, and this run's
// first save then replaced it: the checkpoint it named may not be the one
// resumed from. Refused like an unreadable checkpoint, naming LATEST, the
// system's reason and the fix; OK when LATEST is readable or missing (other
// problems with it are named as skipped).
absl::Status RefuseUnreadableLatest(const std::string& checkpoints_dir, Env* env) {
  const std::string latest_path = checkpoints_dir + "/" + kLatestFileName;
  if (!env->FileExists(latest_path)) return absl::OkStatus();
  absl::StatusOr<std::string> latest = ReadLatestFile(latest_path, env);
  if (!absl::IsPermissionDenied(latest.status())) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--resume: ", latest.status().message(),  // "DIR/LATEST: open: Permission denied"
      "; a ", kLatestFileName,
      " this run may not read is not passed over, since it names the checkpoint to resume from "
      "and this run's saves would replace it: give the run's user read access to ",
      latest_path, ", or remove it to resume from the newest checkpoint of ", checkpoints_dir,
      " that verifies"));
}

}  // namespace

absl::StatusOr<ResumePoint> MaybeResume(const TrainConfig& config, const Tokenizer& tokenizer,
                                        const DataIdentity& data, Gpt& gpt,
                                        AdamWOptimizer& optimizer, int world_size,
                                        std::ostream& log, Env* env) {
  ResumePoint point;
  std::vector<std::string> candidates;
  std::vector<std::string> skipped;
  Env* fs = env != nullptr ? env : Env::Default();
  if (config.resume().empty()) {
    // A fresh start beside another run's checkpoints would interleave the two
    // runs' step-* directories, point LATEST (and a watching dropk-serve) back
    // at step 0, and let keep_last delete the old run's checkpoints.
    const std::string dir = CheckpointsDirOf(config);
    candidates = CheckpointCandidates(dir, nullptr, env);
    if (candidates.empty()) return point;
    // InvalidArgument: the command needs changing (exit 2); running it again
    // as it is fails the same way.
    const std::string others =
        candidates.size() == 1 ? "" : absl::StrCat(" and ", candidates.size() - 1, " more");
    // step-N directories none of which holds a manifest are no run to
    // continue: --resume=latest, as advised, then refused them all ("no
    // checkpoint verifies"), a dead end.
    const bool any_manifest = std::any_of(candidates.begin(), candidates.end(), [&](const auto& c) {
      return fs->FileExists(absl::StrCat(c, "/", kManifestFileName));
    });
    if (!any_manifest) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint_dir ", dir, " holds ", candidates.front(), others, ", without ",
          kManifestFileName, ": not a checkpoint (a copy cut short, or files put there by hand), "
          "and a save of that step would replace it; move it away, or give this run its own "
          "--out_dir (or --checkpoint_dir)"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint_dir ", dir, " already holds checkpoints (", candidates.front(), others,
        "); pass --resume=latest to continue that run, or give this run its own "
        "--out_dir (or --checkpoint_dir)"));
  }
  // "latest", or a checkpoints directory (a run directory's included)
  // rather than one checkpoint.
  ResumeTarget resume_from{CheckpointsDirOf(config), true};
  if (config.resume() != "latest") {
    absl::StatusOr<ResumeTarget> named = ResolveResumePath(config.resume(), CheckpointsDirOf(config), fs);
    if (!named.ok()) return named.status();
    resume_from = *std::move(named);
    if (absl::Status s = RefuseResumingIntoAnotherRun(config, resume_from, env); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = RefuseNewerFormatCheckpoints(CheckpointsDirOf(config), fs); !s.ok()) {
    return s;
  }
  if (resume_from.latest) {
    if (absl::Status s = RefuseUnreadableLatest(resume_from.root, fs); !s.ok()) return s;
    candidates = CheckpointCandidates(resume_from.root, &skipped, env);
    if (candidates.empty() && skipped.empty()) {
      // Only "latest" starts fresh (job scripts always pass it); a path
      // named by hand is expected to hold a checkpoint.
      if (config.resume() != "latest") {
        return absl::InvalidArgumentError(absl::StrCat("--resume=", config.resume(),
                                                       ": no checkpoint in ", resume_from.root));
      }
      log << "dropk-train: --resume=latest: no checkpoint in " << resume_from.root
          << ", starting from step 0\n";
      return point;
    }
  } else {
    candidates.push_back(resume_from.root);
  }
  // Whether candidates.front() is the checkpoint LATEST names (step-*
  // directories follow it, newest first).
  const bool latest_first = resume_from.latest && !candidates.empty() &&
                            fs->FileExists(resume_from.root + "/" + kLatestFileName) &&
                            skipped.empty();
  for (const std::string& dir : candidates) {
    absl::StatusOr<ValidatedManifest> vm = OpenCheckpoint(dir, env);
    if (absl::IsPermissionDenied(vm.status())) return RefuseUnreadableCheckpoint(dir, vm.status());
    if (!vm.ok()) {
      skipped.push_back(std::string(vm.status().message()));
      continue;
    }
    const CheckpointManifest& m = vm->manifest;
    // A contradiction is the user's to fix, not a reason to try an older one.
    std::vector<std::string> changes;
    if (absl::Status s = CheckResumeConfig(m.config(), config, &changes); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(s.message(), " [checkpoint ", dir, "]"));
    }
    // The training loop would not run at all: no step, no evaluation, and
    // "done" with the checkpoint's step count. (At max_iters itself the run
    // says it has nothing to train and ends.)
    if (m.step() > config.max_iters()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--resume: checkpoint ", dir, " is at step ", m.step(),
                       ", past max_iters=", config.max_iters(), "; raise max_iters to train on"));
    }
    if (m.tokenizer().SerializeAsString() != tokenizer.SerializeAsString()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--resume: the tokenizer of data_dir=", config.data_dir(), " (",
                       DescribeTokenizer(tokenizer), ") differs from checkpoint ", dir, "'s (",
                       DescribeTokenizer(m.tokenizer()), ")"));
    }
    // Batches are a pure function of (seed, step) over the tokens: on other
    // data the run goes on, but not as the original would have. Checkpoints
    // written before the data was recorded are not checked.
    const bool data_changed = m.has_data() && DataChanged(m.data(), data);
    if (data_changed && !config.allow_data_change()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--resume: the data of data_dir=", config.data_dir(), " (", DescribeData(data),
          ") differs from checkpoint ", dir, "'s, trained on data_dir=", m.config().data_dir(),
          " (", DescribeData(m.data()),
          "); point data_dir at that data to resume the run, or pass --allow_data_change to "
          "train on this data (its data order will not match the original run's)"));
    }
    CheckpointLoadTarget target{gpt.kernels(), gpt.params(), optimizer.first_moment(),
                                optimizer.second_moment(), gpt.num_params()};
    absl::StatusOr<CheckpointManifest> loaded = LoadCheckpointInto(dir, target, env);
    if (absl::IsPermissionDenied(loaded.status())) {
      return RefuseUnreadableCheckpoint(dir, loaded.status());
    }
    if (!loaded.ok()) {
      skipped.push_back(std::string(loaded.status().message()));
      continue;
    }
    for (const std::string& reason : skipped) log << "dropk-train: skipped " << reason << "\n";
    for (const std::string& change : changes) {
      log << "dropk-train: resume: config " << change << " (allowed)\n";
    }
    // Equal checksums of the tokens: the same data, prepared again.
    if (m.has_data() && !data_changed && m.data().has_tokens_crc32c() && data.has_tokens_crc32c() &&
        m.data().dataset_id() != data.dataset_id()) {
      log << "dropk-train: resume: data_dir=" << config.data_dir()
          << " holds the tokens checkpoint " << dir
          << " was trained on, from another preparation (dataset id " << m.data().dataset_id()
          << " -> " << data.dataset_id() << "); the data order is the original run's\n";
    }
    if (data_changed) {
      log << "dropk-train: warning: --allow_data_change: the data changed since checkpoint " << dir
          << " (" << DescribeData(m.data()) << " -> " << DescribeData(data)
          << "); the data order will not match the original run's\n";
    }
    if (m.world_size() != world_size) {
      log << "dropk-train: resume: written by " << m.world_size() << " rank(s), now " << world_size
          << "; optimizer state re-sliced"
          // Only masks numbered by rank differ, and only where some are drawn.
          << (MasksCountMicroBatches(config)
                  ? "; per_rank dropout masks differ from the original run's"
                  : "")
          << "\n";
    }
    log << GlobalBatchChangeLine(m.config(), m.world_size(), config, world_size);
    optimizer.set_step(m.optimizer_step());
    point.skipped = skipped;
    point.resumed = true;
    point.dir = dir;
    point.step = m.step();
    point.tokens_seen = m.tokens_seen();
    point.last_train_loss = m.last_train_loss();
    log << "dropk-train: resumed from " << dir << " at step " << m.step() << "\n";
    if (latest_first && dir == candidates.front()) {
      const std::string newer = NewerCheckpointThanLatest(resume_from.root, env);
      if (!newer.empty()) log << NewerThanLatestWarning(newer, resume_from.root, m.step());
    }
    log << std::flush;
    return point;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "--resume=", config.resume(), ": no checkpoint verifies: ", absl::StrJoin(skipped, "; ")));
}

absl::Status CheckResumeConfig(const TrainConfig& checkpoint, const TrainConfig& now,
                               std::vector<std::string>* changes) {
  static const std::set<std::string> kMustMatch = {"n_layer",    "n_head", "n_embd",
                                                   "block_size", "seed",   "dropout_stream"};
  static const std::set<std::string> kIgnored = {"resume", "checkpoint_dir", "out_dir",
                                                 "allow_data_change", "init_from"};
  const pb::Descriptor* d = TrainConfig::descriptor();
  const pb::Reflection* r = TrainConfig::GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (kIgnored.count(f->name()) || f->is_repeated()) continue;
    const bool has_a = !f->has_presence() || r->HasField(checkpoint, f);
    const bool has_b = !f->has_presence() || r->HasField(now, f);
    std::string a = "unset", b = "unset";
    if (has_a) a = FieldValueAsFlagged(checkpoint, f);
    if (has_b) b = FieldValueAsFlagged(now, f);
    if (a == b) continue;
    if (kMustMatch.count(f->name())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--resume: ", f->name(), "=", b, " contradicts the checkpoint's ", f->name(), "=", a,
          " (", f->name(), " defines the model or its randomness and cannot change on resume)"));
    }
    if (changes != nullptr) changes->push_back(absl::StrCat(f->name(), ": ", a, " -> ", b));
  }
  return absl::OkStatus();
}

TrainingCheckpointer::TrainingCheckpointer(const TrainConfig& config, size_t num_params,
                                           Communicator* comm, LogSink* log, Env* env)
    : save_every_(config.save_every()) {
  // A synchronous save's collectives wait while rank 0 writes the model: at
  // least the writer's default, longer when comm_timeout_s asks for more.
  CheckpointWriterOptions options{.checkpoints_dir = CheckpointsDirOf(config),
                                  .keep_last = config.keep_last(),
                                  .keep_every = config.keep_every(),
                                  .env = env,
                                  .log = log};
  const auto configured = std::chrono::milliseconds(
      static_cast<int64_t>(static_cast<double>(config.comm_timeout_s()) * 1000.0));
  options.collective_timeout = std::max(options.collective_timeout, configured);
  if (config.async_checkpoints()) {
    async_writer_ = std::make_unique<AsyncCheckpointWriter>(std::move(options), comm);
    async_writer_->Reserve(num_params);
  } else {
    writer_ = std::make_unique<CheckpointWriter>(std::move(options), comm);
  }
}

bool TrainingCheckpointer::Due(int64_t steps_done, int64_t max_steps) const {
  return (save_every_ > 0 && steps_done % save_every_ == 0) || steps_done == max_steps;
}

absl::Status TrainingCheckpointer::Save(const TrainConfig& config, const Tokenizer& tokenizer,
                                        const DataIdentity& data, Gpt& gpt,
                                        AdamWOptimizer& optimizer, int64_t steps_done,
                                        int64_t tokens_seen, float last_train_loss,
                                        std::ostream& log) {
  if (steps_done == last_saved_step_) return absl::OkStatus();
  const auto start = std::chrono::steady_clock::now();
  CheckpointState state;
  state.config = &config;
  state.tokenizer = &tokenizer;
  state.data = &data;
  state.step = steps_done;
  state.tokens_seen = tokens_seen;
  state.optimizer_step = optimizer.step();
  state.last_train_loss = last_train_loss;
  state.kernels = gpt.kernels();
  state.params = gpt.params();
  state.adam_m = optimizer.first_moment();
  state.adam_v = optimizer.second_moment();
  state.num_params = gpt.num_params();
  gpt.kernels()->Synchronize();
  if (async_writer_ != nullptr) {
    absl::Status previous = async_writer_->Finish();
    LogCommitted(log);  // the previous save's line, when it committed since the last Poll
    if (!previous.ok() && !async_writer_->failed_alike_on_every_rank()) return previous;
    absl::Status started = async_writer_->Start(state);
    if (previous.ok()) {
      if (!started.ok()) return started;
      last_saved_step_ = steps_done;
      return absl::OkStatus();
    }
    // The previous save failed: the run stops on that failure, but first
    // this state is saved, in full, so the steps since the last checkpoint
    // are not lost with it (the disk may have room again, a network file
    // system may be back). Returning at once lost them: the save a signal
    // or the end of training asks for was never tried.
    const absl::Status now = started.ok() ? async_writer_->Finish() : started;
    LogCommitted(log);
    if (!now.ok()) {
      return absl::Status(previous.code(),
                          absl::StrCat(previous.message(), "; saving step ", steps_done,
                                       " failed too: ", now.message()));
    }
    last_saved_step_ = steps_done;
    return absl::Status(previous.code(),
                        absl::StrCat(previous.message(), "; step ", steps_done,
                                     " was saved after it, resume with --resume=latest"));
  }
  absl::StatusOr<std::string> dir = writer_->Save(state);
  if (!dir.ok()) return dir.status();
  last_saved_step_ = steps_done;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double gb = 3.0 * gpt.num_params() * sizeof(float) / 1e9;
  log << absl::StrFormat(
             "checkpoint: step %d -> %s: training paused %.1f ms for a synchronous save (%.3f "
             "GB, %.2f GB/s)\n",
             steps_done, *dir, 1e3 * seconds, gb, seconds > 0 ? gb / seconds : 0.0)
      << std::flush;
  return absl::OkStatus();
}

absl::Status TrainingCheckpointer::Poll(std::ostream& log) {
  if (async_writer_ == nullptr || !async_writer_->pending()) return absl::OkStatus();
  absl::Status s = async_writer_->Poll();
  LogCommitted(log);
  return s;
}

void TrainingCheckpointer::set_peer_timeout(std::chrono::milliseconds timeout) {
  if (writer_ != nullptr) writer_->set_peer_timeout(timeout);
  if (async_writer_ != nullptr) async_writer_->set_peer_timeout(timeout);
}

void TrainingCheckpointer::NoteResumedFrom(const std::string& dir) {
  if (writer_ != nullptr) writer_->NoteResumedFrom(dir);
  if (async_writer_ != nullptr) async_writer_->NoteResumedFrom(dir);
}

void TrainingCheckpointer::NoteGoodParameters(int64_t steps_done) {
  good_step_ = steps_done;
  if (writer_ != nullptr) writer_->KeepNewestAtOrBefore(steps_done);
  if (async_writer_ != nullptr) async_writer_->KeepNewestAtOrBefore(steps_done);
}

std::string TrainingCheckpointer::DivergenceAdvice(const TrainConfig& config, int64_t step) const {
  if (good_step_ < 0 || last_saved_step_ <= good_step_) return "";
  return absl::StrCat("; the newest checkpoint, ", CheckpointDirName(last_saved_step_),
                      ", was saved after step ", good_step_,
                      ", the last known to give a finite loss, and may hold the parameters that "
                      "gave step ",
                      step, "'s: resume from the newest checkpoint at or before ",
                      CheckpointDirName(good_step_), " in ", CheckpointsDirOf(config),
                      " (kept for this), not from LATEST");
}

absl::Status TrainingCheckpointer::Finish(std::ostream& log) {
  if (async_writer_ == nullptr) return absl::OkStatus();
  absl::Status s = async_writer_->Finish();
  LogCommitted(log);
  return s;
}

void TrainingCheckpointer::LogCommitted(std::ostream& log) {
  std::optional<AsyncSaveReport> r = async_writer_->TakeCommitted();
  if (!r) return;
  std::string waited;
  if (r->waited_s >= 5e-4) {
    waited = absl::StrFormat(" (%.1f ms of it waiting for the previous save)", 1e3 * r->waited_s);
  }
  log << absl::StrFormat(
             "checkpoint: step %d -> %s: training paused %.1f ms%s, written in background in "
             "%.0f ms (%.3f GB staged on this rank)\n",
             r->step, r->dir, 1e3 * r->pause_s, waited, 1e3 * r->background_s,
             r->snapshot_bytes / 1e9)
      << std::flush;
}

absl::Status CheckRunDirectoriesOutsideCheckpoints(const TrainConfig& config) {
  for (const auto& [field, dir] : {std::pair<const char*, std::string>{"out_dir", config.out_dir()},
                                   {"checkpoint_dir", CheckpointsDirOf(config)}}) {
    const std::string step_dir = CheckpointStepDirAround(dir);
    if (step_dir.empty()) continue;
    const std::filesystem::path step(step_dir);
    return absl::InvalidArgumentError(absl::StrCat(
        field, "=", dir, ": inside checkpoint ", step_dir, " of the checkpoints directory ",
        step.parent_path().string(), ", whose run's keep_last pruning (or its next save of ",
        step.filename().string(),
        ") would delete it with everything in it; choose a directory outside that checkpoints "
        "directory"));
  }
  return absl::OkStatus();
}

}  // namespace dropk
