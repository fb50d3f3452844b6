// CheckpointWatcher (sampler/serve.h) on a real run's checkpoints: what a
// hot reload does when the new checkpoint cannot be loaded.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "gtest/gtest.h"
#include "model/inference.h"
#include "sampler/metrics.h"
#include "sampler/scheduler.h"
#include "sampler/serve.h"
#include "support/tiny_smoke_run.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

// Keeps every line written to it.
class RecordingLog : public LogSink {
 public:
  void Write(std::string_view line) override {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.emplace_back(line);
  }
  std::string All() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string all;
    for (const std::string& line : lines_) all += line + "\n";
    return all;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// A watcher of a checkpoints directory over a one-thread scheduler,
// keeping what it logs.
struct Watched {
  explicit Watched(const std::string& checkpoints)
      : scheduler(Scheduler::Create(SchedulerOptions{.max_batch = 2, .num_threads = 1}, &metrics)
                      .value()),
        watcher(checkpoints, scheduler.get(), &metrics, &log) {}
  ServiceMetrics metrics;
  std::unique_ptr<Scheduler> scheduler;
  RecordingLog log;
  CheckpointWatcher watcher;
};

// Trains a tiny model for two steps in a fresh directory, saving after each:
// checkpoints step-00000001 and step-00000002, LATEST naming the second.
class CheckpointWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("dropk_watcher_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    const absl::Status trained = test_util::TrainTinySmokeRun(dir_, /*save_every=*/1);
    ASSERT_TRUE(trained.ok()) << trained;
    checkpoints_ = (dir_ / "run" / "checkpoints").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  void PointLatestAt(const std::string& step_dir) {
    std::ofstream(checkpoints_ + "/LATEST.tmp") << step_dir << "\n";
    fs::rename(checkpoints_ + "/LATEST.tmp", checkpoints_ + "/LATEST");
  }

  fs::path dir_;
  std::string checkpoints_;
};

// A new checkpoint whose model needs more memory than the process can get
// threw std::bad_alloc out of the watcher's thread, and the whole service
// aborted (SIGABRT) while it served the old model fine. Here the engine of
// the second model fails to allocate, as a real one that does not fit would:
// the reload is refused naming the checkpoint, logged and counted, and the
// old model keeps serving.
TEST_F(CheckpointWatcherTest, AModelThatDoesNotFitInMemoryIsRefusedAndTheOldOneKeepsServing) {
  std::atomic<int> engines{0};
  SchedulerOptions options{.max_batch = 2, .num_threads = 1};
  options.make_engine =
      [&engines](const GptConfig& config, std::span<const float> params,
                 const InferenceOptions& io) -> absl::StatusOr<std::unique_ptr<InferenceEngine>> {
    if (engines++ > 0) throw std::bad_alloc();
    return MakeInferenceEngine(config, params, io);
  };
  ServiceMetrics metrics;
  std::unique_ptr<Scheduler> scheduler = Scheduler::Create(options, &metrics).value();
  RecordingLog log;
  CheckpointWatcher watcher(checkpoints_, scheduler.get(), &metrics, &log);
  PointLatestAt("step-00000001");
  ASSERT_TRUE(watcher.LoadInitial().ok()) << log.All();
  ASSERT_EQ(scheduler->CurrentModel()->snapshot().step, 1);

  PointLatestAt("step-00000002");
  const absl::Status status = watcher.PollOnce();
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_EQ(status.message(), checkpoints_ +
                                  "/step-00000002: out of memory loading it (an allocation "
                                  "failed; its model needs more memory than this process can get)");
  EXPECT_EQ(scheduler->CurrentModel()->snapshot().step, 1);
  EXPECT_EQ(metrics.reloads_failed.load(), 1u);
  EXPECT_NE(log.All().find("reload refused, keeping " + checkpoints_ + "/step-00000001: " +
                           checkpoints_ + "/step-00000002: out of memory"),
            std::string::npos)
      << log.All();
}

// LATEST deleted while serving (a cleanup script, rsync --delete): nothing
// was logged, and the next poll fell back to the newest step-* directory,
// swapping in a checkpoint nobody had named. Now one line says so and the
// model served stays until a LATEST appears again.
TEST_F(CheckpointWatcherTest, LatestRemovedWhileServingIsLoggedOnceAndTheModelKeepsServing) {
  Watched w(checkpoints_);
  PointLatestAt("step-00000001");
  ASSERT_TRUE(w.watcher.LoadInitial().ok()) << w.log.All();
  ASSERT_EQ(w.scheduler->CurrentModel()->snapshot().step, 1);

  fs::remove(fs::path(checkpoints_) / "LATEST");
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().step, 1) << w.log.All();
  const std::string removed = "dropk-serve: " + checkpoints_ + "/LATEST was removed; keeping " +
                              checkpoints_ + "/step-00000001 until a new LATEST names a checkpoint";
  const std::string lines = w.log.All();
  const size_t first = lines.find(removed);
  EXPECT_NE(first, std::string::npos) << lines;
  EXPECT_EQ(lines.find(removed, first + 1), std::string::npos)
      << "logged more than once: " << lines;
  EXPECT_EQ(w.metrics.reloads_failed.load(), 0u);

