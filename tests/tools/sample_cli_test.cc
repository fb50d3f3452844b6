// `dropk sample` flags the request body cannot carry: each is refused with
// one line naming the flag and exit 2, before any connection is tried (the
// URL points at a closed port, so reaching the network would say so).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "support/subprocess.h"

namespace dropk {
namespace {

using test_util::CommandResult;
using test_util::RunCommand;

const std::string kBin = DROPK_BINARY_DIR "/bin/";

CommandResult Sample(const std::string& flags) {
  return RunCommand(kBin + "dropk sample --url http://127.0.0.1:1 " + flags);
}

void ExpectFlagError(const CommandResult& r, const std::string& names) {
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.err.rfind("dropk: " + names, 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// A prompt that is not UTF-8 aborted dropk (nlohmann's type_error escaped
// while the JSON body was written).
TEST(SampleCliTest, PromptThatIsNotUtf8IsAFlagErrorNotAnAbort) {
  const CommandResult r = Sample("--prompt \"$(printf 'ab\\377')\"");
  ExpectFlagError(r, "--prompt is not valid UTF-8");
  EXPECT_NE(r.err.find("index 2: 0xFF"), std::string::npos) << r.err;
}

// NaN and infinity became JSON null, which the server reads as absent: the
// text was sampled at temperature 1 (or top_p 1) without a word.
TEST(SampleCliTest, NonFiniteTemperatureOrTopPIsRefused) {
  ExpectFlagError(Sample("--prompt a --temperature nan"), "--temperature nan: must be a finite");
  ExpectFlagError(Sample("--prompt a --temperature inf"), "--temperature inf: must be a finite");
  ExpectFlagError(Sample("--prompt a --top-p -inf"), "--top-p -inf: must be a finite");
}

// CLI11 turned --seed -1 and --seed 2^64 into 2^64 - 1 silently.
TEST(SampleCliTest, SeedOutsideUint64IsRefused) {
  for (const char* seed : {"-1", "18446744073709551616", "1.5", "x"}) {
    SCOPED_TRACE(seed);
    ExpectFlagError(Sample(std::string("--prompt a --seed ") + seed),
                    std::string("--seed ") + seed + ": must be an integer in [0, ");
  }
}

}  // namespace
}  // namespace dropk
