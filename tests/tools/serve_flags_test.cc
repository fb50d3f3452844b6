// dropk-serve flags that would leave a service unable to serve anyone are
// refused at start: one line naming the flag, exit 2 (before any checkpoint
// is read, so none is needed here).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace dropk {
namespace {

using test_util::CommandResult;
using test_util::RunCommand;

const std::string kBin = DROPK_BINARY_DIR "/bin/";

// --max-queue 0 answered every request 429 (every sequence waits in the
// queue first); --max-body-bytes 0 answered every POST 413, and -1 was read
// as 2^64 - 1, lifting the limit on a body held in memory whole.
TEST(ServeFlagsTest, QueueAndBodyLimitsThatServeNobodyAreRefused) {
  for (const char* flag : {"--max-queue 0", "--max-body-bytes 0", "--max-body-bytes -1",
                           "--max-body-bytes 18446744073709551615"}) {
    SCOPED_TRACE(flag);
    const CommandResult r =
        RunCommand(kBin + "dropk-serve --checkpoints /nonexistent --port 0 " + flag);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    const std::string name = std::string(flag).substr(0, std::string(flag).find(' '));
    EXPECT_EQ(r.err.rfind("dropk-serve: " + name + ": must be an integer in [1, ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// A flag given twice read CLI11's "--port: At Most 1 required but
// received 2"; it says what happened now, as dropk's subcommands do.
TEST(ServeFlagsTest, AFlagGivenTwiceIsNamedAsSuch) {
  const CommandResult r =
      RunCommand(kBin + "dropk-serve --checkpoints /nonexistent --port 1 --port 2");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "dropk-serve: --port given 2 times; give it once (run with --help for usage)\n");
}

// CLI11 reports a missing required flag before an unknown one:
// `--checkpoint DIR` said "--checkpoints is required" and nothing of the
// flag given.
TEST(ServeFlagsTest, AnUnknownFlagIsNamedWithTheFlagItWasLikelyMeantAs) {
  CommandResult r = RunCommand(kBin + "dropk-serve --checkpoint /nonexistent --port 0");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "dropk-serve: unknown flag --checkpoint (did you mean --checkpoints?) (run with --help "
            "for usage)\n");
  r = RunCommand(kBin + "dropk-serve --checkpoints /nonexistent --max_batch=4");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("unknown flag --max_batch (did you mean --max-batch?)"), std::string::npos)
      << r.err;
}

// CLI11 took the flag after one given without its value as the value:
// `--checkpoints --watch` served a directory named "--watch" and did not
// watch; `dropk data prepare --out --threads=2 in.txt` wrote into a
// directory named "--threads=2".
TEST(ServeFlagsTest, AFlagWithoutItsValueIsRefusedNotFedTheNextFlag) {
  CommandResult r = RunCommand(kBin + "dropk-serve --port 0 --checkpoints --watch");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "dropk-serve: --checkpoints: no value given (the next argument, --watch, is a flag); "
            "write --checkpoints=VALUE, which also takes a value starting with --\n");
  const test_util::ScopedTempDir dir("flag_values");
  const std::string input = dir.path() + "/in.txt";
  std::ofstream(input) << "hello\n";
  r = RunCommand("cd " + dir.path() + " && " + kBin +
                 "dropk data prepare --tokenizer char --out --threads=2 " + input);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "dropk: --out: no value given (the next argument, --threads=2, is a flag); write "
            "--out=VALUE, which also takes a value starting with --\n");
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/--threads=2"));
  // A value that names no flag stays a value, and what follows -- is
  // another command's.
  r = RunCommand(kBin + "dropk launch --hostfile /nonexistent --mpirun echo -- x --out --help");
  EXPECT_EQ(r.err.find("no value given"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--hostfile /nonexistent: cannot read"), std::string::npos) << r.err;
}

// An HTTP field value holds no line break and loses its leading spaces, so
// a key file of two lines, or one with an indented key, made every request
// a 401. The ends are now trimmed, and a control character inside refused.
TEST(ServeFlagsTest, AnApiKeyNoClientCouldSendIsRefusedOrTrimmed) {
  const test_util::ScopedTempDir dir("serve_flags");
  const std::string two_lines = dir.path() + "/two_lines";
  std::ofstream(two_lines) << "key-one\nkey-two\n";
  CommandResult r = RunCommand(kBin + "dropk-serve --checkpoints /nonexistent --port 0 " +
                               "--api-key-file " + two_lines);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "dropk-serve: --api-key-file " + two_lines +
                       ": the key holds a control character (0x0a at byte 7); the file must "
                       "hold one key on one line\n");

  const std::string indented = dir.path() + "/indented";
  std::ofstream(indented) << "  s3cret \r\n";
  const std::string port_file = dir.path() + "/port";
  // --watch serves without a checkpoint (/v1/models lists none).
  r = RunCommand("timeout -k 1 60 bash -c '" + kBin +
                 "dropk-serve --watch --checkpoints /nonexistent --port 0 --api-key-file " +
                 indented + " --port-file " + port_file +
                 " 2>/dev/null & pid=$!; for i in $(seq 1 300); do [ -s " + port_file +
                 " ] && break; sleep 0.1; done; for key in s3cret wrong; do curl -s -o /dev/null"
                 " -w \"%{http_code} \" -H \"Authorization: Bearer $key\" "
                 "http://127.0.0.1:$(cat " + port_file + ")/v1/models; done; kill $pid; wait $pid'");
  EXPECT_EQ(r.out, "200 401 ") << r.err;  // the trimmed key is accepted, another is not
}

// A directory of hundreds of broken checkpoints made one error line of tens
// of kilobytes, each reason naming its checkpoint twice ("DIR: checkpoint
// DIR: ..."). The newest five are named, then how many more.
TEST(ServeFlagsTest, ManyBrokenCheckpointsMakeOneShortLine) {
  const test_util::ScopedTempDir dir("serve_flags");
  for (int step = 1; step <= 300; ++step) {
    std::filesystem::create_directories(dir.path() + "/step-" +
                                        std::string(8 - std::to_string(step).size(), '0') +
                                        std::to_string(step));
  }
  const CommandResult r = RunCommand(kBin + "dropk-serve --port 0 --checkpoints " + dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_LT(r.err.size(), 2000u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("(checkpoint " + dir.path() + "/step-00000300: "), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("; and 295 more)"), std::string::npos) << r.err;
}

// A port out of range was only "Could not convert: --port = 70000".
TEST(ServeFlagsTest, APortOutOfRangeNamesTheRange) {
  for (const char* port : {"70000", "-1", "65536"}) {
    SCOPED_TRACE(port);
    const CommandResult r =
        RunCommand(kBin + "dropk-serve --checkpoints /nonexistent --port " + port);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, "dropk-serve: --port: must be an integer in [0, 65535], got " +
                         std::string(port) + " (run with --help for usage)\n");
  }
}

// An integer flag given a number past its type (int) was CLI11's "Could not
// convert", naming no range; CLI::Range said "Value 1.5 not in range 1 to
// 64". Every integer flag names itself, the value as typed and its range.
TEST(ServeFlagsTest, EveryIntegerFlagOutOfRangeNamesFlagValueAndRange) {
  const std::pair<const char*, const char*> kFlags[] = {
      {"--watch-interval-ms", "[10, 3600000]"},
      {"--port", "[0, 65535]"},
      {"--io-threads", "[1, 64]"},
      {"--cuda-device", "[0, 1023]"},
      {"--threads", "[0, 1024]"},
      {"--max-batch", "[1, 1024]"},
      {"--max-queue", "[1, 1000000]"},
      {"--max-request-tokens", "[1, 1099511627776]"},
      {"--max-running-per-request", "[0, 1024]"},
      {"--max-body-bytes", "[1, 1073741824]"},
      {"--max-connections", "[1, 1000000]"},
      {"--header-timeout-ms", "[1, 3600000]"},
      {"--body-timeout-ms", "[1, 3600000]"},
      {"--drain-ms", "[0, 3600000]"}};
  for (const auto& [flag, range] : kFlags) {
    for (const char* value : {"99999999999999", "99999999999999999999999", "1.5"}) {
      SCOPED_TRACE(std::string(flag) + " " + value);
      const CommandResult r =
          RunCommand(kBin + "dropk-serve --checkpoints /nonexistent " + flag + " " + value);
      EXPECT_EQ(r.exit_code, 2) << r.err;
      EXPECT_EQ(r.err, std::string("dropk-serve: ") + flag + ": must be an integer in " + range +
                           ", got " + value + " (run with --help for usage)\n");
    }
  }
}

// CLI11 read a bool option as any number: --cuda-graphs 5 was true, and
// 0.5 "Could not convert". It takes what dropk-train's bool fields take.
TEST(ServeFlagsTest, CudaGraphsTakesTrueOrFalseOnly) {
  for (const char* value : {"5", "0.5", "maybe", "-1", "on"}) {
    SCOPED_TRACE(value);
    const CommandResult r =
        RunCommand(kBin + "dropk-serve --checkpoints /nonexistent --cuda-graphs " + value);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, std::string("dropk-serve: --cuda-graphs: must be true, false, 1 or 0, got ") +
                         value + " (run with --help for usage)\n");
  }
  // An accepted value gets past the flags to the missing directory.
  for (const char* value : {"false", "TRUE", "0", "1"}) {
    SCOPED_TRACE(value);
    const CommandResult r =
        RunCommand(kBin + "dropk-serve --checkpoints /nonexistent --cuda-graphs " + value);
    EXPECT_EQ(r.err.find("--cuda-graphs"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("/nonexistent"), std::string::npos) << r.err;
  }
}

// --help said "--cuda-graphs BOOLEAN:BOOLEAN=1": the type twice (the option's
// and its check's) and the default as CLI11 prints a bool, where the flag
// is documented and written as true or false.
TEST(ServeFlagsTest, HelpShowsCudaGraphsAsABooleanDefaultingToTrue) {
  const CommandResult r = RunCommand(kBin + "dropk-serve --help");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("--cuda-graphs BOOLEAN=true "), std::string::npos) << r.out;
}