  PointLatestAt("step-00000002");  // a new LATEST is served as usual
  EXPECT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().step, 2) << w.log.All();
}

// A refused reload that recovered with the model already served (the

// dropk-train makes its checkpoints directory at start (its lock file in
// it) and writes the first checkpoint under a temporary name, step-N.tmp-X,
// only at its first save, minutes later. A service started beforehand with
// --watch logged "reload refused, keeping no model: no valid checkpoint in
// DIR" and counted a failed reload once that empty directory held still,
// though nothing had been refused. Nothing there to refuse is the wait
// RunServe announced ("no servable checkpoint yet"): no line, no count, and
// the first checkpoint is served when it comes.
TEST_F(CheckpointWatcherTest, ACheckpointsDirectoryWithNoCheckpointYetIsWaitedForNotRefused) {
  const fs::path later = dir_ / "later" / "checkpoints";
  Watched w(later.string());
  ASSERT_FALSE(w.watcher.LoadInitial().ok());  // not there yet
  fs::create_directories(later);
  std::ofstream(later / ".dropk-train.lock") << "pid 1 on this host\n";
  for (int i = 0; i < 3; ++i) (void)w.watcher.PollOnce();      // empty, and holding still
  fs::create_directory(later / "step-00000001.tmp-0a1b2c3d");  // the first save under way
  for (int i = 0; i < 3; ++i) (void)w.watcher.PollOnce();
  EXPECT_EQ(w.log.All().find("reload refused"), std::string::npos) << w.log.All();
  EXPECT_EQ(w.metrics.reloads_failed.load(), 0u) << w.log.All();
  EXPECT_EQ(w.scheduler->CurrentModel(), nullptr);

  fs::remove(later / "step-00000001.tmp-0a1b2c3d");  // the save commits
  fs::copy(fs::path(checkpoints_) / "step-00000001", later / "step-00000001");
  std::ofstream(later / "LATEST") << "step-00000001\n";
  for (int i = 0; i < 3 && w.scheduler->CurrentModel() == nullptr; ++i) {
    (void)w.watcher.PollOnce();
  }
  ASSERT_NE(w.scheduler->CurrentModel(), nullptr) << w.log.All();
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().step, 1);
  EXPECT_EQ(w.metrics.reloads_failed.load(), 0u) << w.log.All();
}
// checkpoints directory moved away and restored) logged nothing: the last
// line stayed the refusal. One line now says the checkpoint reads again.
TEST_F(CheckpointWatcherTest, ARefusalThatRecoversWithTheServedModelIsLogged) {
  Watched w(checkpoints_);
  ASSERT_TRUE(w.watcher.LoadInitial().ok()) << w.log.All();
  const std::string served = checkpoints_ + "/step-00000002";

  fs::rename(checkpoints_, dir_ / "aside");
  EXPECT_FALSE(w.watcher.PollOnce().ok()) << w.log.All();
  ASSERT_EQ(w.metrics.reloads_failed.load(), 1u) << w.log.All();
  fs::rename(dir_ / "aside", checkpoints_);
  // A change is scanned once it holds still across two polls (until then a
  // poll answers the last scan's refusal).
  (void)w.watcher.PollOnce();
  EXPECT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
  EXPECT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().step, 2);
  const std::string lines = w.log.All();
  const std::string again = "dropk-serve: " + checkpoints_ +
                            " reads again, its newest checkpoint the one served, " + served +
                            "; no reload needed\n";
  ASSERT_GE(lines.size(), again.size());
  EXPECT_EQ(lines.substr(lines.size() - again.size()), again) << lines;
  EXPECT_EQ(lines.find(again), lines.size() - again.size()) << "logged more than once: " << lines;
  EXPECT_EQ(w.metrics.reloads_ok.load(), 0u);
}

