// dropk-serve as a library: checkpoint loading and hot reload, and the
// program that ties the scheduler, the HTTP server and the watcher together.
#ifndef DROPK_SAMPLER_SERVE_H_
#define DROPK_SAMPLER_SERVE_H_

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/log.h"
#include "sampler/http_server.h"
#include "sampler/metrics.h"
#include "sampler/scheduler.h"

namespace dropk {

// Loads the newest servable checkpoint of a run and, when polled, swaps in a
// new LATEST once it loads and verifies. A checkpoint that does not is
// refused (logged to `log`, counted in metrics) and the old one keeps
// serving. Thread-safe; Start/Stop run the polling thread.
class CheckpointWatcher {
 public:
  // scheduler, metrics and log (null: nowhere) must outlive the watcher.
  CheckpointWatcher(std::string checkpoints_dir, Scheduler* scheduler, ServiceMetrics* metrics,
                    LogSink* log = nullptr);
  ~CheckpointWatcher();  // Stop()

  // Loads what the run's LATEST (or the newest valid checkpoint) names.
  absl::Status LoadInitial();
  // One poll: when LATEST names a checkpoint other than the one served, try
  // to load it (LATEST flipping during a scan ends with its final checkpoint
  // served); while
  // nothing is served yet, the last attempt was refused or what is served is
  // older than a checkpoint the loading scan skipped, also when the
  // checkpoints directory's listing or a candidate's files (names, sizes,
  // modification or status change times) changed (a checkpoint copied after its LATEST) and
  // then held still across two polls (a checkpoint still being copied in is
  // not scanned at every poll), and otherwise return the last attempt's
  // error without reading any checkpoint again. Returns OK when nothing changed, LATEST names the
  // checkpoint served already, or the new one was swapped in. A refusal is
  // logged and counted once, not again at each poll that fails the same way
  // nor when it comes back before another checkpoint is swapped in; while
  // nothing is served, a directory with no checkpoint in it (missing, empty,
  // a first save under its temporary name) is waited for, not a refusal;
  // a scan after a refusal that finds the model served still readable logs
  // "PATH is readable again; still serving it".
  // While LATEST, there before, is removed and a model is served, logs that
  // once, keeps the model and returns OK without scanning. When LATEST's
  // checkpoint is refused, a fallback older than the model served is
  // refused too: that model stays. A model swapped in whose shape or
  // tokenizer differs from the one served is served, with one warning line
  // naming each field that changed, old -> new.
  absl::Status PollOnce();

  void Start(std::chrono::milliseconds interval);
  void Stop();

 private:
  // Loads the newest checkpoint that verifies unless it is served already:
  // true when it swapped a model in, false when there was nothing new. An
  // allocation that fails on the way is ResourceExhausted, never an
  // exception (the watcher's thread would abort the service).
  absl::StatusOr<bool> LoadFrom();
  // LoadFrom without the guard.
  absl::StatusOr<bool> LoadNewest();
  std::string ReadLatest() const;
  // True when `latest`, LATEST's text, names the checkpoint served, and its
  // directory still holds the manifest that was loaded.
  bool NamesServed(const std::string& latest) const;
  // True when LATEST, there at the last look, is gone while the
  // checkpoints directory is still there; it stays "removed" until LATEST
  // is back. Updates latest_present_.
  bool LatestRemoved();
  // Sets last_refusal_, and the refusal that /readyz shows (metrics_).
  void SetLastRefusal(std::string why);

  const std::string dir_;
  Scheduler* scheduler_;
  ServiceMetrics* metrics_;
  LogSink* log_;
  std::mutex mu_;
  bool latest_present_ = false;         // LATEST existed at the last look
  bool latest_removed_logged_ = false;  // its removal has been logged
  std::string serving_path_;  // checkpoint directory being served
  // Its model without the weights (shape, tokenizer, id), to name what
  // another model swapped in changes; null before the first load.
  std::shared_ptr<const ModelSnapshot> serving_;
  // Its manifest file as it was loaded (ManifestIdentity in serve.cc): the
  // same path may come to hold another checkpoint.
  std::string serving_identity_;
  std::string last_refusal_;  // why the last poll failed (logged); "" after one that did not
  // Whether last_refusal_ was logged, not a repeat of logged_refusals_.
  bool last_refusal_logged_ = false;
  // The refusals logged since a checkpoint was last swapped in (the newest
  // 64): one that comes back is not logged or counted again.
  std::vector<std::string> logged_refusals_;
  // The checkpoint served is older than what LATEST names: the scan that
  // loaded it skipped newer ones (not there yet, incomplete, corrupt).
  bool serving_skipped_ = false;
  // The last scan found no checkpoint in the directory to try (none there,
  // or the directory missing), as opposed to refusing some.
  bool found_no_checkpoint_ = false;
  // What the last scan depended on (LATEST and CheckpointsFingerprint in
  // serve.cc) and what it returned, and the same state as the previous poll
  // saw it; consulted while nothing is served or after a refusal or skip,
  // where a scan waits for a change to hold still across two polls.
  bool scanned_ = false;
  std::string last_scanned_state_;
  std::string previous_poll_state_;
  absl::Status last_status_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

struct ServeOptions {
  std::string checkpoints_dir;
  bool watch = false;
  std::chrono::milliseconds watch_interval{1000};
  std::chrono::milliseconds drain_deadline{10000};
  std::string port_file;  // written with the bound port once listening
  HttpServerOptions http;
  SchedulerOptions scheduler;
  LogSink* log = nullptr;  // progress and refused reloads; null: nowhere. Not owned.
};

// OK when --port-file `path` can be written: a regular file or a new one, in
// a directory that exists. Otherwise FailedPrecondition naming --port-file,
// the path and why, so a binary can refuse the flag (exit 2) before it
// loads a model; RunServe checks again.
absl::Status CheckPortFileTarget(const std::string& path);

// Runs the service until SIGTERM, SIGINT or SIGHUP (the last two unless
// ignored at start, as under nohup or in a script's background job), then
// stops accepting, lets running requests
// finish within drain_deadline, and returns OK. A second such signal during
// that drain ends the process at once (one line on stderr, exit
// kExitFailure). Returns the
// error (naming what is wrong) when it cannot start. When the GPU fails
// (Scheduler::DeviceFailure), answers the requests it cut short (503,
// device_failed), stops and returns Internal "the GPU failed: ..." within
// about 2 s, so that dropk-serve exits 1 and is restarted (serve.cc says
// why). Blocks those signals in the calling thread; call before starting
// other threads.
absl::Status RunServe(const ServeOptions& options);

}  // namespace dropk

#endif  // DROPK_SAMPLER_SERVE_H_
