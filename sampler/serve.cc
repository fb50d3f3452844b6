#include "sampler/serve.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <new>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "base/exit_codes.h"
#include "base/ignored_signal.h"
#include "checkpoint/env.h"
#include "checkpoint/format.h"
#include "model/kernels.h"

namespace dropk {

namespace {

// What a scan for a servable checkpoint depends on, short of reading any
// data: the names in the checkpoints directory and, in each step-*
// directory, every file's name, inode, size, modification and status
// change times (a file repaired in place or replaced by a rename changes
// one of them, and a chmod that makes it readable changes the last; without
// it, a checkpoint refused for its permissions was never looked at again).
// One stat per file, where a scan CRC-checks every candidate's weights.
std::string CheckpointsFingerprint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> lines;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    lines.push_back(name);
    if (ParseStepDirName(name) < 0) continue;
    std::error_code sub_ec;
    for (fs::directory_iterator f(it->path(), sub_ec), f_end; !sub_ec && f != f_end;
         f.increment(sub_ec)) {
      const std::string file = absl::StrCat(name, "/", f->path().filename().string());
      struct stat st {};
      if (::stat(f->path().c_str(), &st) != 0) {
        lines.push_back(absl::StrCat(file, " cannot stat"));
        continue;
      }
      lines.push_back(absl::StrCat(file, " ", st.st_ino, " ", st.st_size, " ", st.st_mtim.tv_sec,
                                   ".", st.st_mtim.tv_nsec, " ", st.st_ctim.tv_sec, ".",
                                   st.st_ctim.tv_nsec));
    }
    if (sub_ec) lines.push_back(absl::StrCat(name, ": ", sub_ec.message()));
  }
  if (ec) lines.push_back(absl::StrCat("error: ", ec.message()));
  std::sort(lines.begin(), lines.end());
  return absl::StrJoin(lines, "\n");
}

// LATEST's text as the checkpoint name it holds (the trainer ends it with
// a newline).
std::string StripLatest(const std::string& latest) {
  return std::string(absl::StripAsciiWhitespace(latest));
}

// The step a checkpoint directory's path names by its last component
// (step-N), or -1.
int64_t StepOfPath(const std::string& path) {
  return ParseStepDirName(std::filesystem::path(path).filename().string());
}

// Which manifest file `checkpoint_dir` holds: its device, inode, size and
// modification time ("" when it cannot be looked at). A checkpoint
// directory replaced under its name (by a symlink to another, the
// checkpoints directory swapped for another run's) has another.
std::string ManifestIdentity(const std::string& checkpoint_dir) {
  struct stat st {};
  if (::stat(absl::StrCat(checkpoint_dir, "/", kManifestFileName).c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_dev, ":", st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".",
                      st.st_mtim.tv_nsec);
}

// A tokenizer as a reload's line names it: "CHAR (65 code points)",
// "BYTE (256 tokens)".
std::string DescribeTokenizer(const TextTokenizer& tokenizer) {
  const std::string kind = Tokenizer::Kind_Name(tokenizer.kind());
  if (tokenizer.kind() == Tokenizer::CHAR) {
    return absl::StrCat(kind, " (", tokenizer.proto().code_points_size(), " code points)");
  }
  return absl::StrCat(kind, " (", tokenizer.vocab_size(), " tokens)");
}

// What differs between the model served and the one swapped in, "field old
// -> new" each: the shape (ParamLayout's fields) and the tokenizer (its
// kind and size, or "other tokens" where only its table differs).
std::vector<std::string> ModelChanges(const ModelSnapshot& before, const ModelSnapshot& after) {
  std::vector<std::string> changes;
  const auto field = [&changes](const char* name, int64_t a, int64_t b) {
    if (a != b) changes.push_back(absl::StrCat(name, " ", a, " -> ", b));
  };
  field("n_layer", before.config.n_layer, after.config.n_layer);
  field("n_head", before.config.n_head, after.config.n_head);
  field("n_embd", before.config.n_embd, after.config.n_embd);
  field("vocab_size", before.config.vocab_size, after.config.vocab_size);
  field("block_size", before.config.block_size, after.config.block_size);
  const std::string a = DescribeTokenizer(before.tokenizer);
  const std::string b = DescribeTokenizer(after.tokenizer);
  if (a != b) {
    changes.push_back(absl::StrCat("tokenizer ", a, " -> ", b));
  } else if (before.tokenizer.proto().SerializeAsString() !=
             after.tokenizer.proto().SerializeAsString()) {
    changes.push_back(absl::StrCat("tokenizer ", a, ", other tokens"));
  }
  return changes;
}

}  // namespace

