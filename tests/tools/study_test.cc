// The studies and plots: the diversity measures on known answers, metrics
// reading, and the real `dropk study` / `dropk plot` commands on a tiny run
// (reproducible for a seed, PNG files with their data beside them).
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "support/fifo.h"
#include "support/subprocess.h"
#include "tools/study/run_metrics.h"
#include "tools/study/text_diversity.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;
using test_util::ReadFile;
using test_util::RunCommand;

TEST(TextDiversityTest, DistinctNCountsDistinctWordNGrams) {
  // unigrams a b a b: 2 distinct of 4; bigrams ab ba ab: 2 distinct of 3.
  EXPECT_DOUBLE_EQ(DistinctN({"a b  a\nb"}, 1), 0.5);
  EXPECT_DOUBLE_EQ(DistinctN({"a b  a\nb"}, 2), 2.0 / 3.0);
  // Across samples: "x y" twice has 2 distinct unigrams of 4, 1 bigram of 2.
  EXPECT_DOUBLE_EQ(DistinctN({"x y", "x y"}, 1), 0.5);
  EXPECT_DOUBLE_EQ(DistinctN({"x y", "x y"}, 2), 0.5);
  EXPECT_DOUBLE_EQ(DistinctN({"", " "}, 1), 0.0);
}

TEST(TextDiversityTest, PairwiseOverlapIsOneForRepeatsAndZeroForDisjointText) {
  EXPECT_DOUBLE_EQ(MeanPairwiseBigramOverlap({"to be or not", "to be or not", "to be or not"}),
                   1.0);
  EXPECT_DOUBLE_EQ(MeanPairwiseBigramOverlap({"to be or not", "that is the question"}), 0.0);
  // {to be, be or} vs {to be, be gone}: 1 shared of 3.
  EXPECT_DOUBLE_EQ(MeanPairwiseBigramOverlap({"to be or", "to be gone"}), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(MeanPairwiseBigramOverlap({"only one"}), 0.0);
}

class StudyFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("dropk_study_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  fs::path dir_;
};

TEST_F(StudyFilesTest, ReadsMetricsSkippingATornLastLineAndSummarisesEvaluations) {
  const std::string path = Write(
      "metrics.jsonl",
      "{\"step\":0,\"train_loss\":4.0,\"eval_train_loss\":4.1,\"val_loss\":4.2,\"lr\":0.001}\n"
      "{\"step\":10,\"train_loss\":3.0,\"lr\":0.001,\"tokens_per_s\":100}\n"
      "{\"step\":20,\"eval_train_loss\":2.0,\"val_loss\":2.5}\n"
      "{\"step\":30,\"eval_train_loss\":1.5,\"val_loss\":2.7}\n"
      "{\"step\":40,\"tra");
  absl::StatusOr<std::vector<RunMetricsRow>> rows = ReadRunMetrics(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[1].step, 10);
  EXPECT_FALSE((*rows)[1].val_loss.has_value());
  EXPECT_DOUBLE_EQ(*(*rows)[1].tokens_per_s, 100);
  absl::StatusOr<EvalSummary> summary = SummarizeEvaluations(*rows);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->best_val_step, 20);
  EXPECT_DOUBLE_EQ(summary->best_val_loss, 2.5);
  EXPECT_EQ(summary->final_step, 30);
  EXPECT_DOUBLE_EQ(summary->final_gap(), 2.7 - 1.5);
}

TEST_F(StudyFilesTest, ABrokenMetricsLineIsRefusedNamingFileAndLine) {
  const std::string path = Write("metrics.jsonl", "{\"step\":0}\nnot json\n{\"step\":2}\n");
  absl::StatusOr<std::vector<RunMetricsRow>> rows = ReadRunMetrics(path);
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find(path + ":2:"), std::string::npos) << rows.status();
  EXPECT_FALSE(SummarizeEvaluations({RunMetricsRow{}}).ok());
  // One line, and no row: named as that line, where it read "no metrics rows".
  const std::string one = Write("one.jsonl", "garbage\n");
  rows = ReadRunMetrics(one);
  ASSERT_FALSE(rows.ok());
  EXPECT_EQ(rows.status().message(),
            one + ":1: not a metrics row (a JSON object with an integer \"step\")");
}