// --address takes a numeric address; "localhost" was refused with only
// "Invalid argument". A bad one is a bad flag: exit 2 (exit_codes.h), said
// before anything else is done (it was exit 1, found only when binding,
// after the model had loaded or, with --watch, after a line about waiting
// for one).
TEST(ServeFlagsTest, AddressThatIsNotNumericIsNamedAsSuch) {
  for (const char* address : {"localhost", "999.1.1.1", "''"}) {
    SCOPED_TRACE(address);
    const CommandResult r = RunCommand(
        kBin + "dropk-serve --checkpoints /nonexistent --watch --port 0 --address " + address);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err.rfind("dropk-serve: --address '", 0), 0u) << r.err;
    EXPECT_NE(r.err.find("not a numeric IPv4 or IPv6 address"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // Numeric addresses pass the check (and the next problem is reported).
  for (const char* address : {"::1", "0.0.0.0"}) {
    SCOPED_TRACE(address);
    const CommandResult r =
        RunCommand(kBin + "dropk-serve --checkpoints /nonexistent --port 0 --address " + address);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, "dropk-serve: --checkpoints /nonexistent: does not exist\n");
  }
}

// An empty --checkpoints said ": does not exist", and with --watch the
// service waited for good for a checkpoint to appear in "".
TEST(ServeFlagsTest, AnEmptyCheckpointsDirectoryIsRefused) {
  for (const char* watch : {"", "--watch"}) {
    SCOPED_TRACE(watch);
    const CommandResult r = RunCommand("timeout -k 1 30 " + kBin +
                                       "dropk-serve --port 0 --checkpoints '' " + watch);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, "dropk-serve: --checkpoints is empty; name the run's checkpoints directory\n");
  }
}

