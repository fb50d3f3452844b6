// One exit-code vocabulary across the binaries (base/exit_codes.h): each of
// dropk-train, dropk-serve, dropk and the benchmarks exits 2 on a bad flag, 0
// on --help (help on stdout; the first three on --version too), and 1 on a
// runtime failure, with one line on stderr naming the binary.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <ostream>
#include <regex>
#include <string>

#include "base/exit_codes.h"
#include "base/version.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "trainer/prepare_data.h"

namespace dropk {
namespace {

using test_util::CommandResult;
using test_util::RunCommand;

const std::string kBin = DROPK_BINARY_DIR "/bin/";

void ExpectOneLineError(const CommandResult& r, const std::string& binary) {
  EXPECT_EQ(r.err.rfind(binary + ": ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

struct Binary {
  std::string name;
  std::string help_mentions;  // a flag the help text lists
};

void PrintTo(const Binary& binary, std::ostream* os) { *os << binary.name; }

class ExitCodesTest : public ::testing::TestWithParam<Binary> {};

TEST_P(ExitCodesTest, BadFlagIsUsageExit2) {
  const CommandResult r = RunCommand(kBin + GetParam().name + " --no_such_flag=1");
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  ExpectOneLineError(r, GetParam().name);
}

TEST_P(ExitCodesTest, HelpExits0WithHelpOnStdout) {
  const CommandResult r = RunCommand(kBin + GetParam().name + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(GetParam().help_mentions), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");
}

INSTANTIATE_TEST_SUITE_P(
    Binaries, ExitCodesTest,
    ::testing::Values(
        Binary{"dropk-train", "--n_layer"}, Binary{"dropk-serve", "--checkpoints"},
        Binary{"dropk", "ckpt"}, Binary{"dropk-train-throughput-bench", "--bucket-cap-mib"},
        // The other benchmarks: --help used to run
        // dropk-serve-bench's whole benchmark, and
        // dropk-crc32c-bench's, which took no flags.
        Binary{"dropk-serve-bench", "--only"}, Binary{"dropk-crc32c-bench", "CRC32C"},
        Binary{"dropk-allreduce-bench", "--max-mib"}, Binary{"dropk-attention-bench", "--threads"},
        Binary{"dropk-checkpoint-bench", "--repeats"}, Binary{"dropk-gpu-train-bench", "--mode"},
        Binary{"dropk-tokenizer-bench", "--gpt2-dir"}),
    [](const auto& info) {
      std::string name = info.param.name;
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

// --version was an unknown flag (exit 2) on dropk-train and dropk-serve,
// and on dropk a missing subcommand; dropk-serve wants --checkpoints
// otherwise and dropk-train would train.
TEST(ExitCodesVersionTest, VersionAloneExits0WithTheVersionOnStdout) {
  for (const std::string binary : {"dropk", "dropk-train", "dropk-serve"}) {
    SCOPED_TRACE(binary);
    const CommandResult r = RunCommand(kBin + binary + " --version");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, VersionLine(binary) + "\n");
    EXPECT_EQ(r.out.rfind(binary + " " + kVersion, 0), 0u) << r.out;
    EXPECT_EQ(r.err, "");
  }
}

// --version named no revision: which commit a binary was built from could
// not be told. Built from a git checkout, the line names it as `git
// describe --always --dirty` does: "dropk 0.1.0 (git 183d257)". (Without
// git, or outside a checkout, it is "dropk 0.1.0": the ctest
// git_revision_fallback.)
TEST(ExitCodesVersionTest, VersionNamesTheGitRevisionOfTheCheckoutBuilt) {
  const CommandResult git = RunCommand("git -C " DROPK_SOURCE_DIR " rev-parse --short HEAD");
  if (git.exit_code != 0) GTEST_SKIP() << "not built from a git checkout, or no git: " << git.err;
  for (const std::string binary : {"dropk", "dropk-train", "dropk-serve"}) {
    SCOPED_TRACE(binary);
    const CommandResult r = RunCommand(kBin + binary + " --version");
    EXPECT_TRUE(std::regex_match(
        r.out, std::regex(binary + " 0\\.1\\.0 \\(git [0-9A-Za-z._+-]*[0-9a-f]{7,}(-dirty)?\\)\n")))
        << r.out;
  }
}

// The bundled corpus as character tokens in `out_dir`.
absl::Status PrepareShakespeare(const std::string& out_dir) {
  PrepareOptions prepare;
  prepare.inputs = {DROPK_SOURCE_DIR "/data/tinyshakespeare.txt"};
  prepare.out_dir = out_dir;
  return PrepareData(prepare).status();
}

TEST(ExitCodesRuntimeTest, TrainerRuntimeFailureExits1) {
  test_util::ScopedTempDir dir("exit_train");
  ASSERT_TRUE(PrepareShakespeare(dir.Path("data")).ok());
  // A corrupt tokenizer.pb is the data's fault, not a usage error. (An
  // out_dir below a regular file used to stand in here; it is the user's to
  // fix and exits 2, see TrainCliTest.RunDirectoryThatIsAFileExitsTwoNamingIt.)
  std::ofstream(dir.Path("data/tokenizer.pb"), std::ios::trunc) << "not a tokenizer";
  const CommandResult r = RunCommand(kBin +
                                     "dropk-train --config " DROPK_SOURCE_DIR
                                     "/configs/tiny_smoke.textproto --max_iters=1 --data_dir=" +
                                     dir.Path("data") + " --out_dir=" + dir.Path("out"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  ExpectOneLineError(r, "dropk-train");
  EXPECT_NE(r.err.find(dir.Path("data/tokenizer.pb")), std::string::npos) << r.err;
}

// Output that cannot be written is a failure naming stdout: `dropk ...
// > /dev/full` lost the text and exited 0. For each of the three binaries,
// through --version (the one output all of them print and then exit).
TEST(ExitCodesRuntimeTest, StdoutThatCannotBeWrittenExits1NamingIt) {
  if (access("/dev/full", W_OK) != 0) GTEST_SKIP() << "no writable /dev/full here";
  for (const std::string binary : {"dropk", "dropk-train", "dropk-serve"}) {
    SCOPED_TRACE(binary);
    const CommandResult r = RunCommand(kBin + binary + " --version > /dev/full");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    ExpectOneLineError(r, binary);
    EXPECT_NE(r.err.find("cannot write to stdout: No space left on device"), std::string::npos)
        << r.err;
  }
}

// A reader that went away is no failure: `dropk-train ... | true` (every
// write of the sample after training failed with EPIPE) exited 1 with
// "cannot write to stdout: some output was not written".
TEST(ExitCodesRuntimeTest, AReaderThatWentAwayIsNoFailure) {
  test_util::ScopedTempDir dir("exit_reader_gone");
  ASSERT_TRUE(PrepareShakespeare(dir.Path("data")).ok());
  for (int run = 0; run < 3; ++run) {
    const CommandResult r = RunCommand(
        "bash -c '" + kBin + "dropk-train --config " DROPK_SOURCE_DIR
        "/configs/tiny_smoke.textproto --max_iters=1 --sample_tokens=2000 --num_threads=1 "
        "--data_dir=" + dir.Path("data") + " --out_dir=" + dir.Path("out" + std::to_string(run)) +
        " | true; exit ${PIPESTATUS[0]}'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err.find("cannot write to stdout"), std::string::npos) << r.err;
  }
}

// A closed stdout (`>&-`) is reported as one that cannot be written, and
// the descriptor is not handed to a file the command opens: there the
// command's stdout text went into the file it wrote.
TEST(ExitCodesRuntimeTest, ClosedStdoutExits1AndNoFileTakesItsPlace) {
  test_util::ScopedTempDir dir("exit_closed_stdout");
  ASSERT_TRUE(PrepareShakespeare(dir.Path("data")).ok());
  const CommandResult r = RunCommand(kBin + "dropk data prepare --tokenizer char --out " +
                                     dir.Path("again") + " " DROPK_SOURCE_DIR
                                     "/data/tinyshakespeare.txt >&-");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  ExpectOneLineError(r, "dropk");
  EXPECT_NE(r.err.find("cannot write to stdout: Bad file descriptor"), std::string::npos)
      << r.err;
  // Every file it wrote is as a run with stdout open writes it.
  for (const std::string name : {"train.bin", "val.bin", "tokenizer.pb"}) {
    SCOPED_TRACE(name);
    std::ifstream a(dir.Path("data/" + name), std::ios::binary);
    std::ifstream b(dir.Path("again/" + name), std::ios::binary);
    const std::string expected((std::istreambuf_iterator<char>(a)), {});
    const std::string got((std::istreambuf_iterator<char>(b)), {});
    ASSERT_FALSE(expected.empty());
    EXPECT_TRUE(got == expected) << "sizes " << got.size() << " and " << expected.size();
  }
}

// A mistyped subcommand is named with the choices; CLI11 alone said "A
// subcommand is required", which hid the typo.
TEST(ExitCodesUsageTest, ToolNamesAnUnknownSubcommandAndTheChoices) {
  CommandResult r = RunCommand(kBin + "dropk bogus");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ExpectOneLineError(r, "dropk");
  EXPECT_NE(r.err.find("'bogus' is not a dropk subcommand; one of data, ckpt, sample"),
            std::string::npos)
      << r.err;

  r = RunCommand(kBin + "dropk ckpt chek /tmp");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ExpectOneLineError(r, "dropk");
  EXPECT_NE(r.err.find("'chek' is not a dropk ckpt subcommand; one of inspect, verify, export"),
            std::string::npos)
      << r.err;

  // A leaf command's own argument is not taken for a subcommand.
  r = RunCommand(kBin + "dropk ckpt verify");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err.find("subcommand"), std::string::npos) << r.err;
}

TEST(ExitCodesRuntimeTest, ServeWithoutAServableCheckpointExits1) {
  test_util::ScopedTempDir dir("exit_serve");
  const CommandResult r = RunCommand(kBin + "dropk-serve --port 0 --checkpoints " + dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  ExpectOneLineError(r, "dropk-serve");
  EXPECT_NE(r.err.find(dir.path()), std::string::npos) << r.err;
}

TEST(ExitCodesRuntimeTest, ToolVerifyOfACorruptCheckpointExits1) {
  test_util::ScopedTempDir dir("exit_tool");
  std::ofstream(dir.Path("manifest.pb")) << "not a manifest";
  const CommandResult r = RunCommand(kBin + "dropk ckpt verify " + dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  ExpectOneLineError(r, "dropk");
}

// The last resort of every binary: a GPU failure that escapes its main
// body is one line and exit 1, not an abort with a core dump.
TEST(ExitCodesTest, AnEscapedDeviceErrorIsOneLineAndExitOne) {
  ::testing::internal::CaptureStderr();
  const int code = RunMainGuardingAllocation(
      "dropk", "", [](int, char**) -> int { throw DeviceError("Synchronize on cuda:0", "lost"); },
      0, nullptr);
  EXPECT_EQ(code, kExitFailure);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "dropk: the GPU failed: Synchronize on cuda:0: lost\n");
}

}  // namespace
}  // namespace dropk