CheckpointWatcher::CheckpointWatcher(std::string checkpoints_dir, Scheduler* scheduler,
                                     ServiceMetrics* metrics, LogSink* log)
    : dir_(std::move(checkpoints_dir)),
      scheduler_(scheduler),
      metrics_(metrics),
      log_(OrDiscard(log)) {}

CheckpointWatcher::~CheckpointWatcher() { Stop(); }

std::string CheckpointWatcher::ReadLatest() const {
  // Through the checkpoint Env, which refuses what is not a regular file: a
  // FIFO in LATEST's place blocked std::ifstream's open for good, at start
  // with SIGTERM and SIGINT already blocked, so only kill -9 ended it. What
  // cannot be read reads as its error (FindServableCheckpoint reports it).
  absl::StatusOr<std::string> latest =
      ReadSmallFile(Env::Default(), dir_ + "/" + kLatestFileName, 4096);
  return latest.ok() ? *std::move(latest) : std::string(latest.status().message());
}

absl::StatusOr<bool> CheckpointWatcher::LoadFrom() {
  // A checkpoint too large for the memory left (a bigger model, a smaller
  // container) threw std::bad_alloc out of the watcher's thread: the service
  // aborted (SIGABRT) while it served the old model fine. It is a refusal
  // like any other; at start, it is RunServe's error (exit 1).
  try {
    return LoadNewest();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "out of memory loading the newest checkpoint of ", dir_,
        " (an allocation failed; its model needs more memory than this process can get)"));
  }
}

absl::StatusOr<bool> CheckpointWatcher::LoadNewest() {
  found_no_checkpoint_ = false;
  std::vector<std::string> skipped;
  absl::StatusOr<std::string> path = FindServableCheckpoint(dir_, &skipped);
  // Not found, and no checkpoint skipped: the directory held none to try (a
  // path the OS cannot look at is another error, and refused as before).
  found_no_checkpoint_ = absl::IsNotFound(path.status()) && skipped.empty();
  if (!path.ok()) return path.status();
  std::string why_skipped = absl::StrJoin(skipped, "; ");
  // Before the load: a change during it is seen at the next poll.
  const std::string identity = ManifestIdentity(*path);
  if (*path == serving_path_ && identity == serving_identity_) {
    // Nothing newer verifies. With nothing skipped, LATEST names what is
    // served already (rewritten, or put back after a refused one): no news.
    if (skipped.empty()) {
      serving_skipped_ = false;
      return false;
    }
    // LATEST names something that does not verify; the older one we serve
    // is what the fallback found.
    return absl::DataLossError(absl::StrCat("LATEST refused: ", why_skipped));
  }
  // LATEST's checkpoint refused, and the fallback older than the model
  // served (whose directory is gone or broken on disk): that model was
  // swapped out for an older one nobody named. It stays, as when LATEST is
  // removed.
  if (!skipped.empty() && !serving_path_.empty() && StepOfPath(*path) < StepOfPath(serving_path_)) {
    return absl::DataLossError(absl::StrCat("LATEST refused: ", why_skipped,
                                            " (not going back to the older ", *path, ")"));
  }
  // The path is known from here on: the error names it.
  absl::StatusOr<std::shared_ptr<const ModelSnapshot>> snapshot;
  try {
    snapshot = LoadCheckpointSnapshot(*path);
    if (!snapshot.ok()) return snapshot.status();
    if (absl::Status s = scheduler_->SetModel(*snapshot); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(*path, ": ", s.message()));
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(*path, ": out of memory loading it (an allocation failed; its model needs ",
                     "more memory than this process can get)"));
  }
  // Another model under LATEST (another run's checkpoints, a config
  // changed and trained afresh): served, as LATEST names it, but said,
  // since its model id tells only the step and clients see another model.
  if (serving_ != nullptr) {
    const std::vector<std::string> changes = ModelChanges(*serving_, **snapshot);
    if (!changes.empty()) {
      log_->Write(absl::StrCat("dropk-serve: warning: ", *path, " is another model than ",
                               serving_->path, ": ", absl::StrJoin(changes, ", "),
                               "; serving it as ", (*snapshot)->id));
    }
  }
  serving_path_ = *path;
  serving_identity_ = identity;
  serving_skipped_ = !skipped.empty();
  // Only the shape and tokenizer are compared later: the weights are the
  // scheduler's to keep or drop.
  serving_ = std::make_shared<ModelSnapshot>(ModelSnapshot{(*snapshot)->config,
                                                           (*snapshot)->tokenizer,
                                                           {},
                                                           (*snapshot)->step,
                                                           (*snapshot)->id,
                                                           (*snapshot)->path});
  log_->Write(absl::StrCat("dropk-serve: serving ", *path, " (step ", (*snapshot)->step, ")",
                           skipped.empty() ? "" : "; skipped: ", why_skipped));
  return true;
}