// dropk plot on a run whose metrics.jsonl is a FIFO blocked for ever; one
// linked to /dev/zero read until memory ran out.
TEST_F(StudyFilesTest, AMetricsFileThatIsNotARegularFileIsRefusedWithoutReading) {
  test_util::FifoWithUnblocker fifo((dir_ / "fifo.jsonl").string(), std::chrono::seconds(10));
  fs::create_symlink("/dev/zero", dir_ / "zero.jsonl");
  for (const std::string& path : {fifo.path(), (dir_ / "zero.jsonl").string()}) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<RunMetricsRow>> rows = ReadRunMetrics(path);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5)) << path;
    ASSERT_FALSE(rows.ok());
    EXPECT_NE(rows.status().message().find(path + ": not a regular file"), std::string::npos)
        << rows.status();
  }
}

// dropk study dropout --corpus FIFO blocked for ever.
TEST_F(StudyFilesTest, ACorpusThatIsNotARegularFileIsRefused) {
  test_util::FifoWithUnblocker fifo((dir_ / "corpus.fifo").string(), std::chrono::seconds(10));
  const auto start = std::chrono::steady_clock::now();
  const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study dropout --corpus ") +
                            fifo.path() + " --out " + (dir_ / "study").string());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("corpus " + fifo.path() + ": not a regular file"), std::string::npos)
      << r.err;
}

bool IsPng(const std::string& path) {
  const std::string bytes = ReadFile(path);
  return bytes.size() > 1000 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
}

TEST_F(StudyFilesTest, PlotWritesPngsWithTheirDataAndNamesAMissingRun) {
  fs::create_directories(dir_ / "run");
  Write("run/metrics.jsonl",
        "{\"step\":0,\"train_loss\":4.0,\"eval_train_loss\":4.1,\"val_loss\":4.2,\"lr\":0.0,"
        "\"tokens_per_s\":0}\n"
        "{\"step\":10,\"train_loss\":3.0,\"lr\":0.001,\"tokens_per_s\":900}\n"
        "{\"step\":20,\"train_loss\":2.0,\"eval_train_loss\":2.1,\"val_loss\":2.3,\"lr\":0.0005,"
        "\"tokens_per_s\":950}\n");
  const auto r = RunCommand(DROPK_BINARY_DIR "/bin/dropk plot " + (dir_ / "run").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"loss", "lr", "tokens_per_s"}) {
    EXPECT_TRUE(IsPng((dir_ / "run/plots" / (std::string(name) + ".png")).string())) << name;
  }
  EXPECT_NE(ReadFile((dir_ / "run/plots/metrics.csv").string()).find("20,2,2.1"),
            std::string::npos);

  const auto missing = RunCommand(DROPK_BINARY_DIR "/bin/dropk plot " + (dir_ / "nope").string());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find((dir_ / "nope" / "metrics.jsonl").string()), std::string::npos)
      << missing.err;
}

// gnuplot strings were single-quoted literals, which cannot hold a newline:
// a run directory named "run\n!touch PWNED" ended `set title 'run` at the
// newline, and gnuplot ran the next line, `!touch PWNED`, in a shell (then
// failed on the rest). One whose name starts with ' made gnuplot fail
// ('''x' reads as '' and 'x'). Any name is now one string in one command:
// the plots are drawn and nothing runs.
TEST_F(StudyFilesTest, PlotTakesARunDirectoryOfAnyNameAsAName) {
  const fs::path pwned = dir_ / "PWNED";
  for (const std::string& name :
       {"run\n!touch " + pwned.string() + "\n\t\x7f'x\"", std::string("'quoted'")}) {
    SCOPED_TRACE(name);
    const fs::path run = dir_ / name;
    fs::create_directories(run);
    std::ofstream(run / "metrics.jsonl") << "{\"step\":0,\"train_loss\":4.0,\"val_loss\":4.2,"
                                            "\"lr\":0.001,\"tokens_per_s\":10}\n"
                                            "{\"step\":1,\"train_loss\":3.0,\"lr\":0.001,"
                                            "\"tokens_per_s\":12}\n";
    std::string quoted = "'";
    for (char c : run.string()) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    quoted += "'";
    const auto r = RunCommand(DROPK_BINARY_DIR "/bin/dropk plot " + quoted);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(fs::exists(pwned)) << "a command in the run directory's name ran";
    for (const char* plot : {"loss", "lr", "tokens_per_s"}) {
      EXPECT_TRUE(IsPng((run / "plots" / (std::string(plot) + ".png")).string())) << plot;
    }
  }
}

