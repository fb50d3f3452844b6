// dropk-train's command line: every invalid value stops with exit code 2 and
// one line naming the field and the value.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "support/shakespeare_data.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "trainer/run_directory_lock.h"

namespace dropk {
namespace {

test_util::CommandResult RunTrainCli(const std::string& args) {
  const test_util::CommandResult r =
      test_util::RunCommand(DROPK_BINARY_DIR "/bin/dropk-train " + args);
  return {r.exit_code, r.out + r.err, ""};
}

class TrainCliTest : public ::testing::Test {
 protected:
  // Data, outputs and scratch live in a directory of this process's own:
  // ctest runs each test as its own process, possibly several at once.
  static void SetUpTestSuite() {
    scratch_ = new test_util::ScopedTempDir("train_cli");
    data_ = new std::string(scratch_->path() + "/data");
    ASSERT_TRUE(test_util::PrepareShakespeareData(*data_).ok());
  }
  static void TearDownTestSuite() {
    delete data_;
    delete scratch_;  // removes everything under it
  }
  static std::string Base() {
    return "--config " DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto --data_dir=" + *data_ +
           " --out_dir=" + scratch_->path() + "/out";
  }
  // A copy of the prepared data, scratch/<name>, for a test to change.
  static std::string CopyOfData(const std::string& name) {
    const std::string copy = scratch_->path() + "/" + name;
    std::filesystem::copy(*data_, copy, std::filesystem::copy_options::recursive);
    return copy;
  }
  // One training step on `data_dir`, into its own out_dir.
  static test_util::CommandResult TrainOneStepOn(const std::string& data_dir) {
    return RunTrainCli(Base() + " --data_dir=" + data_dir + " --out_dir=" + data_dir +
                       "_out --max_iters=1 --eval_iters=1 --sample_tokens=0");
  }
  // The arguments of a two-step run into `out` that saves at its end.
  static std::string TwoStepRunThatSaves(const std::string& out) {
    return Base() + " --out_dir=" + out +
           " --max_iters=2 --save_every=2 --eval_iters=1 --sample_tokens=0";
  }
  static test_util::ScopedTempDir* scratch_;
  static std::string* data_;
};
test_util::ScopedTempDir* TrainCliTest::scratch_ = nullptr;
std::string* TrainCliTest::data_ = nullptr;

struct BadArgs {
  const char* args;
  const char* expected;  // must appear in the output
};

TEST_F(TrainCliTest, InvalidValuesExitTwoNamingTheField) {
  const BadArgs cases[] = {
      {"--n_embd=130 --n_head=4", "n_embd=130"},
      {"--dropout=1.5", "dropout=1.5"},
      {"--dropout=-0.1", "dropout=-0.1"},
      {"--dropout_mlp_output=1", "dropout_mlp_output=1"},
      {"--block_size=2000000", "block_size=2000000"},
      {"--data_dir=/nonexistent/dir", "/nonexistent/dir"},
      {"--no_such_field=3", "no_such_field"},
      {"--n_layer=abc", "n_layer=abc"},
      {"--learning_rate=0", "learning_rate=0"},
      {"--num_threads=100000", "num_threads=100000: must be in [0, 1024]"},
      // 1 as a float: quoted as typed, not as "dropout=1".
      {"--dropout 0.99999999", "--dropout=0.99999999: 0.99999999 (1 as a float) must be in"},
      {"--gradient_accumulation_steps=100000",
       "gradient_accumulation_steps=100000: must be at most 65536"},
  };
  for (const BadArgs& c : cases) {
    const test_util::CommandResult r = RunTrainCli(Base() + " " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expected), std::string::npos) << c.args << "\n" << r.out;
  }
}

// Every problem of a config is one line, and each begins as the first
// does: only the first said "dropk-train:", and under mpirun "rank N:", so
// a second problem of rank 1's read as a line of nobody's among the other
// ranks' output. (A launcher's rank is read from its environment.)
TEST_F(TrainCliTest, EveryLineOfSeveralConfigProblemsNamesTheProgramAndRank) {
  const test_util::CommandResult r = RunTrainCli(Base() + " --n_layer=0 --dropout=2");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_EQ(r.out,
            "dropk-train: n_layer=0: must be >= 1\n"
            "dropk-train: dropout=2: must be in [0, 1)\n");
  const test_util::CommandResult rank1 =
      test_util::RunCommand("OMPI_COMM_WORLD_RANK=1 " DROPK_BINARY_DIR "/bin/dropk-train " +
                            Base() + " --n_layer=0 --dropout=2");
  EXPECT_EQ(rank1.exit_code, 2) << rank1.err;
  EXPECT_EQ(rank1.err,
            "dropk-train: rank 1: n_layer=0: must be >= 1\n"
            "dropk-train: rank 1: dropout=2: must be in [0, 1)\n");
}

TEST_F(TrainCliTest, MissingConfigFileExitsTwoNamingIt) {
  const test_util::CommandResult r = RunTrainCli("--config /nonexistent/run.textproto");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("/nonexistent/run.textproto"), std::string::npos) << r.out;
}