bool CheckpointWatcher::NamesServed(const std::string& latest) const {
  return !serving_path_.empty() && serving_path_ == absl::StrCat(dir_, "/", StripLatest(latest)) &&
         ManifestIdentity(serving_path_) == serving_identity_;
}

bool CheckpointWatcher::LatestRemoved() {
  namespace fs = std::filesystem;
  // Only "no such file" is a removal: a LATEST that cannot be looked at (a
  // directory that may not be searched) is the scan's refusal, naming why.
  std::error_code ec;
  const bool present =
      fs::symlink_status(dir_ + "/" + kLatestFileName, ec).type() != fs::file_type::not_found;
  const bool removed = latest_present_ && !present && fs::is_directory(dir_, ec);
  if (!removed) latest_present_ = present;
  return removed;
}

absl::Status CheckpointWatcher::LoadInitial() {
  std::lock_guard<std::mutex> lock(mu_);
  std::error_code ec;
  latest_present_ = std::filesystem::symlink_status(dir_ + "/" + kLatestFileName, ec).type() !=
                    std::filesystem::file_type::not_found;
  // Before the scan: a change during it counts.
  last_scanned_state_ = absl::StrCat(ReadLatest(), "\n--\n", CheckpointsFingerprint(dir_));
  previous_poll_state_ = last_scanned_state_;
  absl::StatusOr<bool> loaded = LoadFrom();
  scanned_ = true;
  last_status_ = loaded.status();
  if (!loaded.ok()) SetLastRefusal(std::string(loaded.status().message()));
  return loaded.status();
}