// An --out where no directory can be made (mkdir under /proc fails with
// ENOENT) read "cannot create DIR: No such file or directory", not naming
// --out, and exited 1 as if the disk had failed.
TEST_F(StudyFilesTest, PlotAndDropoutStudyNameAnOutThatCannotBeMade) {
  std::error_code ec;
  fs::create_directory("/proc/dropk-probe", ec);
  if (ec != std::errc::no_such_file_or_directory) {
    GTEST_SKIP() << "mkdir under /proc says " << ec.message() << " here";
  }
  fs::create_directories(dir_ / "run");
  Write("run/metrics.jsonl", "{\"step\":0,\"train_loss\":4.0,\"lr\":0.0,\"tokens_per_s\":0}\n");
  auto r = RunCommand(DROPK_BINARY_DIR "/bin/dropk plot " + (dir_ / "run").string() +
                      " --out /proc/dropk/plots");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "dropk: --out /proc/dropk/plots: cannot create it: No such file or directory\n");
  Write("corpus.txt", std::string(2000, 'a'));
  r = RunCommand(DROPK_BINARY_DIR "/bin/dropk study dropout --corpus " +
                 (dir_ / "corpus.txt").string() + " --chars 1000 --out /proc/dropk/study");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "dropk: --out /proc/dropk/study: cannot create /proc/dropk/study/data: No such file "
            "or directory\n");
}

// A corpus that is not UTF-8 was reported as "input file
// 'OUT/data/corpus.txt': invalid UTF-8": the study's private copy.
TEST_F(StudyFilesTest, ABadCorpusIsNamedAsTheUserGaveIt) {
  const std::string corpus = Write("corpus.bin", "ab\xff" + std::string(2000, 'c'));
  const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study dropout --corpus ") +
                            corpus + " --chars 1000 --out " + (dir_ / "study").string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err.rfind("dropk: --corpus " + corpus + " (its first 1000 bytes): ", 0), 0u)
      << r.err;
  EXPECT_NE(r.err.find("invalid UTF-8 at byte offset 2"), std::string::npos) << r.err;
}

// dropk study topk --threads 100000 crashed (SIGSEGV) once the model was
// loaded; a negative count was taken silently.
TEST_F(StudyFilesTest, TopKThreadsOutsideTheRangeAreRefused) {
  for (const char* threads : {"100000", "-3"}) {
    const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study topk --checkpoint ") +
                              (dir_ / "none").string() + " --out " + (dir_ / "o").string() +
                              " --threads=" + threads);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, std::string("dropk: --threads ") + threads +
                         ": must be in [0, 1024] (0: all cores)\n");
  }
}

// --samples and --max-tokens had no upper bound: 2^31 samples (compared
// pairwise) or tokens ran for days. Both are refused before the model loads,
// naming the flag, the value and the range.
TEST_F(StudyFilesTest, TopKSamplesAndMaxTokensOutsideTheRangeAreRefused) {
  const std::pair<std::string, std::string> cases[] = {
      {"--samples=1001", "dropk: --samples 1001: must be in [2, 1000]"},
      {"--samples=2147483647", "dropk: --samples 2147483647: must be in [2, 1000]"},
      {"--samples=1", "dropk: --samples 1: must be in [2, 1000]"},
      {"--max-tokens=8193", "dropk: --max-tokens 8193: must be in [1, 8192]"},
      {"--max-tokens=0", "dropk: --max-tokens 0: must be in [1, 8192]"},
  };
  for (const auto& [flag, expected] : cases) {
    const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study topk --checkpoint ") +
                              (dir_ / "none").string() + " --out " + (dir_ / "o").string() + " " +
                              flag);
    EXPECT_EQ(r.exit_code, 2) << flag << ": " << r.err;
    EXPECT_EQ(r.err.rfind(expected, 0), 0u) << flag << ": " << r.err;
  }
}