TEST_F(TrainCliTest, ConfigThatIsADirectoryExitsTwoNamingIt) {
  const std::string dir = scratch_->path() + "/config_dir";
  std::filesystem::create_directories(dir);
  const test_util::CommandResult r = RunTrainCli("--config " + dir + " --max_iters=1");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find(dir + ": not a regular file"), std::string::npos) << r.out;
}

// Each of these named the wrong thing or nothing, or exited 1 (a runtime
// failure) for a setting the user has to change.
TEST_F(TrainCliTest, ConfigFileMistakesExitTwoWithOneLineNamingThem) {
  const std::string a = scratch_->path() + "/a.textproto";
  const std::string b = scratch_->path() + "/b.textproto";
  std::ofstream(a) << "max_iters: 1\n";
  std::ofstream(b) << "max_iters: 1\nn_layer: 1\nn_layer: 3\n";
  const std::string huge = scratch_->path() + "/huge.textproto";
  std::ofstream(huge) << "max_iters: 1\n";
  std::filesystem::resize_file(huge, uintmax_t{3} << 30);  // sparse
  const BadArgs cases[] = {
      // The first --config was dropped without a word.
      {"--config a.textproto --config b.textproto", "(a.textproto, b.textproto)"},
      // The last n_layer won.
      {"--config b.textproto", "b.textproto:3:1: field n_layer is set twice"},
      // "out of memory ... lower the sizes in the configuration", exit 1.
      {"--config huge.textproto", "huge.textproto: 3221225472 bytes, more than the 16 MiB"},
  };
  for (const BadArgs& c : cases) {
    const test_util::CommandResult r = test_util::RunCommand(
        "cd " + scratch_->path() + " && " DROPK_BINARY_DIR "/bin/dropk-train " + c.args +
        " --data_dir=" + *data_ + " --out_dir=" + scratch_->path() + "/out_config_mistakes");
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.args << "\n" << r.err;
  }
  std::filesystem::remove(huge);
}

// A run directory that names a regular file read "cannot create: Not a
// directory" and exited 1, as if the disk had failed.
TEST_F(TrainCliTest, RunDirectoryThatIsAFileExitsTwoNamingIt) {
  const std::string file = scratch_->path() + "/a_file";
  std::ofstream(file) << "x";
  const BadArgs cases[] = {
      {"--out_dir=", "out_dir="},
      {"--checkpoint_dir=", "checkpoint_dir="},
  };
  for (const BadArgs& c : cases) {
    const test_util::CommandResult r =
        RunTrainCli(Base() + " --out_dir=" + scratch_->path() + "/out_file_in_the_way" +
                    " --max_iters=1 --sample_tokens=0 " + c.args + file);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(std::string(c.expected) + file + ": cannot create"), std::string::npos)
        << c.args << "\n"
        << r.out;
  }
}