// LATEST flipping between checkpoints while the watcher polls (a trainer
// and an operator both writing it, a sync tool replaying its history): a
// poll remembered the LATEST it read before its scan, while the scan read
// LATEST again. When the two differed and LATEST then settled on the first,
// every later poll took "LATEST unchanged" for "serving what LATEST names"
// and served the other checkpoint for good. Once LATEST holds still, the
// checkpoint it names is served.
TEST_F(CheckpointWatcherTest, ALatestThatFlipsDuringScansEndsServingWhatItNames) {
  Watched w(checkpoints_);
  ASSERT_TRUE(w.watcher.LoadInitial().ok()) << w.log.All();
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE(round);
    // An odd or even number of flips: the round ends on either checkpoint.
    std::atomic<bool> done{false};
    std::thread flipper([&] {
      for (int i = 0; i < 40 + round % 2; ++i) {
        PointLatestAt(i % 2 == 0 ? "step-00000001" : "step-00000002");
      }
      done = true;
    });
    while (!done.load()) (void)w.watcher.PollOnce();
    flipper.join();
    const std::string latest = checkpoints_ + "/" + [&] {
      std::ifstream in(checkpoints_ + "/LATEST");
      std::string name;
      in >> name;
      return name;
    }();
    // A change is scanned once it holds still across two polls.
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
    ASSERT_EQ(w.scheduler->CurrentModel()->snapshot().path, latest) << w.log.All();
  }
  EXPECT_EQ(w.metrics.reloads_failed.load(), 0u) << w.log.All();
}

// The checkpoint served removed from disk (deleted while it was loaded, or
// after), then LATEST naming one that cannot be loaded: the scan fell back
// to the newest checkpoint still on disk, older than the one served, and
// swapped it in; the service went back to a model nobody had named. The
// model served stays, and the refusal is logged once.
TEST_F(CheckpointWatcherTest, ARefusedLatestNeverSwapsInAnOlderCheckpointThanTheOneServed) {
  Watched w(checkpoints_);
  ASSERT_TRUE(w.watcher.LoadInitial().ok()) << w.log.All();
  ASSERT_EQ(w.scheduler->CurrentModel()->snapshot().step, 2);
  fs::rename(fs::path(checkpoints_) / "step-00000002", dir_ / "gone");
  PointLatestAt("step-00000003");  // not there
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(w.watcher.PollOnce().ok()) << w.log.All();
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().step, 2) << w.log.All();
  const std::string lines = w.log.All();
  const std::string refused =
      "dropk-serve: reload refused, keeping " + checkpoints_ + "/step-00000002: LATEST refused: ";
  const size_t first = lines.find(refused);
  EXPECT_NE(first, std::string::npos) << lines;
  EXPECT_NE(lines.find("(not going back to the older " + checkpoints_ + "/step-00000001)"),
            std::string::npos)
      << lines;
  EXPECT_EQ(lines.find(refused, first + 1), std::string::npos)
      << "logged more than once: " << lines;
  EXPECT_EQ(w.metrics.reloads_failed.load(), 1u);
  // What /readyz shows while the refusal stands, then no longer.
  EXPECT_EQ(w.metrics.ReloadRefusal().rfind("LATEST refused: ", 0), 0u)
      << w.metrics.ReloadRefusal();

  PointLatestAt("step-00000001");  // named: an older checkpoint is served
  for (int i = 0; i < 3 && w.scheduler->CurrentModel()->snapshot().step != 1; ++i) {
    (void)w.watcher.PollOnce();
  }
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().step, 1) << w.log.All();
  EXPECT_EQ(w.metrics.ReloadRefusal(), "");
}