// A list flag written with '=' and an empty item (CLI11 drops it without a
// word) is refused naming the flag, the value and the item.
TEST_F(StudyFilesTest, TopKListsWithAnEmptyItemAreRefused) {
  const std::pair<std::string, std::string> cases[] = {
      {"--ks=1,,5", "dropk: --ks 1,,5: item 2 is empty"},
      {"--temperatures=0.5,1,", "dropk: --temperatures 0.5,1,: item 3 is empty"},
      {"--temperatures= ,1", "dropk: --temperatures  ,1: item 1 is empty"},
  };
  for (const auto& [flag, expected] : cases) {
    const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study topk --checkpoint ") +
                              (dir_ / "none").string() + " --out " + (dir_ / "o").string() + " '" +
                              flag + "'");
    EXPECT_EQ(r.exit_code, 2) << flag << ": " << r.err;
    EXPECT_EQ(r.err.rfind(expected, 0), 0u) << flag << ": " << r.err;
  }
}

// --help showed "--samples INT=20", "--max-tokens INT=200" and "--threads
// INT=0" with no bound, where every other command's help gives its range:
// the bounds were found only by passing a value past them.
TEST(StudyHelpTest, TopKHelpGivesTheRangeOfEachCount) {
  const auto r = RunCommand(DROPK_BINARY_DIR "/bin/dropk study topk --help");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* range : {"Completions per prompt and setting, in [2, 1000]",
                            "Tokens per completion, in [1, 8192]", "Host threads, in [0, 1024]"}) {
    EXPECT_NE(r.out.find(range), std::string::npos) << range << "\n" << r.out;
  }
}

// --temperatures were read as floats before any check: 1e-50 was refused as
// "--temperatures: 0 is outside (0, 100]". Each is checked as typed.
TEST_F(StudyFilesTest, TopKTemperaturesAreCheckedAsTyped) {
  const std::pair<std::string, std::string> cases[] = {
      {"0.8,1e-50", "dropk: --temperatures: 1e-50 is too small for a float: it would be read as 0"},
      {"1e39", "dropk: --temperatures: 1e39 (inf as a float) is outside (0, 100]"},
      {"0", "dropk: --temperatures: 0 is outside (0, 100]"},
      {"warm", "dropk: --temperatures: warm is not a number"},
      // Rounding to a float changed nothing shown: no "as a float".
      {"100.1", "dropk: --temperatures: 100.1 is outside (0, 100]"},
      {"nan", "dropk: --temperatures: nan is not a number"},
  };
  for (const auto& [temperatures, expected] : cases) {
    const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study topk --checkpoint ") +
                              (dir_ / "none").string() + " --out " + (dir_ / "o").string() +
                              " --temperatures " + temperatures);
    EXPECT_EQ(r.exit_code, 2) << temperatures << ": " << r.err;
    EXPECT_EQ(r.err.rfind(expected, 0), 0u) << temperatures << ": " << r.err;
  }
}

// --rates were read as floats before any check: 0.99999999 was refused as
// "--rates: 1 is outside [0, 1)".
TEST_F(StudyFilesTest, DropoutRatesAreCheckedAsTyped) {
  const std::pair<std::string, std::string> cases[] = {
      {"0.1,0.99999999", "dropk: --rates: 0.99999999 (1 as a float) is outside [0, 1)"},
      {"1e-50", "dropk: --rates: 1e-50 is too small for a float: it would be read as 0"},
      {"-0.5", "dropk: --rates: -0.5 is outside [0, 1)"},
      {"NaN", "dropk: --rates: NaN is not a number"},
      // Both would train into dropout-0.00: the first trained, then the
      // second was refused as a fresh start into its checkpoints.
      {"0,0",
       "dropk: --rates: 0 and 0 both train into dropout-0.00 (a run is named by its rate "
       "to two decimals); give rates that differ there"},
      {"0.1,0.001,0.004", "dropk: --rates: 0.001 and 0.004 both train into dropout-0.00"},
      // CLI11 drops an empty item without a word: two rates were studied.
      {"0.1,,0.2", "dropk: --rates 0.1,,0.2: item 2 is empty; give every value, separated by "
                   "single ','"},
      {"0.1,", "dropk: --rates 0.1,: item 2 is empty"},
      {",0.1", "dropk: --rates ,0.1: item 1 is empty"},
  };
  for (const auto& [rates, expected] : cases) {
    const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study dropout --out ") +
                              (dir_ / "o").string() + " --rates " + rates);
    EXPECT_EQ(r.exit_code, 2) << rates << ": " << r.err;
    EXPECT_EQ(r.err.rfind(expected, 0), 0u) << rates << ": " << r.err;
  }
}