// A run directory inside another run's checkpoint (a fine-tune saved in
// the checkpoint it starts from; a checkpoint_dir named like a step that
// run will save) was accepted, and that run's keep_last pruning or its
// next save of the step deleted it, checkpoints and all, without a word.
// Refused now, exit 2, naming the field and the checkpoint; a directory
// merely named like a step, outside any checkpoints directory, is fine.
TEST_F(TrainCliTest, RunDirectoryInsideAnotherRunsCheckpointIsRefused) {
  const std::string base_run = scratch_->path() + "/base_run";
  ASSERT_EQ(RunTrainCli(TwoStepRunThatSaves(base_run)).exit_code, 0);
  const std::string checkpoints = base_run + "/checkpoints";
  const std::string step2 = checkpoints + "/step-00000002";
  const BadArgs cases[] = {
      {"--checkpoint_dir=", "checkpoint_dir="},
      {"--out_dir=", "out_dir="},
  };
  for (const BadArgs& c : cases) {
    for (const std::string& dir : {step2 + "/finetune", checkpoints + "/step-00000010"}) {
      const test_util::CommandResult r = RunTrainCli(
          Base() + " --out_dir=" + scratch_->path() + "/finetune_out --max_iters=1 "
                   "--sample_tokens=0 " + c.args + dir);
      EXPECT_EQ(r.exit_code, 2) << c.args << dir << "\n" << r.out;
      const std::string step = dir.substr(0, dir.find('/', checkpoints.size() + 1));
      EXPECT_NE(r.out.find(std::string(c.expected) + dir + ": inside checkpoint " + step +
                           " of the checkpoints directory " + checkpoints +
                           ", whose run's keep_last pruning"),
                std::string::npos)
          << c.args << dir << "\n"
          << r.out;
      EXPECT_FALSE(std::filesystem::exists(dir)) << "made before the refusal: " << dir;
    }
  }
  EXPECT_TRUE(std::filesystem::exists(step2 + "/manifest.pb"));
  const test_util::CommandResult ok = RunTrainCli(
      Base() + " --out_dir=" + scratch_->path() + "/sweep/step-00000002 --max_iters=1 "
               "--eval_iters=1 --sample_tokens=0");
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
}

// A step-N directory without a manifest in checkpoint_dir was named as
// checkpoints to continue with --resume=latest, which then refused it ("no
// checkpoint verifies"): a dead end. It is named as what it is.
TEST_F(TrainCliTest, AStepDirectoryWithoutAManifestIsNamedAsNoCheckpoint) {
  const std::string out = scratch_->path() + "/stray_step";
  const std::string stray = out + "/checkpoints/step-00000010";
  std::filesystem::create_directories(stray);
  std::ofstream(stray + "/model.data") << "junk";
  const test_util::CommandResult r =
      RunTrainCli(Base() + " --out_dir=" + out + " --max_iters=1 --sample_tokens=0");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("checkpoint_dir " + out + "/checkpoints holds " + stray +
                       ", without manifest.pb: not a checkpoint (a copy cut short, or files put "
                       "there by hand), and a save of that step would replace it; move it away"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("--resume=latest"), std::string::npos) << r.out;
}

// A run directory that exists but may not be written (no permission, a
// read-only file system) exited 1 ("cannot open .../.dropk-train.lock"), as
// if the disk had failed: it is the user's to fix, exit 2 naming the field.
// /sys stands for it: no process, root included, may create a file there.
TEST_F(TrainCliTest, RunDirectoryThatCannotBeWrittenExitsTwoNamingIt) {
  const int probe = ::open("/sys/.dropk-probe", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (probe >= 0) {
    ::close(probe);
    ::unlink("/sys/.dropk-probe");
    GTEST_SKIP() << "/sys is writable here";
  }
  if (!std::filesystem::is_directory("/sys")) GTEST_SKIP() << "no /sys here";
  const BadArgs cases[] = {
      {"--out_dir=/sys", "out_dir=/sys: cannot write there: cannot open /sys/.dropk-train.lock: "},
      {"--checkpoint_dir=/sys",
       "checkpoint_dir=/sys: cannot write there: cannot open /sys/.dropk-train.lock: "},
  };
  for (const BadArgs& c : cases) {
    const test_util::CommandResult r =
        RunTrainCli(Base() + " --out_dir=" + scratch_->path() + "/out_unwritable" +
                    " --max_iters=1 --sample_tokens=0 " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expected), std::string::npos) << c.args << "\n" << r.out;
  }
}

// A run directory where no directory can be made (mkdir under /proc fails
// with ENOENT, "No such file or directory") exited 1, as if the disk had
// failed, where a missing permission exits 2: the path is the user's to fix.
TEST_F(TrainCliTest, RunDirectoryThatCannotBeMadeThereExitsTwoNamingIt) {
  std::error_code ec;
  std::filesystem::create_directory("/proc/dropk-probe", ec);
  if (ec != std::errc::no_such_file_or_directory) {
    GTEST_SKIP() << "mkdir under /proc says " << ec.message() << " here";
  }
  const BadArgs cases[] = {
      {"--out_dir=/proc/dropk/run", "out_dir=/proc/dropk/run: cannot create"},
      {"--checkpoint_dir=/proc/dropk/run", "checkpoint_dir=/proc/dropk/run: cannot create it: "},
  };
  for (const BadArgs& c : cases) {
    const test_util::CommandResult r =
        RunTrainCli(Base() + " --out_dir=" + scratch_->path() + "/out_cannot_be_made" +
                    " --max_iters=1 --sample_tokens=0 " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expected), std::string::npos) << c.args << "\n" << r.out;
  }
}