absl::Status CheckpointWatcher::PollOnce() {
  std::lock_guard<std::mutex> lock(mu_);
  // LATEST deleted while a model is served (a cleanup script, rsync
  // --delete): a scan would fall back to the newest step-* directory, and
  // nothing was logged. The model served stays, said once, until a LATEST
  // appears again. A directory gone as a whole is a refusal (below).
  if (!serving_path_.empty() && LatestRemoved()) {
    if (!latest_removed_logged_) {
      latest_removed_logged_ = true;
      log_->Write(absl::StrCat("dropk-serve: ", dir_, "/", kLatestFileName,
                               " was removed; keeping ", serving_path_,
                               " until a new LATEST names a checkpoint"));
    }
    return absl::OkStatus();
  }
  latest_removed_logged_ = false;
  const std::string latest = ReadLatest();
  // Serving what LATEST names, found by the last scan: nothing to do. Asked
  // of the model served, not of LATEST's text at the last scan: a scan reads
  // LATEST again, and when it flipped in between and back, "unchanged" kept
  // the other checkpoint served for good.
  if (NamesServed(latest) && last_refusal_.empty() && !serving_skipped_) {
    return absl::OkStatus();
  }
  // Nothing served yet, or the last scan refused or skipped what LATEST
  // names (an older checkpoint is served). A scan CRC-checks every
  // candidate's weights (it once read every optimizer file too: 146 MB in
  // 5 s for a 28 MB run, forever), and with nothing changed it would fail
  // the same way: scan again only when LATEST or a candidate's files
  // changed. A refused checkpoint can become whole with LATEST unchanged:
  // rsync copies LATEST before the step-* directory it names (it sorts
  // first), and NFS may show it first; while a model was served, that
  // checkpoint was never loaded.
  //
  // And only once the change has settled: the same LATEST and fingerprint
  // at two polls in a row. While rsync copied a checkpoint in (a file
  // growing for minutes), every poll saw a new fingerprint and scanned,
  // re-reading the weights of the checkpoint served (hundreds of GB for a
  // 500 MB model), and logging and counting a refusal again whenever its
  // reason changed with the copy. A new LATEST while LATEST's checkpoint is served is
  // looked at at once: the trainer writes it after its checkpoint is whole.
  std::string state = absl::StrCat(latest, "\n--\n", CheckpointsFingerprint(dir_));
  const bool settled = state == previous_poll_state_;
  previous_poll_state_ = state;
  const bool serving_latest =
      !serving_path_.empty() && last_refusal_.empty() && !serving_skipped_;
  if (scanned_ && (state == last_scanned_state_ || (!settled && !serving_latest))) {
    return last_status_;
  }
  last_scanned_state_ = std::move(state);
  const bool first = serving_path_.empty();
  absl::StatusOr<bool> loaded = LoadFrom();
  scanned_ = true;
  last_status_ = loaded.status();
  // A scan that skipped nothing serves what LATEST named as it read it. Not
  // `latest`'s checkpoint, though `latest` named one: LATEST changed between
  // the two reads, and the state recorded is not the one scanned; the next
  // poll scans again.
  if (loaded.ok() && !serving_skipped_ && ParseStepDirName(StripLatest(latest)) >= 0 &&
      !NamesServed(latest)) {
    last_scanned_state_.clear();
  }
  if (loaded.ok()) {
    if (*loaded && !first) ++metrics_->reloads_ok;
    if (*loaded) logged_refusals_.clear();
    // The refusal was the last word (a checkpoints directory moved away and
    // restored, LATEST put back): say that the checkpoints read again. Not
    // "the checkpoint served is readable again": what was refused may have
    // been LATEST alone, the served checkpoint never unreadable.
    if (!*loaded && !last_refusal_.empty() && last_refusal_logged_) {
      log_->Write(absl::StrCat("dropk-serve: ", dir_, " reads again, its newest checkpoint the one ",
                               "served, ", serving_path_, "; no reload needed"));
    }
    SetLastRefusal("");
    return absl::OkStatus();
  }
  // Nothing served and nothing there to refuse: the directory is missing or
  // empty, or the trainer's first save is still under its temporary name.
  // That is the wait RunServe announced ("no servable checkpoint yet"), not
  // a refused reload: an empty directory, as dropk-train makes it at start,
  // logged "reload refused, keeping no model" and counted a failure.
  if (serving_path_.empty() && found_no_checkpoint_) {
    SetLastRefusal("");
    return loaded.status();
  }
  // A scan after a change may still fail the same way (a new file beside
  // broken checkpoints): log and count a refusal once, not once a scan. Nor
  // again when LATEST flaps between the model served and a broken
  // checkpoint: each flip logged and counted it anew.
  const std::string why(loaded.status().message());
  if (why != last_refusal_) {
    SetLastRefusal(why);
    last_refusal_logged_ =
        std::find(logged_refusals_.begin(), logged_refusals_.end(), why) == logged_refusals_.end();
    if (last_refusal_logged_) {
      constexpr size_t kRefusalsRemembered = 64;
      if (logged_refusals_.size() == kRefusalsRemembered)
        logged_refusals_.erase(logged_refusals_.begin());
      logged_refusals_.push_back(why);
      ++metrics_->reloads_failed;
      log_->Write(absl::StrCat("dropk-serve: reload refused, keeping ",
                               serving_path_.empty() ? "no model" : serving_path_, ": ", why));
    }
  }
  return loaded.status();
}

void CheckpointWatcher::SetLastRefusal(std::string why) {
  metrics_->SetReloadRefusal(why);
  last_refusal_ = std::move(why);
}

void CheckpointWatcher::Start(std::chrono::milliseconds interval) {
  thread_ = std::thread([this, interval] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, interval, [this] { return stop_; });
      if (stop_) break;
      lock.unlock();
      (void)PollOnce();  // logged and counted inside
      lock.lock();
    }
  });
}

void CheckpointWatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

namespace {

// Each open connection holds a file descriptor. The usual soft limit of 1024
// would let about a thousand idle clients lock everyone else out (new
// connections then wait in the kernel's queue), while the hard limit
// usually allows far more; raise the soft limit to it.
// Says so when --max-connections cannot be reached for want of descriptors
// (the server then backs off accepting instead; http_server.h).
void RaiseOpenFileLimit(int max_connections, LogSink* log) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    const rlim_t before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) == 0) {
      log->Write(absl::StrCat("dropk-serve: open-file limit raised from ", before, " to ",
                              limit.rlim_cur, " (connections each hold one)"));
    } else {
      limit.rlim_cur = before;
    }
  }
  // The process's own files (checkpoints, logs, the listener) need some too.
  constexpr rlim_t kOwnDescriptors = 64;
  if (limit.rlim_cur != RLIM_INFINITY &&
      limit.rlim_cur < static_cast<rlim_t>(max_connections) + kOwnDescriptors) {
    log->Write(absl::StrCat("dropk-serve: the open-file limit (", limit.rlim_cur,
                            ") is below --max-connections (", max_connections, ") + ",
                            kOwnDescriptors,
                            "; connections past it wait in the kernel's queue (raise ulimit -n "
                            "or lower --max-connections)"));
  }
}