// A negative --seed was taken as 2^64 - 1 (CLI11 wraps it into a uint64_t).
TEST_F(StudyFilesTest, TopKNegativeSeedIsRefused) {
  const auto r =
      RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study topk --checkpoint ") +
                 (dir_ / "none").string() + " --out " + (dir_ / "o").string() + " --seed=-1");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--seed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("must be an integer in [0, 18446744073709551615]"), std::string::npos)
      << r.err;
}

// A --seed of 2^64 or more was taken as 2^64 - 1 without a word (CLI11
// reads it with strtoull, which saturates).
TEST_F(StudyFilesTest, TopKSeedPast64BitsIsRefused) {
  const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study topk --checkpoint ") +
                            (dir_ / "none").string() + " --out " + (dir_ / "o").string() +
                            " --seed=18446744073709551616");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err.rfind("dropk: --seed: must be an integer in [0, 18446744073709551615], got "
                        "18446744073709551616",
                        0),
            0u)
      << r.err;
}

// CLI11 reads a negative number into a size_t by strtoull, which negates it
// modulo 2^64: --chars -18446744073709550616 passed the range check as 1000.
// Every 64-bit integer flag is checked as written (IntegerFlagRange).
TEST_F(StudyFilesTest, DropoutCharsOutOfRangeAsWrittenAreRefused) {
  for (const std::string chars : {"-18446744073709550616", "18446744073709551616", "999"}) {
    const auto r = RunCommand(std::string(DROPK_BINARY_DIR "/bin/dropk study dropout --out ") +
                              (dir_ / "o").string() + " --corpus " + (dir_ / "none").string() +
                              " --chars=" + chars);
    EXPECT_EQ(r.exit_code, 2) << chars << ": " << r.err;
    EXPECT_EQ(r.err.rfind("dropk: --chars: must be an integer in [1000, 1099511627776], got " +
                              chars + " (run with --help for usage)\n",
                          0),
              0u)
        << chars << ": " << r.err;
  }
}

// A log without a single loss (every train_loss null, no evaluation) made
// gnuplot fail on loss.gp ("x range is invalid"), exit 1 with its messages
// over eight lines.
TEST_F(StudyFilesTest, PlotDrawsALogWithoutLossesAsAnEmptyFrame) {
  fs::create_directories(dir_ / "run");
  Write("run/metrics.jsonl",
        "{\"step\":1,\"train_loss\":null,\"lr\":0.001,\"tokens_per_s\":50}\n"
        "{\"step\":2,\"train_loss\":null,\"lr\":0.001,\"tokens_per_s\":60}\n");
  const auto r = RunCommand(DROPK_BINARY_DIR "/bin/dropk plot " + (dir_ / "run").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"loss", "lr", "tokens_per_s"}) {
    EXPECT_TRUE(IsPng((dir_ / "run/plots" / (std::string(name) + ".png")).string())) << name;
  }
  EXPECT_NE(ReadFile((dir_ / "run/plots/loss.gp").string()).find("no losses in the log"),
            std::string::npos);
}

// Losses of +-1e308 make gnuplot fail on loss.gp ("all points y value
// undefined"); the failure is one line, exit 1, and the loss.png gnuplot had
// opened is not left behind empty (a plot of nothing, to a reader).
TEST_F(StudyFilesTest, APlotGnuplotRefusesLeavesNoEmptyPng) {
  fs::create_directories(dir_ / "run");
  Write("run/metrics.jsonl",
        "{\"step\":1,\"train_loss\":1e308,\"lr\":0.001,\"tokens_per_s\":50}\n"
        "{\"step\":2,\"train_loss\":-1e308,\"lr\":0.001,\"tokens_per_s\":60}\n");
  const auto r = RunCommand(DROPK_BINARY_DIR "/bin/dropk plot " + (dir_ / "run").string());
  if (r.exit_code == 0) GTEST_SKIP() << "this gnuplot draws +-1e308; nothing to clean up";
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("gnuplot failed on"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "run/plots/loss.png"));
}