// A job refused a run directory that another job holds leaves nothing there:
// its failure record (OUT_DIR/failures) would read as that job's own.
TEST_F(TrainCliTest, AJobRefusedAnotherJobsRunDirectoryRecordsNothingThere) {
  const std::string out = scratch_->path() + "/held_by_another";
  std::ostringstream log;
  absl::StatusOr<RunDirectoryLock> other = RunDirectoryLock::Acquire(out, "out_dir", log);
  ASSERT_TRUE(other.ok()) << other.status();
  other->RecordHolder(log);
  const test_util::CommandResult r =
      RunTrainCli(Base() + " --out_dir=" + out + " --max_iters=1 --sample_tokens=0");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("out_dir=" + out + " is in use by another dropk-train job"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(std::filesystem::exists(out + "/failures")) << r.out;
}

// A run directory behind a symbolic link to nothing (a file system that is
// not mounted) read "cannot create: File exists" and exited 1: it is named,
// with where it points, exit 2.
TEST_F(TrainCliTest, RunDirectoryBehindALinkToNothingExitsTwoNamingTheLink) {
  const std::string link = scratch_->path() + "/unmounted_run";
  const std::string target = scratch_->path() + "/not_mounted/run";
  std::filesystem::remove(link);
  std::filesystem::create_directory_symlink(target, link);
  const test_util::CommandResult r =
      RunTrainCli(Base() + " --out_dir=" + link + " --max_iters=1 --sample_tokens=0");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("dropk-train: out_dir=" + link + ": cannot create: " + link +
                       " is a symbolic link to " + target + ", which does not exist"),
            std::string::npos)
      << r.out;
  std::filesystem::remove(link);
}