// The checkpoints directory swapped for another run's (a symlink moved into
// its place) whose LATEST names a checkpoint of the same name: the watcher
// compared names only, took "LATEST names what is served" for no news, and
// served the old run's weights for good. The checkpoint now under the name
// is loaded. (Here the other run's step-00000002 holds step 1's weights.)
TEST_F(CheckpointWatcherTest, ACheckpointReplacedUnderItsNameIsLoaded) {
  Watched w(checkpoints_);
  ASSERT_TRUE(w.watcher.LoadInitial().ok()) << w.log.All();
  ASSERT_EQ(w.scheduler->CurrentModel()->snapshot().step, 2);
  const fs::path other = dir_ / "other_run_checkpoints";
  fs::create_directories(other / "step-00000002");
  for (const fs::directory_entry& file :
       fs::directory_iterator(fs::path(checkpoints_) / "step-00000001")) {
    fs::copy(file.path(), other / "step-00000002" / file.path().filename());
  }
  std::ofstream(other / "LATEST") << "step-00000002\n";
  fs::create_directory_symlink(other, dir_ / "run" / "swap");
  fs::rename(checkpoints_, dir_ / "run" / "old_checkpoints");
  fs::rename(dir_ / "run" / "swap", checkpoints_);
  for (int i = 0; i < 3 && w.scheduler->CurrentModel()->snapshot().step != 1; ++i) {
    EXPECT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
  }
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().step, 1) << w.log.All();
  EXPECT_EQ(w.metrics.reloads_ok.load(), 1u) << w.log.All();
  // Held still: nothing more is loaded.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
  EXPECT_EQ(w.metrics.reloads_ok.load(), 1u) << w.log.All();
}

// LATEST flapping between the checkpoint served and a broken one (two
// writers, a sync tool replaying its history): each flip to the broken one
// logged and counted its refusal again, and each flip back "is readable
// again". A refusal is logged and counted once until another checkpoint is
// swapped in.
TEST_F(CheckpointWatcherTest, ARefusalIsLoggedOnceWhileLatestFlapsBetweenItAndTheServedOne) {
  const fs::path broken = fs::path(checkpoints_) / "step-00000003";
  fs::create_directories(broken);
  std::ofstream(broken / "manifest.pb") << "garbage";
  Watched w(checkpoints_);
  ASSERT_TRUE(w.watcher.LoadInitial().ok()) << w.log.All();
  ASSERT_EQ(w.scheduler->CurrentModel()->snapshot().step, 2);
  for (int flip = 0; flip < 4; ++flip) {
    PointLatestAt("step-00000003");
    for (int i = 0; i < 3; ++i) (void)w.watcher.PollOnce();
    PointLatestAt("step-00000002");
    for (int i = 0; i < 3; ++i) (void)w.watcher.PollOnce();
  }
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().step, 2);
  const std::string lines = w.log.All();
  const std::string refused = "reload refused, keeping " + checkpoints_ + "/step-00000002: ";
  const size_t first = lines.find(refused);
  EXPECT_NE(first, std::string::npos) << lines;
  EXPECT_EQ(lines.find(refused, first + 1), std::string::npos)
      << "logged more than once: " << lines;
  const std::string again = "reads again";
  EXPECT_LE(std::count(lines.begin(), lines.end(), '\n'), 3) << lines;
  EXPECT_EQ(w.metrics.reloads_failed.load(), 1u) << lines;
  EXPECT_EQ(lines.find(again, lines.find(again) + 1), std::string::npos) << lines;
}

// Bytes this process has read so far (Linux's /proc/self/io rchar).
int64_t BytesReadByThisProcess() {
  std::ifstream io("/proc/self/io");
  std::string key;
  int64_t value = 0;
  while (io >> key >> value) {
    if (key == "rchar:") return value;
  }
  return -1;
}