// An override of a field the study sets for each run (--set=--dropout=0.5,
// --set=--out_dir=..., --set=--data_dir=...) was accepted and replaced
// without a word, and a site's own rate held it fixed in every run.
TEST_F(StudyFilesTest, DropoutStudyRefusesOverridesOfWhatItSetsPerRun) {
  const std::string study = std::string(DROPK_BINARY_DIR "/bin/dropk study dropout --corpus "
                                        DROPK_SOURCE_DIR "/data/tinyshakespeare.txt --out ") +
                            (dir_ / "refused").string() + " ";
  for (const auto& [set, expected] :
       {std::pair{"--set=--dropout=0.5", "dropk: --set=--dropout=0.5: the study sets dropout for "
                                         "each run itself (from --rates); leave it out\n"},
        {"--set=--out_dir=/tmp/x", "dropk: --set=--out_dir=/tmp/x: the study sets out_dir for "
                                   "each run itself (under --out); leave it out\n"},
        {"--set=--dropout_mlp_output=0", "dropk: dropout_mlp_output is set (by --config or "
                                         "--set): it would hold that site at one rate in every "
                                         "run of a study of the rate; leave it out\n"}}) {
    SCOPED_TRACE(set);
    const auto r = RunCommand(study + set);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, expected);
  }
}

// A tiny dropout study (two rates, 20 steps) twice, then a top-k study on one
// of its checkpoints twice: the same seed gives the same numbers.
TEST_F(StudyFilesTest, StudiesAreReproducibleAndWritePlotsWithData) {
  const std::string study =
      std::string(DROPK_BINARY_DIR "/bin/dropk study dropout --corpus " DROPK_SOURCE_DIR
                                   "/data/tinyshakespeare.txt --chars 20000 --rates 0,0.3") +
      " --set=--max_iters=20 --set=--eval_interval=10 --set=--eval_iters=2 --set=--n_layer=1"
      " --set=--n_head=2 --set=--n_embd=32 --set=--block_size=32 --set=--batch_size=4"
      " --set=--num_threads=1 --out ";
  std::string summaries[2];
  for (int i = 0; i < 2; ++i) {
    const fs::path out = dir_ / ("dropout" + std::to_string(i));
    const auto r = RunCommand(study + out.string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("| 0.30 |"), std::string::npos) << r.out;
    EXPECT_TRUE(IsPng((out / "dropout_study.png").string()));
    summaries[i] = ReadFile((out / "dropout_summary.csv").string());
    EXPECT_NE(ReadFile((out / "dropout_study.csv").string()).find("step,train_p0.00,val_p0.00"),
              std::string::npos);
  }
  EXPECT_EQ(summaries[0], summaries[1]);
  EXPECT_NE(summaries[0].find("\n0.30,"), std::string::npos) << summaries[0];

  const std::string topk = std::string(DROPK_BINARY_DIR "/bin/dropk study topk --checkpoint ") +
                           (dir_ / "dropout0/dropout-0.00/checkpoints").string() +
                           " --samples 3 --max-tokens 40 --ks 1,5,0 --temperatures 1"
                           " --threads 1 --seed 5 --out ";
  std::string tables[2];
  for (int i = 0; i < 2; ++i) {
    const fs::path out = dir_ / ("topk" + std::to_string(i));
    const auto r = RunCommand(topk + out.string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(IsPng((out / "topk_study.png").string()));
    tables[i] = ReadFile((out / "topk_study.csv").string());
  }
  EXPECT_EQ(tables[0], tables[1]);
  // k = 1 is greedy: every sample of a prompt is the same text; with the
  // whole vocabulary the seeds give different texts.
  std::map<std::string, std::set<std::string>> texts;  // "k/prompt" -> distinct texts
  std::istringstream samples(ReadFile((dir_ / "topk0/topk_samples.jsonl").string()));
  for (std::string line; std::getline(samples, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    texts[std::to_string(j["top_k"].get<int>()) + "/" + j["prompt"].get<std::string>()].insert(
        j["text"].get<std::string>());
  }
  ASSERT_EQ(texts.size(), 6u);  // 3 ks x 2 default prompts
  EXPECT_EQ(texts["1/ROMEO:"].size(), 1u);
  EXPECT_EQ(texts["1/JULIET:"].size(), 1u);
  EXPECT_GT(texts["0/ROMEO:"].size(), 1u);

  const auto bad = RunCommand(topk + (dir_ / "bad").string() + " --ks=-3");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--ks"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace dropk