// Runs too large for the machine are refused before anything is allocated,
// naming the memory needed and the memory available (they used to abort on
// std::bad_alloc, or meet the OOM killer).
TEST_F(TrainCliTest, RunsTooLargeForMemoryExitTwoNamingNeededAndAvailable) {
  const BadArgs cases[] = {
      {"--batch_size=2147483647", "batch_size=2147483647"},
      {"--n_layer=1000 --n_embd=8192 --n_head=64", "n_layer=1000"},
      {"--n_layer=2147483647 --n_embd=2147483646 --n_head=2", "n_layer=2147483647"},
  };
  for (const BadArgs& c : cases) {
    const test_util::CommandResult r = RunTrainCli(Base() + " " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expected), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_EQ(r.out.find("bad_alloc"), std::string::npos) << c.args << "\n" << r.out;
  }
  const test_util::CommandResult r = RunTrainCli(Base() + " --batch_size=2147483647");
  EXPECT_NE(r.out.find("this run needs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("is available"), std::string::npos) << r.out;
}

// When an allocation fails anyway (here under an address-space limit the
// memory check cannot see), the trainer says so in one line and exits 1.
TEST_F(TrainCliTest, AllocationFailureExitsOneWithOneLineNotAnAbort) {
  const test_util::CommandResult raw =
      test_util::RunCommand("ulimit -v 1000000 && " DROPK_BINARY_DIR "/bin/dropk-train " + Base() +
                            " --batch_size=600 --block_size=64 --n_layer=4 --n_embd=128 --n_head=4"
                            " --max_iters=1 --eval_iters=1 --sample_tokens=0");
  EXPECT_EQ(raw.exit_code, 1) << raw.out << raw.err;
  EXPECT_NE(raw.err.find("dropk-train: out of memory"), std::string::npos) << raw.err;
}

// init_from read the whole safetensors file into memory before looking at
// its header: a file larger than memory (a sparse 16 GiB one here, under a
// 2 GB address-space limit) failed with "out of memory (an allocation
// failed); ... lower batch_size, ...", exit 1, naming neither init_from nor
// the file. Only the header is read first, so the file is judged by it.
TEST_F(TrainCliTest, AnInitFromFileLargerThanMemoryIsJudgedByItsHeader) {
  const std::string path = scratch_->path() + "/huge.safetensors";
  const std::string json =
      R"({"wte.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>(uint64_t{json.size()} >> (8 * i));
  std::ofstream(path, std::ios::binary) << length << json;
  ASSERT_EQ(truncate(path.c_str(), off_t{16} << 30), 0) << "a sparse 16 GiB file";
  const test_util::CommandResult raw = test_util::RunCommand(
      "ulimit -v 2000000 && " DROPK_BINARY_DIR "/bin/dropk-train " + Base() +
      " --init_from=" + path + " --max_iters=1 --eval_iters=1 --sample_tokens=0");
  EXPECT_EQ(raw.exit_code, 2) << raw.err;
  EXPECT_NE(raw.err.find("init_from=" + path + ": holds 0 transformer blocks"), std::string::npos)
      << raw.err;
  EXPECT_EQ(raw.err.find("out of memory"), std::string::npos) << raw.err;
}

// The rows of every metrics file in `dir` (metrics.jsonl and any kept
// beside it), one string per row, files in name order.
std::vector<std::string> MetricsRowsIn(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("metrics", 0) == 0 && name.size() > 6 &&
        name.substr(name.size() - 6) == ".jsonl") {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> rows;
  for (const std::string& file : files) {
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) rows.push_back(line);
  }
  return rows;
}

// A fresh run with the same out_dir as an earlier one and another
// checkpoint_dir truncated the earlier run's metrics.jsonl: its metrics were
// lost without a word. They are kept beside it, and a line says where.
TEST_F(TrainCliTest, AFreshRunKeepsTheEarlierRunsMetrics) {
  const std::string out = scratch_->path() + "/two_runs";
  const std::string common = Base() + " --out_dir=" + out +
                             " --max_iters=2 --log_interval=1 --eval_interval=2 --eval_iters=1 "
                             "--sample_tokens=0 --save_every=2";
  const test_util::CommandResult first = RunTrainCli(common + " --checkpoint_dir=" + out + "/c1");
  ASSERT_EQ(first.exit_code, 0) << first.out;
  const std::vector<std::string> first_rows = MetricsRowsIn(out);
  ASSERT_FALSE(first_rows.empty());
  const test_util::CommandResult second =
      RunTrainCli(common + " --checkpoint_dir=" + out + "/c2 --seed=7");
  ASSERT_EQ(second.exit_code, 0) << second.out;
  const std::vector<std::string> rows = MetricsRowsIn(out);
  ASSERT_EQ(rows.size(), 2 * first_rows.size()) << second.out;
  EXPECT_EQ(std::vector<std::string>(rows.begin(), rows.begin() + first_rows.size()), first_rows);
  EXPECT_NE(second.out.find("dropk-train: " + out +
                            "/metrics.jsonl held an earlier run's "
                            "metrics; kept as " +
                            out + "/metrics.earlier-run-"),
            std::string::npos)
      << second.out;
}

// Every file under `dir`, the lock files (whose note names the last job
// that held them) included, as path -> contents.
std::map<std::string, std::string> FilesUnder(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    files[entry.path().string()] = std::string(std::istreambuf_iterator<char>(in), {});
  }
  return files;
}

// A start by hand refused for the user to fix (exit 2) appended its line to
// the failure record (OUT_DIR/failures) of the run directory it named, often
// an earlier run's, whose history then held starts that never ran. (A rank
// of a job still records it: DdpFaultTest, LaunchCliTest.) A start refused
// after it had locked the directory (a checkpoint it cannot resume) also
// replaced the lock files' note of the earlier run with its own pid.
TEST_F(TrainCliTest, ARefusedStartLeavesAnEarlierRunsDirectoryAsItWas) {
  const std::string out = scratch_->path() + "/earlier_run";
  const std::string run = TwoStepRunThatSaves(out);
  ASSERT_EQ(RunTrainCli(run).exit_code, 0);
  const std::map<std::string, std::string> before = FilesUnder(out);
  for (const std::string& refused :
       {std::string(" --resume=latest --n_layer=3"), " --data_dir=" + scratch_->path() + "/none",
        std::string(" --block_size=2000000 --batch_size=1")}) {
    SCOPED_TRACE(refused);
    const test_util::CommandResult r = RunTrainCli(run + refused);
    EXPECT_EQ(r.exit_code, 2) << r.out;
    EXPECT_FALSE(std::filesystem::exists(out + "/failures")) << r.out;
    EXPECT_TRUE(FilesUnder(out) == before) << r.out;
    const std::string lock = out + "/" + kTrainingLock.file_name;
    EXPECT_EQ(FilesUnder(out)[lock], before.at(lock)) << "the earlier run's holder note changed";
  }
}