// While LATEST named a checkpoint still being copied in (rsync writes a
// temporary file that grows for minutes) and an older one was served, every
// poll saw a new fingerprint and scanned: the served checkpoint's weights
// were read and CRC-checked again at every poll (hundreds of GB for a 500 MB
// model). Now a scan waits for the change to hold still across two polls:
// no checkpoint is read while the file grows, and the checkpoint is served
// once it is whole and still.
TEST_F(CheckpointWatcherTest, ACheckpointBeingCopiedInIsNotScannedAtEveryPoll) {
  const fs::path step2 = fs::path(checkpoints_) / "step-00000002";
  fs::rename(step2, dir_ / "held2");
  fs::create_directory(step2);
  PointLatestAt("step-00000002");
  ServiceMetrics metrics;
  std::unique_ptr<Scheduler> scheduler =
      Scheduler::Create(SchedulerOptions{.max_batch = 2, .num_threads = 1}, &metrics).value();
  RecordingLog log;
  CheckpointWatcher watcher(checkpoints_, scheduler.get(), &metrics, &log);
  ASSERT_TRUE(watcher.LoadInitial().ok()) << log.All();  // step 2 skipped, step 1 served
  ASSERT_EQ(scheduler->CurrentModel()->snapshot().step, 1);
  const int64_t weights_bytes =
      static_cast<int64_t>(fs::file_size(fs::path(checkpoints_) / "step-00000001/model.data"));
  ASSERT_GT(weights_bytes, 0);

  const int64_t read_before = BytesReadByThisProcess();
  ASSERT_GE(read_before, 0);
  for (int i = 0; i < 20; ++i) {  // rsync's temporary file grows between polls
    std::ofstream(step2 / ".model.data.Xy12", std::ios::app) << std::string(1000, 'x');
    (void)watcher.PollOnce();
  }
  const int64_t read_while_copying = BytesReadByThisProcess() - read_before;
  // Before: 20 scans, each reading step 1's weights (20 x weights_bytes).
  EXPECT_LT(read_while_copying, weights_bytes) << log.All();
  EXPECT_LE(metrics.reloads_failed.load(), 1u) << log.All();
  EXPECT_EQ(scheduler->CurrentModel()->snapshot().step, 1);

  // The copy completes (rsync renames its file into place) and holds still.
  fs::remove(step2 / ".model.data.Xy12");
  for (const fs::directory_entry& file : fs::directory_iterator(dir_ / "held2")) {
    fs::copy(file.path(), step2 / file.path().filename());
  }
  for (int i = 0; i < 3 && scheduler->CurrentModel()->snapshot().step != 2; ++i) {
    EXPECT_TRUE(watcher.PollOnce().ok()) << log.All();
  }
  EXPECT_EQ(scheduler->CurrentModel()->snapshot().step, 2) << log.All();
  EXPECT_EQ(metrics.reloads_ok.load(), 1u);
  // Nothing changes any more: no scan, no read of a checkpoint.
  const int64_t read_settled = BytesReadByThisProcess();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(watcher.PollOnce().ok());
  EXPECT_LT(BytesReadByThisProcess() - read_settled, weights_bytes);
}

// A checkpoint of another model under LATEST (another run's checkpoints
// copied in, a config changed and trained afresh) was swapped in without a
// word, and its model id, from the step alone, could equal the old one's.
// It is still served, as LATEST names it, with one line naming each field
// that changed; a reload of the same model says nothing of the kind.
TEST_F(CheckpointWatcherTest, AnotherModelShapeSwappedInIsLoggedNamingWhatChanged) {
  Watched w(checkpoints_);
  PointLatestAt("step-00000001");
  ASSERT_TRUE(w.watcher.LoadInitial().ok()) << w.log.All();
  PointLatestAt("step-00000002");
  ASSERT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
  ASSERT_EQ(w.scheduler->CurrentModel()->snapshot().step, 2) << w.log.All();
  EXPECT_EQ(w.log.All().find("another model"), std::string::npos) << w.log.All();

  // Three steps of a wider, shallower model with a longer context.
  TrainConfig other =
      test_util::TinySmokeEveryStepConfig((dir_ / "data").string(), (dir_ / "other").string(), 3);
  other.set_n_layer(1);
  other.set_n_embd(48);
  other.set_block_size(48);
  ASSERT_TRUE(ValidateTrainConfig(other).ok());
  std::ostringstream train_log;
  ASSERT_TRUE(RunTraining(other, *MakeSingleProcessCommunicator(), train_log).ok())
      << train_log.str();
  fs::copy(dir_ / "other/checkpoints/step-00000003", fs::path(checkpoints_) / "step-00000003");
  PointLatestAt("step-00000003");
  ASSERT_TRUE(w.watcher.PollOnce().ok()) << w.log.All();
  ASSERT_EQ(w.scheduler->CurrentModel()->snapshot().step, 3) << w.log.All();
  EXPECT_EQ(w.scheduler->CurrentModel()->snapshot().config.n_layer, 1);
  const std::string line = "dropk-serve: warning: " + checkpoints_ +
                           "/step-00000003 is another model than " + checkpoints_ +
                           "/step-00000002: n_layer 2 -> 1, n_embd 32 -> 48, block_size 32 -> 48; "
                           "serving it as dropk-step-00000003\n";
  EXPECT_NE(w.log.All().find(line), std::string::npos) << w.log.All();
}

}  // namespace
}  // namespace dropk
