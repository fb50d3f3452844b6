#include "sampler/serve.h"

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dropk {

CheckpointWatcher::CheckpointWatcher(std::string checkpoints_dir, Scheduler* scheduler,
                                     ServiceMetrics* metrics)
    : dir_(std::move(checkpoints_dir)), scheduler_(scheduler), metrics_(metrics) {}

CheckpointWatcher::~CheckpointWatcher() { Stop(); }

std::string CheckpointWatcher::ReadLatest() const {
  std::ifstream in(std::filesystem::path(dir_) / "LATEST", std::ios::binary);
  if (!in) return "";
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::Status CheckpointWatcher::LoadFrom(const std::string& latest) {
  std::vector<std::string> skipped;
  absl::StatusOr<std::string> path = FindServableCheckpoint(dir_, &skipped);
  if (!path.ok()) return path.status();
  std::string why_skipped = absl::StrJoin(skipped, "; ");
  if (*path == serving_path_) {
    // LATEST names something that does not verify; the older one we serve
    // is what the fallback found.
    return absl::DataLossError(absl::StrCat("LATEST refused: ", why_skipped));
  }
  absl::StatusOr<std::shared_ptr<const ModelSnapshot>> snapshot = LoadCheckpointSnapshot(*path);
  if (!snapshot.ok()) return snapshot.status();
  if (absl::Status s = scheduler_->SetModel(*snapshot); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(*path, ": ", s.message()));
  }
  serving_path_ = *path;
  std::fprintf(stderr, "dropk-serve: serving %s (step %lld)%s%s\n", path->c_str(),
               static_cast<long long>((*snapshot)->step), skipped.empty() ? "" : "; skipped: ",
               why_skipped.c_str());
  return absl::OkStatus();
}

absl::Status CheckpointWatcher::LoadInitial() {
  std::lock_guard<std::mutex> lock(mu_);
  last_latest_ = ReadLatest();
  return LoadFrom(last_latest_);
}

absl::Status CheckpointWatcher::PollOnce() {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string latest = ReadLatest();
  if (latest == last_latest_ && !serving_path_.empty()) return absl::OkStatus();
  last_latest_ = latest;
  const bool first = serving_path_.empty();
  absl::Status s = LoadFrom(latest);
  if (s.ok()) {
    if (!first) ++metrics_->reloads_ok;
  } else {
    ++metrics_->reloads_failed;
    std::fprintf(stderr, "dropk-serve: reload refused, keeping %s: %s\n",
                 serving_path_.empty() ? "no model" : serving_path_.c_str(),
                 std::string(s.message()).c_str());
  }
  return s;
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

int RunServe(const ServeOptions& options) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // threads started below inherit this
  std::signal(SIGPIPE, SIG_IGN);

  ServiceMetrics metrics;
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(options.scheduler, &metrics);
  if (!scheduler.ok()) {
    std::fprintf(stderr, "dropk-serve: %s\n", std::string(scheduler.status().message()).c_str());
    return 1;
  }
  CheckpointWatcher watcher(options.checkpoints_dir, scheduler->get(), &metrics);
  if (absl::Status s = watcher.LoadInitial(); !s.ok()) {
    if (!options.watch) {
      std::fprintf(stderr, "dropk-serve: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::fprintf(stderr, "dropk-serve: no servable checkpoint yet (%s); watching\n",
                 std::string(s.message()).c_str());
  }
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start(options.http, scheduler->get(), &metrics);
  if (!server.ok()) {
    std::fprintf(stderr, "dropk-serve: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  if (!options.port_file.empty()) {
    const std::string tmp = options.port_file + ".tmp";
    std::ofstream(tmp) << (*server)->port() << "\n";
    std::filesystem::rename(tmp, options.port_file);
  }
  std::fprintf(stderr, "dropk-serve: listening on http://%s:%u\n", options.http.address.c_str(),
               (*server)->port());
  if (options.watch) watcher.Start(options.watch_interval);

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "dropk-serve: %s, draining (deadline %lld ms)\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT",
               static_cast<long long>(options.drain_deadline.count()));
  watcher.Stop();
  (*server)->StopAccepting();
  (*scheduler)->Shutdown(options.drain_deadline);  // running requests finish or are cancelled
  (*server)->Stop(std::chrono::milliseconds(2000));  // flush their responses
  server->reset();
  std::fprintf(stderr, "dropk-serve: stopped\n");
  return 0;
}

}  // namespace dropk