// Writes port to path through a temporary file and a rename, so a reader
// never sees a partial number; an error names --port-file and the cause.
absl::Status WritePortFile(const std::string& path, int port) {
  if (absl::Status s = CheckPortFileTarget(path); !s.ok()) return s;
  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp);
  out << port << "\n";
  out.close();
  if (!out) {
    return absl::FailedPreconditionError(
        absl::StrCat("--port-file ", path, ": cannot write it (cannot create ", tmp, ")"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    const std::string why = ec.message();
    std::filesystem::remove(tmp, ec);
    return absl::FailedPreconditionError(
        absl::StrCat("--port-file ", path, ": cannot write it (rename from ", tmp, ": ", why, ")"));
  }
  return absl::OkStatus();
}

// The name of a signal RunServe waits for, for its log lines.
const char* SignalName(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
  }
  return "a signal";
}

// OK when the scheduler's device can run a model; otherwise one line naming
// --device and the reason. The CPU always can; an injected engine
// (options.make_engine, tests) is its own affair.
absl::Status ProbeDevice(const SchedulerOptions& options) {
  if (options.device != Device::kCuda || options.make_engine) return absl::OkStatus();
  KernelOptions kernel_options;
  kernel_options.num_threads = 1;
  kernel_options.cuda_device = options.cuda_device;
  absl::StatusOr<std::unique_ptr<Kernels>> kernels = MakeKernels(Device::kCuda, kernel_options);
  if (kernels.ok()) return absl::OkStatus();
  absl::string_view why = kernels.status().message();
  absl::ConsumePrefix(&why, "device cuda: ");
  return absl::FailedPreconditionError(
      absl::StrCat("--device cuda --cuda-device ", options.cuda_device, ": ", why,
                   absl::StrContains(why, "cpu device") ? "" : " (or use --device cpu)"));
}

}  // namespace

