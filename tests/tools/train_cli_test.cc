// dropk-train's command line: every invalid value stops with exit code 2 and
// one line naming the field and the value.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/subprocess.h"
#include "trainer/prepare_data.h"

namespace dropk {
namespace {

test_util::CommandResult RunTrainCli(const std::string& args) {
  const test_util::CommandResult r =
      test_util::RunCommand(DROPK_BINARY_DIR "/bin/dropk-train " + args);
  return {r.exit_code, r.out + r.err, ""};
}

class TrainCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new std::string(
        (std::filesystem::path(::testing::TempDir()) / "dropk_train_cli_data").string());
    PrepareOptions options;
    options.input_path = DROPK_SOURCE_DIR "/data/tinyshakespeare.txt";
    options.out_dir = *data_;
    ASSERT_TRUE(PrepareData(options).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*data_);
    delete data_;
  }
  static std::string Base() {
    return "--config " DROPK_SOURCE_DIR "/configs/tiny_smoke.textproto --data_dir=" + *data_ +
           " --out_dir=" + ::testing::TempDir() + "/dropk_train_cli_out";
  }
  static std::string* data_;
};
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
  };
  for (const BadArgs& c : cases) {
    const test_util::CommandResult r = RunTrainCli(Base() + " " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expected), std::string::npos) << c.args << "\n" << r.out;
  }
}

TEST_F(TrainCliTest, MissingConfigFileExitsTwoNamingIt) {
  const test_util::CommandResult r = RunTrainCli("--config /nonexistent/run.textproto");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("/nonexistent/run.textproto"), std::string::npos) << r.out;
}

TEST_F(TrainCliTest, HelpListsFieldsWithDefaults) {
  const test_util::CommandResult r = RunTrainCli("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* field : {"n_layer", "dropout_attention_probs", "gradient_accumulation_steps"}) {
    EXPECT_NE(r.out.find(field), std::string::npos) << field;
  }
}

TEST_F(TrainCliTest, ShortRunSucceedsAndPrintsASample) {
  const test_util::CommandResult r = RunTrainCli(Base() + " --max_iters=5 --eval_interval=5 --sample_tokens=20");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("step 5/5"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dropk
