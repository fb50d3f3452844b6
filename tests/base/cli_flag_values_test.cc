// The suggestion an unknown flag's error gives (base/cli_flag_values.h).
#include "base/cli_flag_values.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace dropk {
namespace {

const std::vector<std::string> kServeFlags = {"--checkpoints", "--watch", "--port", "--port-file",
                                              "--max-batch"};
const std::vector<std::string> kTrainFlags = {"--max_iters", "--n_layer", "--n_head",
                                              "--learning_rate", "--resume"};

TEST(ClosestNameTest, ATypoOrAMissingLetterNamesTheFlagMeant) {
  EXPECT_EQ(ClosestName("--checkpoint", kServeFlags), "--checkpoints");
  EXPECT_EQ(ClosestName("--max_iter", kTrainFlags), "--max_iters");
  EXPECT_EQ(ClosestName("--n_layers", kTrainFlags), "--n_layer");
  EXPECT_EQ(ClosestName("--prot", kServeFlags), "--port");  // two letters swapped
  EXPECT_EQ(ClosestName("--lerning_rate", kTrainFlags), "--learning_rate");
}

// dropk-train's flags are spelled with '_', dropk-serve's with '-'.
TEST(ClosestNameTest, DashesForUnderscoresAndCaseAreTheSameFlag) {
  EXPECT_EQ(ClosestName("--max-iters", kTrainFlags), "--max_iters");
  EXPECT_EQ(ClosestName("--max_batch", kServeFlags), "--max-batch");
  EXPECT_EQ(ClosestName("--Port-File", kServeFlags), "--port-file");
}

TEST(ClosestNameTest, NothingCloseSuggestsNothing) {
  EXPECT_EQ(ClosestName("--temperature", kServeFlags), "");
  EXPECT_EQ(ClosestName("--x", kServeFlags), "");
  EXPECT_EQ(ClosestName("--p", kServeFlags), "");  // 3 edits from --port: too far for its length
  EXPECT_EQ(ClosestName("--", kServeFlags), "");
  EXPECT_EQ(ClosestName("-", {}), "");
  EXPECT_EQ(DidYouMean("--wach", kServeFlags), " (did you mean --watch?)");
  EXPECT_EQ(DidYouMean("--nothing-like-it", kServeFlags), "");
}

// CLI11 said "--checkpoints is required" for `--checkpoint DIR`, not a word
// about the flag given.
TEST(UnknownFlagAfterParseTest, TheUnknownFlagIsNamedBeforeTheMissingOne) {
  CLI::App app("test");
  std::string checkpoints;
  app.add_option("--checkpoints", checkpoints)->required();
  app.add_option("--port", checkpoints);
  std::vector<std::string> args = {"--checkpoint=run", "--port", "1"};
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  EXPECT_THROW(app.parse(args), CLI::RequiredError);
  EXPECT_EQ(UnknownFlagAfterParse(app), "unknown flag --checkpoint (did you mean --checkpoints?)");
  CLI::App clean("test");
  clean.add_option("--checkpoints", checkpoints)->required();
  std::vector<std::string> none;
  EXPECT_THROW(clean.parse(none), CLI::RequiredError);
  EXPECT_EQ(UnknownFlagAfterParse(clean), "");
}

}  // namespace
}  // namespace dropk