// Before, the rename replaced whatever was there: a FIFO a supervisor waits
// on, or (as root) a device node such as /dev/full, which became a regular
// file holding the port.
absl::Status CheckPortFileTarget(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(path, ec);
  if (fs::exists(status) && !fs::is_regular_file(status)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--port-file ", path, ": exists and is not a regular file; name a file to write"));
  }
  const fs::path parent = fs::absolute(path, ec).parent_path();
  if (ec || !fs::is_directory(parent, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--port-file ", path, ": directory ", parent.string(), " does not exist"));
  }
  return absl::OkStatus();
}

absl::Status RunServe(const ServeOptions& options) {
  LogSink* log = OrDiscard(options.log);
  RaiseOpenFileLimit(options.http.max_connections, log);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  // A hangup (the ssh session it was started from dropped) killed the
  // service at once, its running requests lost, without a word: it drains
  // like SIGTERM. SIGINT and SIGHUP are left alone when ignored at start
  // (nohup; a script's background job, which a Ctrl-C of the script must
  // not stop): a blocked signal is never discarded on Linux, so waiting for
  // an ignored one would act on it.
  for (const int sig : {SIGINT, SIGHUP}) {
    if (!SignalIgnoredAtStart(sig)) sigaddset(&signals, sig);
  }
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // threads started below inherit this
  std::signal(SIGPIPE, SIG_IGN);
  // Refused before the model loads, not after (WritePortFile checks again).
  if (!options.port_file.empty()) {
    if (absl::Status s = CheckPortFileTarget(options.port_file); !s.ok()) return s;
  }

  // With --device cuda on a machine whose GPU cannot be used (no driver,
  // none visible, a bad --cuda-device), every model load failed: without
  // --watch that was exit 1, but with it the service said "no servable
  // checkpoint yet (... no CUDA device ...); watching" and never became
  // ready. The device is checked once, before anything listens.
  if (absl::Status s = ProbeDevice(options.scheduler); !s.ok()) return s;

  ServiceMetrics metrics;
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(options.scheduler, &metrics);
  if (!scheduler.ok()) return scheduler.status();
  CheckpointWatcher watcher(options.checkpoints_dir, scheduler->get(), &metrics, log);
  if (absl::Status s = watcher.LoadInitial(); !s.ok()) {
    if (!options.watch) return s;
    log->Write(
        absl::StrCat("dropk-serve: no servable checkpoint yet (", s.message(), "); watching"));
  }
  HttpServerOptions http = options.http;
  if (http.log == nullptr) http.log = log;
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start(http, scheduler->get(), &metrics);
  if (!server.ok()) return server.status();
  if (!options.port_file.empty()) {
    if (absl::Status s = WritePortFile(options.port_file, (*server)->port()); !s.ok()) {
      (*server)->Stop(std::chrono::milliseconds(0));
      return s;
    }
  }
  log->Write(absl::StrCat(
      "dropk-serve: listening on http://", HostPortText(options.http.address, (*server)->port()),
      options.scheduler.weights == EngineWeights::kBf16 ? " (weights rounded to bf16)" : "",
      options.scheduler.kv_cache == EngineKvCache::kBf16 ? " (KV cache in bf16)" : ""));
  if (options.watch) watcher.Start(options.watch_interval);

  // Waits for SIGTERM/SIGINT/SIGHUP, looking at the GPU's health between waits.
  //
  // After a device failure the process exits non-zero, after answering the
  // requests the failure cut short. Why exit rather than only report: a
  // sticky CUDA error (an illegal address, an Xid, ECC) leaves the process's
  // GPU context unusable for good, so only a new process serves again, and
  // every supervisor restarts one that exits non-zero at once (Kubernetes'
  // restartPolicy Always, systemd Restart=on-failure, docker --restart;
  // repeated failures show as CrashLoopBackOff, pointing at the node's GPU),
  // whereas a liveness probe only notices after failureThreshold x
  // periodSeconds (30 s in deploy/k8s/serve.yaml), all the while taking
  // traffic it must fail. Until the exit, /healthz and /readyz answer 503
  // naming the cause, so a probe or load balancer that asks sees why.
  int sig = 0;
  const timespec poll_interval{0, 200'000'000};
  for (;;) {
    sig = sigtimedwait(&signals, nullptr, &poll_interval);
    if (sig > 0) break;
    if (std::string failure = (*scheduler)->DeviceFailure(); !failure.empty()) {
      log->Write(
          absl::StrCat("dropk-serve: ", failure, "; stopping (exit 1) so that it is restarted"));
      watcher.Stop();
      (*server)->StopAccepting();
      (*scheduler)->Shutdown(std::chrono::milliseconds(0));  // nothing runs any more
      (*server)->Stop(std::chrono::milliseconds(2000));      // flush the failed answers
      server->reset();
      // The engine's destructor would call into the broken CUDA context
      // (which can hang after an Xid); the process is ending and the driver
      // frees what it held. Its thread has been joined.
      (void)scheduler->release();
      return absl::InternalError(failure);
    }
  }
  // Names the signals that stop it, those waited for: one ignored at start
  // (nohup's SIGHUP) does not.
  std::vector<std::string> stoppers;
  for (const int stopper : {SIGTERM, SIGINT, SIGHUP}) {
    if (sigismember(&signals, stopper) == 1) stoppers.push_back(SignalName(stopper));
  }
  log->Write(absl::StrCat("dropk-serve: ", SignalName(sig), ", draining (deadline ",
                          options.drain_deadline.count(), " ms; a second ",
                          stoppers.size() == 1
                              ? stoppers.back()
                              : absl::StrCat(absl::StrJoin(stoppers.begin(), stoppers.end() - 1,
                                                           ", "),
                                             " or ", stoppers.back()),
                          " stops at once)"));
  // A second signal during the drain means the operator (a second Ctrl-C, an
  // orchestrator out of grace time) will not wait: exit now, without the
  // running requests. The set is copied; stderr needs no object that the
  // return of RunServe destroys.
  std::thread([signals] {
    int again = 0;
    if (sigwait(&signals, &again) != 0) return;
    std::fprintf(stderr, "dropk-serve: second %s during the drain: stopping now\n",
                 SignalName(again));
    std::fflush(stderr);
    std::_Exit(kExitFailure);
  }).detach();
  watcher.Stop();
  (*server)->StopAccepting();
  (*scheduler)->Shutdown(options.drain_deadline);    // running requests finish or are cancelled
  (*server)->Stop(std::chrono::milliseconds(2000));  // flush their responses
  server->reset();
  log->Write("dropk-serve: stopped");
  return absl::OkStatus();
}

}  // namespace dropk
