#include "trainer/config.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "model/kernels.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// Runs LoadTrainConfig on `args` as if typed after "dropk-train".
absl::StatusOr<TrainConfig> Load(std::vector<std::string> args) {
  args.insert(args.begin(), "dropk-train");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  return LoadTrainConfig(static_cast<int>(args.size()), argv.data());
}

// Runs ParseTrainCommandLine on `args` as if typed after "dropk-train".
absl::StatusOr<TrainCommandLine> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "dropk-train");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  return ParseTrainCommandLine(static_cast<int>(argv.size()), argv.data());
}

// Writes `contents` to a fresh file in the test's temporary directory.
std::string WriteTempFile(const std::string& name, const std::string& contents) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/",
                   ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_", name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  return path;
}

bool Equal(const TrainConfig& a, const TrainConfig& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

TEST(ConfigTest, DefaultsValidate) { EXPECT_TRUE(ValidateTrainConfig(DefaultTrainConfig()).ok()); }

// Only control characters and bidi overrides are refused in a path: a
// Persian directory name holds a zero-width non-joiner (U+200C).
TEST(ConfigTest, APathWithAZeroWidthNonJoinerIsValid) {
  TrainConfig config = DefaultTrainConfig();
  config.set_out_dir("runs/\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645");
  EXPECT_TRUE(ValidateTrainConfig(config).ok()) << ValidateTrainConfig(config);
}

TEST(ConfigTest, NoArgumentsGiveTheDefaults) {
  absl::StatusOr<TrainConfig> config = Load({});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(Equal(*config, DefaultTrainConfig()));
  EXPECT_EQ(config->n_layer(), 4);
  EXPECT_EQ(config->dropout_stream(), TrainConfig::PER_RANK);
  EXPECT_EQ(config->sample_prompt(), "\n");
}

TEST(ConfigTest, FileMergesOverDefaults) {
  const std::string path =
      WriteTempFile("run.textproto",
                    "# a comment\nn_layer: 6\nlearning_rate: 3e-4\nnum_threads: 0\n"
                    "dropout_stream: PER_SAMPLE\nout_dir: \"out/x\"\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer(), 6);
  EXPECT_FLOAT_EQ(config->learning_rate(), 3e-4f);
  EXPECT_EQ(config->dropout_stream(), TrainConfig::PER_SAMPLE);
  EXPECT_EQ(config->out_dir(), "out/x");
  // Fields the file does not name keep their defaults.
  EXPECT_EQ(config->n_head(), 4);
  EXPECT_EQ(config->block_size(), 64);
  EXPECT_EQ(config->data_dir(), "data/shakespeare_char");
}

TEST(ConfigTest, FileZeroReplacesNonZeroDefault) {
  // proto3 MergeFrom would skip a zero; a file's explicit zero must count.
  const std::string path = WriteTempFile("zero.textproto", "sample_tokens: 0\nwarmup_iters: 0\n");
  absl::StatusOr<TrainConfig> config = Load({"--config=" + path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sample_tokens(), 0);
  EXPECT_EQ(config->warmup_iters(), 0);
}

TEST(ConfigTest, FlagsOverrideFileInBothSpellings) {
  const std::string path =
      WriteTempFile("run.textproto", "n_layer: 6\nn_head: 8\nn_embd: 256\ndata_dir: \"a\"\n");
  absl::StatusOr<TrainConfig> config =
      Load({"--n_layer=2", "--config", path, "--n_head", "2", "--data_dir=b", "--min_lr", "-1",
            "--dropout_stream=per_sample", "--seed", "18446744073709551615", "--sample_prompt",
            "ROMEO:"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer(), 2);
  EXPECT_EQ(config->n_head(), 2);
  EXPECT_EQ(config->n_embd(), 256);  // from the file
  EXPECT_EQ(config->data_dir(), "b");
  EXPECT_FLOAT_EQ(config->min_lr(), -1.0f);
  EXPECT_EQ(config->dropout_stream(), TrainConfig::PER_SAMPLE);
  EXPECT_EQ(config->seed(), 18446744073709551615ull);
  EXPECT_EQ(config->sample_prompt(), "ROMEO:");
}

TEST(ConfigTest, LastOfARepeatedFlagWins) {
  absl::StatusOr<TrainConfig> config = Load({"--n_layer=3", "--n_layer", "5"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer(), 5);
}

// A flag's value left out took the next flag as the value: `--resume
// --max_iters=5` resumed from a checkpoint named "--max_iters=5" and lost
// max_iters; `--data_dir --help` looked for data in "--help".
TEST(ConfigTest, AFlagWithoutItsValueIsRefusedNotFedTheNextFlag) {
  const std::vector<std::vector<std::string>> cases = {{"--resume", "--max_iters=5"},
                                                       {"--data_dir", "--help"},
                                                       {"--sample_prompt", "--n_layer", "0"},
                                                       {"--config", "--seed=3"},
                                                       {"--n_layer=2", "--out_dir", "--profile"}};
  for (const std::vector<std::string>& args : cases) {
    absl::StatusOr<TrainConfig> config = Load(args);
    ASSERT_FALSE(config.ok()) << args[0];
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string& flag = args[0].find('=') == std::string::npos ? args[0] : args[1];
    const std::string& next = args[0].find('=') == std::string::npos ? args[1] : args[2];
    EXPECT_EQ(
        config.status().message(),
        absl::StrCat(flag, ": no value given (the next argument, ", next, ", is a flag); write ",
                     flag, "=VALUE, which also takes a value starting with --"));
  }
  // A value starting with -- that names no flag, and the = spelling, stay values.
  absl::StatusOr<TrainConfig> config =
      Load({"--sample_prompt", "--not-a-flag", "--resume=--max_iters=5", "--profile", "--seed=1"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sample_prompt(), "--not-a-flag");
  EXPECT_EQ(config->resume(), "--max_iters=5");
  EXPECT_TRUE(config->profile());
  // A negative number is a value, not a flag: it reaches the field (and
  // validation's own check of it).
  absl::StatusOr<TrainConfig> negative = Load({"--learning_rate", "-1e-3", "--max_iters", "10"});
  ASSERT_TRUE(negative.ok()) << negative.status();
  EXPECT_FLOAT_EQ(negative->learning_rate(), -1e-3f);
  EXPECT_EQ(negative->max_iters(), 10);
  absl::StatusOr<TrainConfig> tolerance = Load({"--sample_prompt", "-1", "--max_iters", "10"});
  ASSERT_TRUE(tolerance.ok()) << tolerance.status();
  EXPECT_EQ(tolerance->sample_prompt(), "-1");
}

// CLI11 kept the last --config, so `--config a --config b` trained on b alone
// and never said a was ignored.
TEST(ConfigTest, SecondConfigFlagIsRefusedNamingBoth) {
  const std::string a = WriteTempFile("a.textproto", "n_layer: 6\n");
  const std::string b = WriteTempFile("b.textproto", "n_head: 2\n");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--config", a, "--config", b}, {"--config=" + a, "--n_layer=2", "--config=" + b}}) {
    absl::StatusOr<TrainConfig> config = Load(args);
    ASSERT_FALSE(config.ok()) << args[0];
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(),
                AllOf(HasSubstr("--config given 2 times"), HasSubstr(a + ", " + b)));
    EXPECT_THAT(config.status().message(), Not(HasSubstr("\n")));
  }
}

TEST(ConfigTest, EnumFlagIsCaseInsensitive) {
  for (const char* spelling : {"PER_SAMPLE", "per_sample", "Per_Sample"}) {
    absl::StatusOr<TrainConfig> config = Load({absl::StrCat("--dropout_stream=", spelling)});
    ASSERT_TRUE(config.ok()) << spelling << ": " << config.status();
    EXPECT_EQ(config->dropout_stream(), TrainConfig::PER_SAMPLE);
  }
}

// A config file took enum values in the schema's upper case only: `device:
// cuda`, as --help writes it and as --device=cuda takes it, was "Unknown
// enumeration value of "cuda" ... (device takes one of cpu, cuda)".
TEST(ConfigTest, EnumValuesInFileAreCaseInsensitiveAsFlagsAre) {
  const std::string path =
      WriteTempFile("enums.textproto",
                    "device: cuda  # as --help writes it\n"
                    "precision: Bf16\n"
                    "\tcomm_backend:\tsingle_process\n"
                    "dropout_stream: PER_SAMPLE\n"
                    "sample_prompt: \"device: cpu\" attention_kernels: materialised\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->device(), TrainConfig::CUDA);
  EXPECT_EQ(config->precision(), TrainConfig::BF16);
  EXPECT_EQ(config->comm_backend(), TrainConfig::SINGLE_PROCESS);
  EXPECT_EQ(config->dropout_stream(), TrainConfig::PER_SAMPLE);
  EXPECT_EQ(config->attention_kernels(), TrainConfig::MATERIALISED);
  EXPECT_EQ(config->sample_prompt(), "device: cpu");  // a string is not a setting

  // A name that is no value is still refused at its place, as written.
  const std::string bad = WriteTempFile("bad.textproto", "n_layer: 2\nprecision: bf17\n");
  config = Load({"--config", bad});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(),
              AllOf(HasSubstr(bad + ":2:12:"), HasSubstr("\"bf17\""),
                    HasSubstr("(precision takes one of fp32, tf32, bf16)")));
}

// Validation listed the values as the schema spells them ("must be AUTO,
// SINGLE_PROCESS, MPI or NCCL") where --help and every other error write
// them in lower case, as they are typed.
TEST(ConfigTest, UnsetEnumsAreRefusedListingValuesAsHelpWritesThem) {
  TrainConfig c = DefaultTrainConfig();
  c.set_comm_backend(TrainConfig::COMM_BACKEND_UNSPECIFIED);
  c.set_dropout_stream(TrainConfig::DROPOUT_STREAM_UNSPECIFIED);
  const absl::Status s = ValidateTrainConfig(c);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("comm_backend=COMM_BACKEND_UNSPECIFIED: must be one of auto, "
                              "single_process, mpi, nccl"),
                    HasSubstr("dropout_stream=DROPOUT_STREAM_UNSPECIFIED: must be one of "
                              "per_rank, per_sample")));
}

struct BadFlagCase {
  std::string arg;       // one command-line argument
  std::string expected;  // substring of the error message
};

class BadFlagTest : public ::testing::TestWithParam<BadFlagCase> {};

TEST_P(BadFlagTest, IsInvalidArgumentNamingFlagAndValue) {
  absl::StatusOr<TrainConfig> config = Load({GetParam().arg});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr(GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(
    Values, BadFlagTest,
    ::testing::Values(BadFlagCase{"--n_layer=abc", "--n_layer=abc: expected an integer"},
                      BadFlagCase{"--n_layer=4.5", "--n_layer=4.5: expected an integer"},
                      BadFlagCase{"--n_layer=99999999999",
                                  "--n_layer=99999999999: expected an integer"},
                      BadFlagCase{"--seed=-1", "--seed=-1: expected an integer"},
                      BadFlagCase{"--learning_rate=fast", "--learning_rate=fast: expected"},
                      BadFlagCase{"--learning_rate=1e50",
                                  "--learning_rate=1e50: expected a finite number (float, "
                                  "magnitude at most 3.40282e+38)"},
                      BadFlagCase{"--dropout=nan", "--dropout=nan: expected"},
                      // A nonzero number below float's range read as 0: the
                      // checks then said "learning_rate=0: must be > 0".
                      BadFlagCase{"--learning_rate=1e-50",
                                  "--learning_rate=1e-50: 1e-50 is too small for a float: it "
                                  "would be read as 0"},
                      BadFlagCase{"--weight_decay=-1e-46",
                                  "--weight_decay=-1e-46: -1e-46 is "
                                  "too small for a float"},
                      // A number inside [0, 1) that is 1 as a float was
                      // refused as "dropout=1: must be in [0, 1)".
                      BadFlagCase{"--dropout=0.99999999",
                                  "--dropout=0.99999999: 0.99999999 (1 as a float) must be in "
                                  "[0, 1); the largest float below 1 is 0.99999994"},
                      // ... even when it is 1 as a double too.
                      BadFlagCase{"--dropout=0.99999999999999999999",
                                  "--dropout=0.99999999999999999999: 0.99999999999999999999 (1 "
                                  "as a float) must be in [0, 1); the largest float below 1 is "
                                  "0.99999994"},
                      BadFlagCase{"--bucket_cap_mb=1048576.00000000000000000001",
                                  "--bucket_cap_mb=1048576.00000000000000000001: "
                                  "1048576.00000000000000000001 (1048576 as a float) must be at "
                                  "most 1048576 (1 TiB)"},
                      BadFlagCase{"--beta2=0.999999999",
                                  "--beta2=0.999999999: 0.999999999 (1 as a float) must be in "
                                  "[0, 1)"},
                      BadFlagCase{"--dropout_mlp_output=0.99999998",
                                  "--dropout_mlp_output=0.99999998: 0.99999998 (1 as a float)"},
                      // ... and one above an upper bound that is the bound
                      // as a float passed as the bound.
                      BadFlagCase{"--bucket_cap_mb=1048576.01",
                                  "--bucket_cap_mb=1048576.01: 1048576.01 (1048576 as a float) "
                                  "must be at most 1048576 (1 TiB)"},
                      BadFlagCase{"--comm_timeout_s=2592000.1",
                                  "--comm_timeout_s=2592000.1: 2592000.1 (2592000 as a float) "
                                  "must be at most 2592000 (30 days)"},
                      BadFlagCase{"--dropout_stream=per_step",
                                  "--dropout_stream=per_step: expected one of per_rank, "
                                  "per_sample"},
                      BadFlagCase{"--dropout_stream=dropout_stream_unspecified",
                                  "--dropout_stream=dropout_stream_unspecified"},
                      BadFlagCase{"--resume_from=latest", "unknown flag --resume_from"},
                      BadFlagCase{"--n_layers=4",
                                  "unknown flag --n_layers (did you mean --n_layer?): not "
                                  "--config"},
                      BadFlagCase{"--max-iters=4", "unknown flag --max-iters (did you mean "
                                                   "--max_iters?)"},
                      BadFlagCase{"stray", "unexpected argument 'stray'"}),
    [](const ::testing::TestParamInfo<BadFlagCase>& info) {
      return absl::StrCat("Case", info.index);
    });

// A bound only refuses what rounding carries across it: the largest float
// below 1, and a bound typed as itself, pass.
TEST(ConfigTest, NumbersThatStayInsideTheirBoundAsFloatsParse) {
  for (const std::string flag :
       {"--dropout=0.99999994", "--beta2=0.9999999", "--bucket_cap_mb=1048576",
        "--comm_timeout_s=2592000", "--bucket_cap_mb=1048575.99", "--dropout_embedding=0"}) {
    absl::StatusOr<TrainConfig> config = Load({flag});
    ASSERT_TRUE(config.ok()) << flag << ": " << config.status();
    EXPECT_TRUE(ValidateTrainConfig(*config).ok()) << flag << ": " << ValidateTrainConfig(*config);
  }
  EXPECT_LT(Load({"--dropout=0.99999994"})->dropout(), 1.0f);
  const std::string path =
      WriteTempFile("ok.textproto", "dropout: 0.99999994\nbeta1: 0.9999999f\n");
  TrainConfig config = DefaultTrainConfig();
  ASSERT_TRUE(MergeTrainConfigFile(path, &config).ok());
  EXPECT_TRUE(ValidateTrainConfig(config).ok()) << ValidateTrainConfig(config);
}

// Zero however it is spelled, and numbers float keeps only approximately
// (subnormals), are values, not underflows.
TEST(ConfigTest, ZerosAndSubnormalFlagsParse) {
  for (const char* zero : {"0", "0.0", "-0.0", "0e5", "0.000e-99"}) {
    absl::StatusOr<TrainConfig> config = Load({absl::StrCat("--weight_decay=", zero)});
    ASSERT_TRUE(config.ok()) << zero << ": " << config.status();
    EXPECT_EQ(config->weight_decay(), 0.0f) << zero;
  }
  absl::StatusOr<TrainConfig> config = Load({"--weight_decay=1e-40"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_GT(config->weight_decay(), 0.0f);
}

// A config file's float past float's range was reported as validation saw
// it: 1e400 and 1e39 as "learning_rate=inf", 1e-50 as "learning_rate=0".
// Each is refused naming the file, line, column and field, quoting the
// number as the file has it.
TEST(ConfigTest, FloatsOutOfRangeInFileAreQuotedAsWritten) {
  struct Case {
    std::string line;
    std::string expected;
  };
  const Case cases[] = {
      {"learning_rate: 1e400",
       ":2:16: field learning_rate: 1e400 is out of range (learning_rate "
       "takes a finite number (float, magnitude at most 3.40282e+38))"},
      {"learning_rate: 1e39", ":2:16: field learning_rate: 1e39 is out of range"},
      {"learning_rate: 1e-50",
       ":2:16: field learning_rate: 1e-50 is too small for a float: it "
       "would be read as 0"},
      {"dropout: -1e-50f", ":2:10: field dropout: -1e-50f is too small for a float"},
      {"grad_clip:-1e-400", ":2:11: field grad_clip: -1e-400 is too small for a float"},
      // Inside [0, 1) as written, 1 as a float: it was "dropout=1: must be
      // in [0, 1)", a number the file does not hold.
      {"dropout: 0.99999999",
       ":2:10: field dropout: 0.99999999 (1 as a float) must be in [0, 1); the largest float "
       "below 1 is 0.99999994"},
      {"beta1: 0.99999999f", ":2:8: field beta1: 0.99999999f (1 as a float) must be in [0, 1)"},
      // ... even when it is 1 as a double too.
      {"dropout: 0.99999999999999999999",
       ":2:10: field dropout: 0.99999999999999999999 (1 as a float) must be in [0, 1)"},
      {"dropout_attention_probs: 0.999999999999",
       ":2:26: field dropout_attention_probs: 0.999999999999 (1 as a float)"},
      {"bucket_cap_mb: 1048576.01",
       ":2:16: field bucket_cap_mb: 1048576.01 (1048576 as a float) must be at most 1048576"},
      // A whole number: text format reads it into the float too.
      {"learning_rate: 1000000000000000000000000000000000000000000",
       ":2:16: field learning_rate: 1000000000000000000000000000000000000000000 is out of range"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteTempFile("run.textproto", "# first line\n" + c.line + "\n");
    TrainConfig config = DefaultTrainConfig();
    const absl::Status status = MergeTrainConfigFile(path, &config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.line;
    EXPECT_THAT(std::string(status.message()), ::testing::StartsWith(path + c.expected))
        << c.line;
    EXPECT_TRUE(Equal(config, DefaultTrainConfig())) << c.line;
  }
  // Zeros and numbers float holds pass (inf as written is refused too:
  // UnknownEnumNumbersAndNonFiniteFloatsInFileNameTheirPlace).
  const std::string path = WriteTempFile(
      "ok.textproto", "weight_decay: 0.0e-99\ngrad_clip: -0.0\nmin_lr: 1e-40\nlearning_rate: 3\n");
  TrainConfig config = DefaultTrainConfig();
  ASSERT_TRUE(MergeTrainConfigFile(path, &config).ok());
  EXPECT_EQ(config.weight_decay(), 0.0f);
  EXPECT_GT(config.min_lr(), 0.0f);
  EXPECT_EQ(config.learning_rate(), 3.0f);
}

// The 32-bit micro-batch counter numbers PER_RANK masks only: a run without
// dropout, or with PER_SAMPLE masks, may train past 2^32 micro-batches
// (max_iters = 2^31 - 1, "until stopped", with accumulation 3).
TEST(ConfigTest, LongRunsWithoutPerRankMasksAreNotBoundByTheirCounter) {
  TrainConfig no_dropout = DefaultTrainConfig();
  no_dropout.set_max_iters(std::numeric_limits<int32_t>::max());
  no_dropout.set_gradient_accumulation_steps(3);
  EXPECT_TRUE(ValidateTrainConfig(no_dropout).ok()) << ValidateTrainConfig(no_dropout);
  TrainConfig per_sample = no_dropout;
  per_sample.set_dropout(0.1f);
  per_sample.set_dropout_stream(TrainConfig::PER_SAMPLE);
  EXPECT_TRUE(ValidateTrainConfig(per_sample).ok()) << ValidateTrainConfig(per_sample);
  TrainConfig per_rank = per_sample;
  per_rank.set_dropout_stream(TrainConfig::PER_RANK);
  EXPECT_FALSE(ValidateTrainConfig(per_rank).ok());
}

TEST(ConfigTest, FlagWithoutValueIsAnError) {
  absl::StatusOr<TrainConfig> config = Load({"--n_layer"});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("n_layer"));
}

// CLI11 read `--resume=` as `--resume` and took the next argument as its
// value, losing that argument.
TEST(ConfigTest, EmptyFlagValueSetsEmptyAndKeepsTheNextFlag) {
  const std::string path = WriteTempFile("run.textproto", "resume: \"latest\"\n");
  absl::StatusOr<TrainConfig> config =
      Load({"--config", path, "--resume=", "--out_dir=elsewhere", "--checkpoint_dir="});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->resume(), "");
  EXPECT_EQ(config->out_dir(), "elsewhere");
  EXPECT_EQ(config->checkpoint_dir(), "");

  absl::StatusOr<TrainConfig> empty_int = Load({"--n_layer=", "--n_head=2"});
  ASSERT_FALSE(empty_int.ok());
  EXPECT_THAT(empty_int.status().message(), HasSubstr("--n_layer=: expected an integer"));
}

// A config saved with a UTF-8 byte-order mark failed with "Interpreting non
// ascii codepoint 239" and a raw byte.
TEST(ConfigTest, ByteOrderMarkAndCrlfAreAccepted) {
  const std::string path =
      WriteTempFile("bom.textproto", "\xEF\xBB\xBFn_layer: 6\r\nsample_prompt: \"ab\"\r\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer(), 6);
  EXPECT_EQ(config->sample_prompt(), "ab");
}

// Text format takes any number into a proto3 enum, and `device: 7` was
// then refused by validation as "device=7: not a value of ...", naming
// neither the file nor where in it; `learning_rate: nan` likewise. Both
// name file:line:column, as every other config file error does.
// Text format reads an integer with a leading zero as octal: "max_iters:
// 0100" trained 64 steps and "n_layer: 010" built 8 layers, where the flags
// --max_iters=0100 and --n_layer=010 read 100 and 10. Refused where the
// file sets it; 00 to 07 and hexadecimal mean what they say.
TEST(ConfigTest, IntegersWithALeadingZeroInFileAreRefusedNotReadAsOctal) {
  const struct {
    const char* line;
    const char* expected;  // after the path
  } cases[] = {
      {"max_iters: 0100",
       ":2:12: field max_iters: 0100 has a leading zero, which text format reads as octal: 64, "
       "not 100; write the number without the zero (max_iters takes an integer in "},
      {"n_layer: 010",
       ":2:10: field n_layer: 010 has a leading zero, which text format reads as "
       "octal: 8, not 10"},
      {"seed: 0777", ":2:7: field seed: 0777 has a leading zero"},
      {"warmup_iters: -010",
       ":2:15: field warmup_iters: -010 has a leading zero, which text "
       "format reads as octal: -8, not -10"},
  };
  for (const auto& c : cases) {
    const std::string path =
        WriteTempFile("run.textproto", std::string("n_head: 2\n") + c.line + "\n");
    TrainConfig config = DefaultTrainConfig();
    const absl::Status status = MergeTrainConfigFile(path, &config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.line;
    EXPECT_THAT(std::string(status.message()), ::testing::StartsWith(path + c.expected)) << c.line;
    EXPECT_TRUE(Equal(config, DefaultTrainConfig())) << c.line;
  }
  const std::string path =
      WriteTempFile("ok.textproto", "n_layer: 06\nn_head: 00\nmax_iters: 0x10\neval_iters: 0\n");
  TrainConfig config = DefaultTrainConfig();
  ASSERT_TRUE(MergeTrainConfigFile(path, &config).ok());
  EXPECT_EQ(config.n_layer(), 6);
  EXPECT_EQ(config.n_head(), 0);
  EXPECT_EQ(config.max_iters(), 16);
}

TEST(ConfigTest, UnknownEnumNumbersAndNonFiniteFloatsInFileNameTheirPlace) {
  const struct {
    const char* line;
    const char* expected;  // after the path
  } cases[] = {
      {"device: 7", ":2:9: field device: 7 names no Device (device takes one of cpu, cuda)"},
      {"  device:-3", ":2:10: field device: -3 names no Device"},
      {"dropout_stream: 0x10",
       ":2:17: field dropout_stream: 0x10 names no DropoutStream "
       "(dropout_stream takes one of per_rank, per_sample)"},
      // Past int: protobuf's own error, already at its place.
      {"device: 99999999999", ":2:9: field device: Integer out of range (99999999999)"},
      {"learning_rate: nan",
       ":2:16: field learning_rate: nan is not a finite number (learning_rate takes a finite "
       "number (float, magnitude at most 3.40282e+38))"},
      {"learning_rate: -NaN", ":2:16: field learning_rate: -NaN is not a finite number"},
      {"beta1: inf", ":2:8: field beta1: inf is not a finite number"},
      {"grad_clip: -Infinity", ":2:12: field grad_clip: -Infinity is not a finite number"},
  };
  for (const auto& c : cases) {
    const std::string path =
        WriteTempFile("run.textproto", std::string("n_layer: 2\n") + c.line + "\n");
    absl::StatusOr<TrainConfig> config = Load({"--config", path});
    ASSERT_FALSE(config.ok()) << c.line;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.line;
    EXPECT_THAT(std::string(config.status().message()), ::testing::StartsWith(path + c.expected))
        << c.line;
    EXPECT_THAT(std::string(config.status().message()), Not(HasSubstr("\n"))) << c.line;
  }
  // Numbers that name a value are values.
  const std::string path = WriteTempFile("ok.textproto", "device: 1\ndropout_stream: 2\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->device(), TrainConfig::CPU);
}

// A byte that is not text (0xFF: a binary file, or text in another
// encoding) gave two protobuf lines ("Interpreting non ascii codepoint
// 255." and what the parser then expected), neither saying what is wrong
// with the file. One line, naming file, line and column.
TEST(ConfigTest, ANonTextByteInFileIsOneLineNamingItsPlace) {
  for (const std::string& contents :
       {std::string("n_layer: 2\n\xFF\n"), std::string("n_layer: 2\nn_head: \xFF\n"),
        std::string("n_layer: 2\n\xFF\xFE\x00\x01garbage")}) {
    const std::string path = WriteTempFile("binary.textproto", contents);
    absl::StatusOr<TrainConfig> config = Load({"--config", path});
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(config.status().message());
    EXPECT_THAT(message, AllOf(::testing::StartsWith(path + ":2:"), HasSubstr("byte 0xFF"),
                               Not(HasSubstr("\n"))))
        << message;
  }
  // In a string or a comment, any UTF-8 is fine.
  const std::string path =
      WriteTempFile("utf8.textproto", "# caf\xC3\xA9\nsample_prompt: \"caf\xC3\xA9\"\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sample_prompt(), "caf\xC3\xA9");
}

TEST(ConfigTest, BadFlagValueIsReportedEvenWithAFile) {
  const std::string path = WriteTempFile("run.textproto", "n_layer: 6\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path, "--n_head", "four"});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("--n_head=four: expected an integer"));
}

TEST(ConfigTest, MalformedFileNamesFileLineAndColumn) {
  const std::string path =
      WriteTempFile("bad.textproto", "n_layer: 6\n# fine so far\nn_head: four\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr(path + ":3:9:"));
}

TEST(ConfigTest, UnknownFieldInFileNamesFileLineAndField) {
  const std::string path = WriteTempFile("unknown.textproto", "n_layer: 6\nn_layers: 6\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), AllOf(HasSubstr(path + ":2:"), HasSubstr("n_layers")));
  // It names the field likely meant, as an unknown flag does.
  EXPECT_THAT(config.status().message(), HasSubstr("\"n_layers\". (did you mean n_layer?)"));
  const std::string far = WriteTempFile("far.textproto", "colour: 6\n");
  EXPECT_THAT(Load({"--config", far}).status().message(), Not(HasSubstr("did you mean")));
}

// Protobuf's own messages ("Expected integer, got: four") say what is wrong
// but not where in the config's terms: every type error names the field, and
// what the field takes (its type and, for numbers, the type's range).
struct FileTypeErrorCase {
  const char* contents;
  const char* position;  // ":line:column:" expected in the message
  std::vector<const char*> expected;
};

TEST(ConfigTest, TypeErrorsInFileNameTheFieldAndWhatItTakes) {
  const FileTypeErrorCase cases[] = {
      {"n_layer: 6\nn_head: four\n",
       ":2:9:",
       {"field n_head", "an integer in [-2147483648, 2147483647]"}},
      {"n_layer: 99999999999\n",
       ":1:10:",
       {"field n_layer", "an integer in [-2147483648, 2147483647]"}},
      {"  dropout : \"high\"  # no\n",
       ":1:13:",
       {"field dropout", "a finite number (float, magnitude at most 3.40282e+38)"}},
      // Protobuf names the field of a bad bool or enum itself; the message
      // adds what the field takes, at the value's place (protobuf gave the
      // next token's: ":2:1:" for these, ":4:1:" for device, n_layer's line).
      {"overlap_comm: maybe\n", ":1:15:", {"\"overlap_comm\"", "true or false"}},
      {"dropout_stream: PER_BATCH\n",
       ":1:17:",
       {"\"dropout_stream\"", "one of per_rank, per_sample"}},
      {"device: GPU\n\n\nn_layer: 2\n", ":1:9:", {"\"device\"", "one of cpu, cuda"}},
      {"n_layer: 2  device:\tGPU  # not yet\nn_head: 2\n", ":1:25:", {"\"device\""}},
      {"data_dir: 7\n", ":1:11:", {"field data_dir", "a quoted string"}},
      {"seed: -1\n", ":1:7:", {"field seed"}},
  };
  for (const FileTypeErrorCase& c : cases) {
    const std::string path = WriteTempFile("typed.textproto", c.contents);
    absl::StatusOr<TrainConfig> config = Load({"--config", path});
    ASSERT_FALSE(config.ok()) << c.contents;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr(path + c.position)) << c.contents;
    for (const char* expected : c.expected) {
      EXPECT_THAT(config.status().message(), HasSubstr(expected)) << c.contents;
    }
  }
}

// Text format lets a later value replace an earlier one: `n_layer: 1` and,
// further down, `n_layer: 3` trained 3 layers without a word.
TEST(ConfigTest, FieldSetTwiceInFileNamesFileLineAndField) {
  const struct {
    const char* contents;
    const char* expected;
  } cases[] = {
      {"n_layer: 1\nn_head: 1\nn_layer: 3\n", ":3:1: field n_layer is set twice (first on line 1)"},
      // A zero is not "set" in a proto3 field without presence, so protobuf's
      // own check lets this one through.
      {"# dropout\ndropout: 0.0\n\n  dropout: 0.1\n",
       ":4:3: field dropout is set twice (first on line 2)"},
      {"n_head: 2; n_head: 2\n", ":1:12: field n_head is set twice (first on line 1)"},
      {"dropout_embedding: 0.1\ndropout_embedding: 0.2\n",
       ":2:1: field dropout_embedding is set twice (first on line 1)"},
      {"data_dir: \"a\"\nout_dir: \"b\"\ndata_dir: \"c\"\n",
       ":3:1: field data_dir is set twice (first on line 1)"},
  };
  for (const auto& c : cases) {
    const std::string path = WriteTempFile("twice.textproto", c.contents);
    absl::StatusOr<TrainConfig> config = Load({"--config", path});
    ASSERT_FALSE(config.ok()) << c.contents;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr(path + c.expected)) << c.contents;
    EXPECT_THAT(config.status().message(), Not(HasSubstr("\n"))) << c.contents;
    TrainConfig untouched = DefaultTrainConfig();
    EXPECT_FALSE(MergeTrainConfigFile(path, &untouched).ok());
    EXPECT_TRUE(Equal(untouched, DefaultTrainConfig())) << c.contents;
  }
}

// Names in strings and comments are not settings.
TEST(ConfigTest, FieldNamesInStringsAndCommentsAreNotSettings) {
  const std::string path =
      WriteTempFile("once.textproto",
                    "# n_layer: 2 was too small\nn_layer: 3  # n_layer: 4 next\n"
                    "sample_prompt: \"n_layer: 5\"\nout_dir: 'n_layer:'\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer(), 3);
  EXPECT_EQ(config->sample_prompt(), "n_layer: 5");
}

// A huge file was read whole and ended in "out of memory", naming nothing.
TEST(ConfigTest, HugeConfigFileIsRefusedNamingFileAndLimit) {
  const std::string path = WriteTempFile("huge.textproto", "n_layer: 6\n");
  std::filesystem::resize_file(path, (uintmax_t{16} << 20) + 1);  // sparse
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(config.status().message(),
            "config file " + path +
                ": 16777217 bytes, more than the 16 MiB a config file may have; --config must "
                "name a text-format dropk.TrainConfig file");
  // The limit itself is fine (trailing NULs would not parse, so spaces).
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      << "n_layer: 6\n"
      << std::string((size_t{16} << 20) - 11, ' ');
  ASSERT_EQ(std::filesystem::file_size(path), uintmax_t{16} << 20);
  config = Load({"--config", path});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer(), 6);
  std::filesystem::remove(path);
}

TEST(ConfigTest, SyntaxErrorWithoutAFieldDoesNotBlameThePreviousLine) {
  const std::string path = WriteTempFile("nocolon.textproto", "n_layer: 6\nn_head 4\n");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr(path + ":2:"));
  EXPECT_THAT(config.status().message(), Not(HasSubstr("field n_layer")));
}

TEST(ConfigTest, DirectoryAsConfigIsRefusedNamingThePath) {
  const std::string dir = ::testing::TempDir();
  absl::StatusOr<TrainConfig> config = Load({"--config", dir});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(),
              AllOf(HasSubstr(dir), HasSubstr("not a regular file"), HasSubstr("a directory")));
  config = Load({"--config", "/dev/null"});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("/dev/null: not a regular file"));
}

TEST(ConfigTest, MissingFileNamesThePath) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/no_such_dir/run.textproto");
  absl::StatusOr<TrainConfig> config = Load({"--config", path});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

// `--config=$CONFIG` with CONFIG unset said "config file : cannot open".
TEST(ConfigTest, AnEmptyConfigPathIsNamedAsSuch) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--config="}, std::vector<std::string>{"--config", ""}}) {
    absl::StatusOr<TrainConfig> config = Load(args);
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(config.status().message(),
              "--config=\"\": names no file; --config must name a text-format dropk.TrainConfig "
              "file");
  }
}

TEST(ConfigTest, FailedMergeLeavesConfigUntouched) {
  const std::string path = WriteTempFile("half.textproto", "n_layer: 7\nn_head: four\n");
  TrainConfig config = DefaultTrainConfig();
  EXPECT_FALSE(MergeTrainConfigFile(path, &config).ok());
  EXPECT_TRUE(Equal(config, DefaultTrainConfig()));
}

TEST(ConfigTest, HelpListsEveryFieldWithTypeAndDefault) {
  for (const char* flag : {"--help", "-h"}) {
    absl::StatusOr<TrainCommandLine> command_line = Parse({"--n_layer=8", flag});
    ASSERT_TRUE(command_line.ok()) << command_line.status();
    ASSERT_TRUE(command_line->help.has_value());
    const std::string help = *command_line->help;
    EXPECT_THAT(help, HasSubstr("--config"));
    EXPECT_THAT(help, ::testing::ContainsRegex("--n_layer +int32 +4 +"));
    EXPECT_THAT(help, ::testing::ContainsRegex("--data_dir +string +\"data/shakespeare_char\""));
    EXPECT_THAT(help,
                ::testing::ContainsRegex("--dropout_stream +per_rank\\|per_sample +per_rank"));
    EXPECT_THAT(help, ::testing::ContainsRegex("--dropout_embedding +float +unset"));
    EXPECT_THAT(help, ::testing::ContainsRegex("--device +cpu\\|cuda +unset +cpu, or cuda"));
    // Every field of the proto is a flag, so a new field shows up here, and
    // with its own description, not the fallback.
    const google::protobuf::Descriptor* descriptor = TrainConfig::descriptor();
    for (int i = 0; i < descriptor->field_count(); ++i) {
      EXPECT_THAT(help, HasSubstr("--" + descriptor->field(i)->name() + " "));
    }
    EXPECT_THAT(help, Not(HasSubstr("a field of dropk.TrainConfig")));
    EXPECT_THAT(help, Not(HasSubstr("_unspecified")));
  }
  absl::StatusOr<TrainConfig> config = Load({"--help"});
  EXPECT_TRUE(absl::IsInvalidArgument(config.status())) << config.status();
}

// attention_kernels' 58-character list of names set the type column's width
// for every row: each description began at column 118, past any terminal's
// edge. A type that wide now ends its own line, and the columns stay narrow.
TEST(ConfigTest, HelpColumnsAreNotWidenedByOneLongEnumType) {
  absl::StatusOr<TrainCommandLine> command_line = Parse({"--help"});
  ASSERT_TRUE(command_line.ok()) << command_line.status();
  ASSERT_TRUE(command_line->help.has_value());
  const std::vector<std::string> lines = absl::StrSplit(*command_line->help, '\n');
  size_t description_column = std::string::npos;
  for (const std::string& line : lines) {
    if (absl::StartsWith(line, "  flag ")) description_column = line.find("description");
  }
  ASSERT_NE(description_column, std::string::npos) << *command_line->help;
  EXPECT_LE(description_column, 90u) << *command_line->help;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (absl::StartsWith(lines[i], "  --n_layer ")) {
      EXPECT_EQ(lines[i].substr(description_column), "transformer blocks") << lines[i];
    }
    // The wide type whole on the flag's line; its default and description
    // on the next, in their columns.
    if (absl::StartsWith(lines[i], "  --attention_kernels ")) {
      EXPECT_TRUE(
          absl::EndsWith(lines[i], " flash_where_supported|materialised|flash_bf16_tensor_cores"))
          << lines[i];
      ASSERT_LT(i + 1, lines.size());
      const std::string& next = lines[i + 1];
      EXPECT_EQ(next.find_first_not_of(' '), next.find("unset")) << next;
      EXPECT_TRUE(absl::StartsWith(next.substr(description_column), "cuda attention: ")) << next;
    }
  }
}

TEST(ConfigTest, EveryFieldIsSettableByFlag) {
  const google::protobuf::Descriptor* descriptor = TrainConfig::descriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    std::string value = "1";
    if (field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_ENUM) {
      // The last value of the enum, spelled in lower case.
      const auto* values = field->enum_type();
      value = absl::AsciiStrToLower(values->value(values->value_count() - 1)->name());
    } else if (field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_STRING) {
      value = "x";
    }
    absl::StatusOr<TrainConfig> config = Load({absl::StrCat("--", field->name(), "=", value)});
    EXPECT_TRUE(config.ok()) << field->name() << ": " << config.status();
  }
}

// A config that is valid except for one change.
struct BadValueCase {
  std::string name;                        // test name suffix
  std::function<void(TrainConfig*)> edit;  // makes the config invalid
  std::vector<std::string> expected;       // substrings of the message
};

class BadValueTest : public ::testing::TestWithParam<BadValueCase> {};

TEST_P(BadValueTest, IsInvalidArgumentNamingFieldAndValue) {
  TrainConfig config = DefaultTrainConfig();
  GetParam().edit(&config);
  absl::Status status = ValidateTrainConfig(config);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& expected : GetParam().expected) {
    EXPECT_THAT(status.message(), HasSubstr(expected));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Values, BadValueTest,
    ::testing::Values(
        BadValueCase{"NLayer", [](TrainConfig* c) { c->set_n_layer(0); }, {"n_layer=0"}},
        BadValueCase{"NHead", [](TrainConfig* c) { c->set_n_head(-2); }, {"n_head=-2"}},
        BadValueCase{"NEmbd", [](TrainConfig* c) { c->set_n_embd(0); }, {"n_embd=0"}},
        BadValueCase{"NEmbdDivisible",
                     [](TrainConfig* c) { c->set_n_embd(130); },
                     {"n_embd=130 is not divisible by n_head=4"}},
        BadValueCase{"BlockSize", [](TrainConfig* c) { c->set_block_size(0); }, {"block_size=0"}},
        BadValueCase{"BatchSize", [](TrainConfig* c) { c->set_batch_size(0); }, {"batch_size=0"}},
        BadValueCase{"GradAccum",
                     [](TrainConfig* c) { c->set_gradient_accumulation_steps(0); },
                     {"gradient_accumulation_steps=0"}},
        BadValueCase{"MaxIters", [](TrainConfig* c) { c->set_max_iters(-1); }, {"max_iters=-1"}},
        // A step runs every micro-batch before it ends: 2^31 never ended.
        BadValueCase{"GradAccumHuge",
                     [](TrainConfig* c) { c->set_gradient_accumulation_steps(65'537); },
                     {"gradient_accumulation_steps=65537: must be at most 65536 (micro-batches "
                      "per optimizer step"}},
        // The PER_RANK dropout step, step x accumulation + micro, is 32 bits:
        // past 2^32 micro-batches it wrapped and masks repeated.
        BadValueCase{"MicroBatchesPastTheDropoutCounter",
                     [](TrainConfig* c) {
                       c->set_dropout(0.1f);
                       c->set_max_iters(65'537);
                       c->set_gradient_accumulation_steps(65'536);
                     },
                     {"max_iters=65537 x gradient_accumulation_steps=65536 = 4295032832 "
                      "micro-batches: must be at most 4294967296 with dropout on and "
                      "dropout_stream: per_rank (its masks number micro-batches with a 32-bit "
                      "counter"}},
        BadValueCase{"MicroBatchesPastTheDropoutCounterSmallAccumulation",
                     [](TrainConfig* c) {
                       c->set_dropout_mlp_output(0.1f);
                       c->set_max_iters(std::numeric_limits<int32_t>::max());
                       c->set_gradient_accumulation_steps(3);
                     },
                     {"max_iters=2147483647 x gradient_accumulation_steps=3 = 6442450941 "
                      "micro-batches: must be at most 4294967296",
                      "dropout_stream: per_sample"}},
        BadValueCase{"EvalIters", [](TrainConfig* c) { c->set_eval_iters(0); }, {"eval_iters=0"}},
        // 2^31 batches held the run at its first evaluation for days.
        BadValueCase{"EvalItersHuge",
                     [](TrainConfig* c) { c->set_eval_iters(10'001); },
                     {"eval_iters=10001: must be at most 10000"}},
        BadValueCase{
            "EvalInterval", [](TrainConfig* c) { c->set_eval_interval(0); }, {"eval_interval=0"}},
        BadValueCase{
            "LogInterval", [](TrainConfig* c) { c->set_log_interval(-5); }, {"log_interval=-5"}},
        BadValueCase{
            "LearningRate", [](TrainConfig* c) { c->set_learning_rate(0); }, {"learning_rate=0"}},
        BadValueCase{
            "LearningRateInf",
            [](TrainConfig* c) { c->set_learning_rate(std::numeric_limits<float>::infinity()); },
            {"learning_rate=inf"}},
        BadValueCase{"MinLrNegative", [](TrainConfig* c) { c->set_min_lr(-0.5); }, {"min_lr=-0.5"}},
        BadValueCase{"MinLrAboveLr",
                     [](TrainConfig* c) { c->set_min_lr(0.01); },
                     {"min_lr=0.01", "learning_rate=0.001"}},
        BadValueCase{
            "WarmupIters", [](TrainConfig* c) { c->set_warmup_iters(-1); }, {"warmup_iters=-1"}},
        BadValueCase{"LrDecayNotAfterWarmup",
                     [](TrainConfig* c) { c->set_lr_decay_iters(100); },
                     {"lr_decay_iters=100", "warmup_iters=100"}},
        BadValueCase{"WeightDecay",
                     [](TrainConfig* c) { c->set_weight_decay(-0.1); },
                     {"weight_decay=-0.1"}},
        BadValueCase{"Beta1", [](TrainConfig* c) { c->set_beta1(1.0); }, {"beta1=1"}},
        BadValueCase{"Beta2", [](TrainConfig* c) { c->set_beta2(-0.5); }, {"beta2=-0.5"}},
        BadValueCase{"GradClip", [](TrainConfig* c) { c->set_grad_clip(-1); }, {"grad_clip=-1"}},
        BadValueCase{"Dropout",
                     [](TrainConfig* c) { c->set_dropout(1.5); },
                     {"dropout=1.5: must be in [0, 1)"}},
        BadValueCase{"DropoutOne",
                     [](TrainConfig* c) { c->set_dropout(1.0); },
                     {"dropout=1: must be in [0, 1)"}},
        BadValueCase{
            "DropoutNan",
            [](TrainConfig* c) { c->set_dropout(std::numeric_limits<float>::quiet_NaN()); },
            {"dropout=nan"}},
        BadValueCase{"DropoutEmbedding",
                     [](TrainConfig* c) { c->set_dropout_embedding(-0.1); },
                     {"dropout_embedding=-0.1"}},
        BadValueCase{"DropoutAttentionProbs",
                     [](TrainConfig* c) { c->set_dropout_attention_probs(1); },
                     {"dropout_attention_probs=1"}},
        BadValueCase{"DropoutAttentionOutput",
                     [](TrainConfig* c) { c->set_dropout_attention_output(2); },
                     {"dropout_attention_output=2"}},
        BadValueCase{"DropoutMlpOutput",
                     [](TrainConfig* c) { c->set_dropout_mlp_output(1.25); },
                     {"dropout_mlp_output=1.25"}},
        BadValueCase{
            "DropoutStream",
            [](TrainConfig* c) { c->set_dropout_stream(TrainConfig::DROPOUT_STREAM_UNSPECIFIED); },
            {"dropout_stream=DROPOUT_STREAM_UNSPECIFIED"}},
        BadValueCase{
            "NumThreads", [](TrainConfig* c) { c->set_num_threads(-1); }, {"num_threads=-1"}},
        // 200 threads under a container's pids limit crashed in libgomp.
        BadValueCase{"NumThreadsHuge",
                     [](TrainConfig* c) { c->set_num_threads(1025); },
                     {"num_threads=1025: must be in [0, 1024]"}},
        BadValueCase{
            "SampleTokens", [](TrainConfig* c) { c->set_sample_tokens(-1); }, {"sample_tokens=-1"}},
        BadValueCase{
            "SampleTopK", [](TrainConfig* c) { c->set_sample_top_k(-3); }, {"sample_top_k=-3"}},
        BadValueCase{"SampleTemperature",
                     [](TrainConfig* c) { c->set_sample_temperature(0); },
                     {"sample_temperature=0"}},
        // Beyond about 1e10 s the collectives' deadlines overflowed to the
        // past: every collective timed out at once "within -9.2e+15 s".
        BadValueCase{"CommTimeoutHuge",
                     [](TrainConfig* c) { c->set_comm_timeout_s(1e38f); },
                     {"comm_timeout_s=1e+38: must be at most 2592000"}},
        BadValueCase{"SampleTokensHuge",
                     [](TrainConfig* c) { c->set_sample_tokens(2147483647); },
                     {"sample_tokens=2147483647: must be at most 1000000"}},
        BadValueCase{"BucketCapHuge",
                     [](TrainConfig* c) { c->set_bucket_cap_mb(1e38f); },
                     {"bucket_cap_mb=1e+38: must be at most 1048576"}},
        // proto3 enums are open: a file's `device: 9` parsed and ran on the CPU.
        BadValueCase{"DeviceUnknownNumber",
                     [](TrainConfig* c) { c->set_device(static_cast<TrainConfig::Device>(9)); },
                     {"device=9: not a value of dropk.TrainConfig.Device", "cpu, cuda"}},
        BadValueCase{
            "PrecisionUnknownNumber",
            [](TrainConfig* c) { c->set_precision(static_cast<TrainConfig::Precision>(17)); },
            {"precision=17", "fp32, tf32, bf16"}},
        BadValueCase{
            "AttentionKernelsUnknownNumber",
            [](TrainConfig*
                   c) { c->set_attention_kernels(static_cast<TrainConfig::AttentionKernels>(5)); },
            {"attention_kernels=5", "flash_where_supported, materialised"}},
        BadValueCase{
            "CommBackendUnknownNumber",
            [](TrainConfig* c) { c->set_comm_backend(static_cast<TrainConfig::CommBackend>(9)); },
            {"comm_backend=9"}},
        BadValueCase{"DataDir", [](TrainConfig* c) { c->set_data_dir(""); }, {"data_dir=\"\""}},
        // The system reads a path up to its first NUL: data_dir "d\0x"
        // trained on d; out_dir "a\0b" made a directory "a".
        BadValueCase{"DataDirWithNul",
                     [](TrainConfig* c) { c->set_data_dir(std::string("d\0x", 3)); },
                     {"data_dir=\"d\\000x\": holds a NUL byte"}},
        BadValueCase{"OutDirWithNul",
                     [](TrainConfig* c) { c->set_out_dir(std::string("a\0b", 3)); },
                     {"out_dir=\"a\\000b\": holds a NUL byte"}},
        BadValueCase{"CheckpointDirWithNul",
                     [](TrainConfig* c) { c->set_checkpoint_dir(std::string("\0", 1)); },
                     {"checkpoint_dir=\"\\000\""}},
        BadValueCase{"ResumeWithNul",
                     [](TrainConfig* c) { c->set_resume(std::string("latest\0", 7)); },
                     {"resume=\"latest\\000\""}},
        // A script saved with Windows line endings: `--out_dir=run1\r`
        // made a directory "run1\r"; a newline split every error line and
        // the failure record; an ESC reached the terminal.
        BadValueCase{"OutDirWithCarriageReturn",
                     [](TrainConfig* c) { c->set_out_dir("run1\r"); },
                     {"out_dir=\"run1\\u000d\": holds a control character",
                      "Windows line endings"}},
        BadValueCase{"DataDirWithNewlineAndEscape",
                     [](TrainConfig* c) { c->set_data_dir("a\nb\x1b[31m"); },
                     {"data_dir=\"a\\u000ab\\u001b[31m\": holds a control character"}},
        BadValueCase{"InitFromWithRightToLeftOverride",
                     [](TrainConfig* c) { c->set_init_from("w\u202e.safetensors"); },
                     {"init_from=\"w\\u202e.safetensors\""}},
        BadValueCase{"InitFromWithNul",
                     [](TrainConfig* c) { c->set_init_from(std::string("w.safetensors\0x", 15)); },
                     {"init_from=\"w.safetensors\\000x\": holds a NUL byte"}},
        // A checkpoint's manifest holds the config as protobuf, which does
        // not read back a string that is not UTF-8: such a run trained and
        // wrote checkpoints nothing could open.
        BadValueCase{"OutDirNotUtf8",
                     [](TrainConfig* c) { c->set_out_dir("runs/\xff"); },
                     {"out_dir=\"runs/\\xff\": byte 6 is not UTF-8; the config is saved in every "
                      "checkpoint, which could not be read back with it"}},
        BadValueCase{"SamplePromptNotUtf8",
                     [](TrainConfig* c) { c->set_sample_prompt("caf\xc3"); },
                     {"sample_prompt=\"caf\\xc3\": byte 4 is not UTF-8"}},
        BadValueCase{"OutDir", [](TrainConfig* c) { c->set_out_dir(""); }, {"out_dir=\"\""}}),
    [](const ::testing::TestParamInfo<BadValueCase>& info) { return info.param.name; });

TEST(ConfigTest, ValidationReportsEveryProblemOnItsOwnLine) {
  TrainConfig config = DefaultTrainConfig();
  config.set_n_layer(0);
  config.set_dropout(1.5);
  absl::Status status = ValidateTrainConfig(config);
  EXPECT_EQ(status.message(), "n_layer=0: must be >= 1\ndropout=1.5: must be in [0, 1)");
}

TEST(ConfigTest, BoundaryValuesAreValid) {
  TrainConfig config = DefaultTrainConfig();
  config.set_max_iters(0);
  config.set_min_lr(config.learning_rate());
  config.set_weight_decay(0);
  config.set_grad_clip(0);
  config.set_beta1(0);
  config.set_dropout(0.99f);
  config.set_dropout_mlp_output(0);
  config.set_sample_tokens(0);
  config.set_sample_top_k(0);
  config.set_num_threads(1024);
  config.set_eval_iters(10'000);
  EXPECT_TRUE(ValidateTrainConfig(config).ok()) << ValidateTrainConfig(config);
  // The largest accumulation, and exactly 2^32 micro-batches in all.
  config.set_gradient_accumulation_steps(65'536);
  EXPECT_TRUE(ValidateTrainConfig(config).ok()) << ValidateTrainConfig(config);
  config.set_max_iters(65'536);
  EXPECT_TRUE(ValidateTrainConfig(config).ok()) << ValidateTrainConfig(config);
  config.set_max_iters(0);
  config.set_gradient_accumulation_steps(1);
  // lr_decay_iters only matters once training goes past warmup.
  config.set_max_iters(100);
  config.set_lr_decay_iters(0);
  EXPECT_TRUE(ValidateTrainConfig(config).ok()) << ValidateTrainConfig(config);
}

TEST(ConfigTest, ValidateAgainstDataNamesSplitAndDir) {
  TrainConfig config = DefaultTrainConfig();
  config.set_data_dir("data/x");
  config.set_block_size(200000);
  absl::Status status = ValidateAgainstData(config, 1003854, 111540);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "block_size=200000: must be smaller than the validation split of "
            "data/x (111540 tokens)");

  config.set_block_size(5000);
  status = ValidateAgainstData(config, 5000, 5001);
  EXPECT_EQ(status.message(),
            "block_size=5000: must be smaller than the training split of "
            "data/x (5000 tokens)");
  EXPECT_TRUE(ValidateAgainstData(config, 5001, 5001).ok());

  // Both splits short is one line (it was two, the second without
  // dropk-train's name).
  status = ValidateAgainstData(config, 3, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "block_size=5000: must be smaller than the training split of data/x (3 tokens) and "
            "its validation split (1 tokens)");
}

TEST(ConfigTest, PerSiteDropoutDefaultsToDropout) {
  TrainConfig config = DefaultTrainConfig();
  config.set_dropout(0.2f);
  SiteDropout rates = EffectiveDropout(config);
  EXPECT_EQ(rates.embedding, 0.2f);
  EXPECT_EQ(rates.attention_probs, 0.2f);
  EXPECT_EQ(rates.attention_output, 0.2f);
  EXPECT_EQ(rates.mlp_output, 0.2f);

  // An explicit zero is a rate of its own, not "unset".
  config.set_dropout_attention_probs(0.0f);
  config.set_dropout_mlp_output(0.3f);
  rates = EffectiveDropout(config);
  EXPECT_EQ(rates.embedding, 0.2f);
  EXPECT_EQ(rates.attention_probs, 0.0f);
  EXPECT_EQ(rates.attention_output, 0.2f);
  EXPECT_EQ(rates.mlp_output, 0.3f);
}

TEST(ConfigTest, PerSiteDropoutFromFlags) {
  absl::StatusOr<TrainConfig> config = Load({"--dropout=0.1", "--dropout_embedding", "0"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->has_dropout_embedding());
  EXPECT_FALSE(config->has_dropout_mlp_output());
  const SiteDropout rates = EffectiveDropout(*config);
  EXPECT_EQ(rates.embedding, 0.0f);
  EXPECT_EQ(rates.mlp_output, 0.1f);
}

TEST(ConfigTest, ConfigToTextListsZerosAndRoundTrips) {
  TrainConfig config = DefaultTrainConfig();
  config.set_dropout_embedding(0.0f);
  config.set_learning_rate(3.0e-4f);
  config.set_sample_prompt("line \"one\"\nline two");
  const std::string text = ConfigToText(config);
  EXPECT_THAT(text, HasSubstr("num_threads: 0\n"));
  EXPECT_THAT(text, HasSubstr("dropout: 0\n"));
  EXPECT_THAT(text, HasSubstr("dropout_embedding: 0\n"));
  EXPECT_THAT(text, HasSubstr("dropout_stream: PER_RANK\n"));
  EXPECT_THAT(text, Not(HasSubstr("dropout_mlp_output")));
  TrainConfig parsed;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &parsed));
  EXPECT_TRUE(Equal(parsed, config)) << text;
}

TEST(ConfigTest, ShippedCpuRecipeLoadsAndValidates) {
  absl::StatusOr<TrainConfig> config =
      Load({"--config", DROPK_SOURCE_DIR "/configs/shakespeare_char_cpu.textproto"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(ValidateTrainConfig(*config).ok()) << ValidateTrainConfig(*config);
  EXPECT_EQ(config->out_dir(), "out/shakespeare_char_cpu");
  EXPECT_EQ(config->n_layer(), 4);
  EXPECT_EQ(config->n_embd(), 128);
  EXPECT_EQ(config->block_size(), 64);
  EXPECT_EQ(config->max_iters(), 2000);
  EXPECT_FLOAT_EQ(config->beta2(), 0.99f);
  EXPECT_EQ(config->dropout(), 0.0f);
}

// The GPU recipe loads everywhere; it validates in a build with the CUDA
// kernels and is refused, naming the device, in one without.
TEST(ConfigTest, ShippedCudaRecipeLoadsAndValidatesWhereCudaIsBuilt) {
  absl::StatusOr<TrainConfig> config =
      Load({"--config", DROPK_SOURCE_DIR "/configs/shakespeare_char_cuda.textproto"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->device(), TrainConfig::CUDA);
  EXPECT_EQ(config->precision(), TrainConfig::BF16);
  EXPECT_EQ(config->n_embd() / config->n_head(), 64);  // a head size flash takes
  EXPECT_EQ(config->block_size(), 256);
  EXPECT_FLOAT_EQ(config->dropout(), 0.2f);
  const absl::Status s = ValidateTrainConfig(*config);
  if (CudaCompiledIn()) {
    EXPECT_TRUE(s.ok()) << s;
  } else {
    EXPECT_THAT(s.message(), ::testing::HasSubstr("device: CUDA is not available")) << s;
  }
}

TEST(ConfigTest, ShippedSmokeConfigLoadsAndValidates) {
  absl::StatusOr<TrainConfig> config =
      Load({"--config", DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(ValidateTrainConfig(*config).ok()) << ValidateTrainConfig(*config);
  EXPECT_EQ(config->out_dir(), "out/tiny_smoke");
  EXPECT_EQ(config->n_layer(), 2);
  EXPECT_EQ(config->n_embd(), 32);
  EXPECT_EQ(config->max_iters(), 200);
  EXPECT_FLOAT_EQ(config->dropout(), 0.1f);
}

}  // namespace
}  // namespace dropk