// A --checkpoints directory that is not there is the caller's to fix:
// exit 2 (it was 1, as for a corrupt checkpoint), naming the flag. With
// --watch the service waits for the trainer to make it instead.
TEST(ServeFlagsTest, AMissingCheckpointsDirectoryIsAUsageError) {
  const test_util::ScopedTempDir dir("serve_flags");
  const std::string missing = dir.path() + "/run/checkpoints";
  const CommandResult r =
      RunCommand("timeout -k 1 30 " + kBin + "dropk-serve --port 0 --checkpoints " + missing);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "dropk-serve: --checkpoints " + missing + ": does not exist\n");
}

// A FIFO in LATEST's place (or any file that is not a regular one) blocked
// the start for good, in an open that waited for a writer, with SIGTERM
// and SIGINT already blocked: only kill -9 ended it. It is now refused,
// named, at once.
TEST(ServeFlagsTest, ALatestThatIsAFifoIsRefusedWithoutHanging) {
  const test_util::ScopedTempDir dir("serve_flags");
  const std::string latest = dir.path() + "/LATEST";
  ASSERT_EQ(mkfifo(latest.c_str(), 0600), 0);
  // Bounded: a hang ends in timeout's kill (exit 137) instead of the test's.
  const CommandResult r =
      RunCommand("timeout -k 1 30 " + kBin + "dropk-serve --port 0 --checkpoints " + dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("(" + latest + ": not a regular file)"), std::string::npos) << r.err;
}