// Resuming a run that had reached max_iters evaluated again, appended a
// second row for the step to metrics.jsonl, and logged "0 tok/s" and
// "done, 2 steps".
TEST_F(TrainCliTest, ResumingAtMaxItersSaysNothingToTrain) {
  const std::string out = scratch_->path() + "/finished_run";
  const std::string run = TwoStepRunThatSaves(out);
  ASSERT_EQ(RunTrainCli(run).exit_code, 0);
  const std::vector<std::string> rows = MetricsRowsIn(out);
  const test_util::CommandResult again = RunTrainCli(run + " --resume=latest");
  EXPECT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("dropk-train: already at step 2 of max_iters=2; nothing to train\n"),
            std::string::npos)
      << again.out;
  EXPECT_EQ(again.out.find("tok/s"), std::string::npos) << again.out;
  EXPECT_EQ(again.out.find("done,"), std::string::npos) << again.out;
  EXPECT_EQ(MetricsRowsIn(out), rows);
}

// A shard copied by hand passed every check of the data (one preparation's
// dataset id, sizes the ranks agree on) and was trained on twice without a
// word; then it was named in a warning. The files are now checked against
// those tokenizer.pb records, and a file it does not record is refused.
TEST_F(TrainCliTest, ACopiedShardIsRefusedNamingIt) {
  const std::string dup = CopyOfData("data_with_a_copied_shard");
  std::filesystem::rename(dup + "/train.bin", dup + "/train-00000.bin");
  std::filesystem::copy_file(dup + "/train-00000.bin", dup + "/train-00001.bin");
  const test_util::CommandResult r = TrainOneStepOn(dup);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(
      r.out.find("dropk-train: token file '" + dup + "/train-00000.bin' is not one of the files " +
                 dup + "/tokenizer.pb records for its preparation (train.bin, val.bin)"),
      std::string::npos)
      << r.out;
}

// A token changed into another valid token id passed every check of the
// data and was trained on without a word.
TEST_F(TrainCliTest, AChangedTokenExitsTwoNamingTheFile) {
  const std::string changed = CopyOfData("data_with_a_changed_token");
  ASSERT_TRUE(test_util::ChangeOneByteToken(changed + "/train.bin", 12345));
  const test_util::CommandResult r = TrainOneStepOn(changed);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_NE(r.out.find("dropk-train: token file '" + changed +
                       "/train.bin' does not match its checksum recorded in " + changed +
                       "/tokenizer.pb when it was prepared"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("run `dropk data prepare` again"), std::string::npos) << r.out;
}

// Data from a corpus without line breaks cannot encode the default
// sample_prompt ("\n"): the run stopped on "sample_prompt: character
// '\u000a' ... is not in the tokenizer's vocabulary", a field the user never
// set, without saying what to set. It names both ways out, in one line,
// before any checkpoint is written.
TEST_F(TrainCliTest, ADefaultSamplePromptTheDataCannotEncodeSaysWhatToSet) {
  const std::string text = scratch_->path() + "/no_line_breaks.txt";
  {
    std::ofstream out(text, std::ios::binary);
    for (int i = 0; i < 2000; ++i) out << "abcdefgh";
  }
  const std::string data = scratch_->path() + "/no_line_breaks";
  const test_util::CommandResult prepared = test_util::RunCommand(
      DROPK_BINARY_DIR "/bin/dropk data prepare --tokenizer char --out " + data + " " + text);
  ASSERT_EQ(prepared.exit_code, 0) << prepared.err;
  const std::string out_dir = data + "_out";
  const test_util::CommandResult r = RunTrainCli(Base() + " --data_dir=" + data + " --out_dir=" +
                                                 out_dir + " --max_iters=1 --eval_iters=1");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_NE(r.out.find("dropk-train: sample_prompt: character"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("; set sample_prompt to text of data_dir=" + data +
                       "'s vocabulary, or sample_tokens=0 to sample nothing\n"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(std::filesystem::exists(out_dir + "/checkpoints"));
}

TEST_F(TrainCliTest, HelpListsFieldsWithDefaults) {
  const test_util::CommandResult r = RunTrainCli("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* field : {"n_layer", "dropout_attention_probs", "gradient_accumulation_steps"}) {
    EXPECT_NE(r.out.find(field), std::string::npos) << field;
  }
}

TEST_F(TrainCliTest, ShortRunSucceedsAndPrintsASample) {
  const test_util::CommandResult r =
      RunTrainCli(Base() + " --max_iters=5 --eval_interval=5 --sample_tokens=20");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("step 5/5"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dropk