// --port-file's rename replaced whatever was there: a FIFO, or (as root) a
// device node, /dev/full becoming a regular file holding the port. What is
// not a regular file, or lies in a missing directory, is now refused at
// start, before a model loads, as a bad flag (exit 2; it was 1, as for a
// service that failed). (--watch starts without a checkpoint, so before
// the first fix the service ran on; the timeout bounds that.)
TEST(ServeFlagsTest, APortFileThatIsNotARegularFileIsRefusedAndLeftAlone) {
  const test_util::ScopedTempDir dir("serve_flags");
  const std::string fifo = dir.path() + "/port";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::filesystem::create_directories(dir.path() + "/a_dir");
  for (const std::string& target : {fifo, dir.path() + "/a_dir", dir.path() + "/no/such/port"}) {
    SCOPED_TRACE(target);
    const CommandResult r =
        RunCommand("timeout -k 1 30 " + kBin + "dropk-serve --watch --port 0 --checkpoints " +
                   dir.path() + "/none --port-file " + target);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err.rfind("dropk-serve: --port-file " + target + ": ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_TRUE(std::filesystem::is_fifo(fifo));
  EXPECT_FALSE(std::filesystem::exists(fifo + ".tmp"));
}

// --checkpoints naming one checkpoint (run/checkpoints/step-N) instead of
// the run's directory of them was refused as only "no valid checkpoint";
// then with the hint, but exit 1 as for a corrupt checkpoint. It is a
// usage error (exit 2) naming the directory that would work.
TEST(ServeFlagsTest, OneCheckpointInsteadOfTheRunsDirectoryIsNamedAsSuch) {
  const test_util::ScopedTempDir dir("serve_flags");
  const std::string step = dir.path() + "/checkpoints/step-00000010";
  std::filesystem::create_directories(step);
  std::ofstream(step + "/manifest.pb") << "not a manifest";
  const CommandResult r = RunCommand(kBin + "dropk-serve --port 0 --checkpoints " + step + "/");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "dropk-serve: --checkpoints " + step +
                       "/ is itself a checkpoint; give the run's checkpoints directory that "
                       "holds it, " +
                       dir.path() + "/checkpoints\n");
}

// A checkpoint named relative to the directory that holds it: the hint
// names that directory as ".", not as an empty path.
TEST(ServeFlagsTest, ARelativeCheckpointNamesTheCurrentDirectory) {
  const test_util::ScopedTempDir dir("serve_flags");
  const std::string step = dir.path() + "/checkpoints/step-00000010";
  std::filesystem::create_directories(step);
  std::ofstream(step + "/manifest.pb") << "not a manifest";
  const CommandResult r = RunCommand("cd " + dir.path() + "/checkpoints && " + kBin +
                                     "dropk-serve --port 0 --checkpoints step-00000010");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "dropk-serve: --checkpoints step-00000010 is itself a checkpoint; give the run's "
            "checkpoints directory that holds it, .\n");
}

// A training run's directory (holding checkpoints/) given for --checkpoints
// was refused with exit 1, and with --watch it was watched for good for a
// LATEST the trainer writes in checkpoints/; then refused at once naming
// RUN/checkpoints. It stands for RUN/checkpoints now, as it does for dropk
// sample --checkpoint and dropk ckpt, saying so (here that holds no valid
// checkpoint, which the next line names: exit 1).
TEST(ServeFlagsTest, ARunDirectoryStandsForItsCheckpointsDirectory) {
  const test_util::ScopedTempDir dir("serve_flags");
  std::filesystem::create_directories(dir.path() + "/checkpoints/step-00000002");
  std::ofstream(dir.path() + "/checkpoints/LATEST") << "step-00000002\n";
  std::ofstream(dir.path() + "/metrics.jsonl") << "{}\n";
  const CommandResult r =
      RunCommand("timeout -k 1 30 " + kBin + "dropk-serve --port 0 --checkpoints " + dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const std::string note = "dropk-serve: --checkpoints " + dir.path() +
                           " is a run directory: serving its checkpoints directory, " +
                           dir.path() + "/checkpoints\n";
  ASSERT_EQ(r.err.substr(0, note.size()), note) << r.err;
  EXPECT_NE(r.err.find(dir.path() + "/checkpoints/step-00000002", note.size()), std::string::npos)
      << r.err;
}

// A file given for --checkpoints (its LATEST, /dev/null) was "no valid
// checkpoint in" it, exit 1, and with --watch it was watched for good for
// checkpoints a file cannot hold. It is a usage error at once.
TEST(ServeFlagsTest, AFileForTheCheckpointsDirectoryIsAUsageError) {
  const test_util::ScopedTempDir dir("serve_flags");
  std::ofstream(dir.Path("LATEST")) << "step-00000002\n";
  const struct {
    std::string path, says;
  } cases[] = {{dir.Path("LATEST"),
                " is not a directory; give the run's checkpoints directory, " + dir.path()},
               {"/dev/null", " is not a directory; give the run's checkpoints directory"}};
  for (const auto& c : cases) {
    for (const char* watch : {"", "--watch "}) {
      SCOPED_TRACE(c.path + " " + watch);
      // Bounded: before the fix --watch waited for good (timeout's exit 124).
      const CommandResult r = RunCommand("timeout -k 1 20 " + kBin + "dropk-serve --port 0 " +
                                         watch + "--checkpoints " + c.path);
      EXPECT_EQ(r.exit_code, 2) << r.err;
      EXPECT_EQ(r.err, "dropk-serve: --checkpoints " + c.path + c.says + "\n");
    }
  }
}

// An --api-key-file that is a directory (a Secret's mount point, say) was
// refused as an "empty key"; one longer than 4096 bytes was cut to 4096
// without a word, so no client's key could match; a FIFO hung the start.
// One that cannot be opened says why.
TEST(ServeFlagsTest, ApiKeyFileThatIsADirectoryOrTooLongIsNamedAsSuch) {
  const test_util::ScopedTempDir dir("serve_flags");
  std::ofstream(dir.Path("long")) << std::string(5000, 'k');
  // A FIFO waited for a writer for good (timeout(1) turns that into a failure).
  ASSERT_EQ(mkfifo(dir.Path("fifo").c_str(), 0600), 0);
  const struct {
    std::string file, says;
  } cases[] = {{dir.path(), ": cannot read (Is a directory)"},
               {dir.Path("long"), ": longer than 4096 bytes"},
               {dir.Path("fifo"), ": not a regular file"},
               // It said "cannot open" without the reason.
               {dir.Path("missing"), ": cannot open (No such file or directory)"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const CommandResult r = RunCommand("timeout 20 " + kBin +
                                       "dropk-serve --checkpoints /nonexistent --port 0 " +
                                       "--api-key-file " + c.file);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, "dropk-serve: --api-key-file " + c.file + c.says + "\n");
  }
}

}  // namespace
}  // namespace dropk
