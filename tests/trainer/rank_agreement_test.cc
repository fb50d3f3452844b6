// Ranks started with different configs or data are refused before the first
// collective whose size the config decides, naming what differs.
#include "trainer/rank_agreement.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mutex>
#include <vector>

#include "support/thread_communicator.h"
#include "trainer/config.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

Tokenizer CharTokenizer(const std::string& chars) {
  Tokenizer t;
  t.set_kind(Tokenizer::CHAR);
  for (char c : chars) t.add_code_points(c);
  return t;
}

// Runs CheckRanksAgree on `world` thread ranks, rank r bringing
// fingerprint_of(r); returns every rank's result.
std::vector<absl::Status> Check(int world,
                                const std::function<std::vector<std::string>(int)>& fingerprint_of) {
  std::vector<absl::Status> results(world);
  test_util::RunRanks(world, [&](Communicator& comm) {
    CollectiveOptions options;
    options.timeout = std::chrono::seconds(20);
    results[comm.Rank()] = CheckRanksAgree(fingerprint_of(comm.Rank()), comm, options);
  });
  return results;
}

TEST(RankAgreementTest, SameRunAgreesWhatEachRankMaySetForItselfAside) {
  const Tokenizer tokenizer = CharTokenizer("abc");
  const std::vector<absl::Status> results = Check(3, [&](int rank) {
    TrainConfig c = DefaultTrainConfig();
    // Paths differ between hosts, cores between machines.
    c.set_data_dir("/mnt/host" + std::to_string(rank) + "/data");
    c.set_out_dir("/scratch/" + std::to_string(rank));
    c.set_checkpoint_dir("/shared" + std::string(rank, '/') + "/ckpt");
    c.set_num_threads(rank + 1);
    return RunFingerprint(c, tokenizer, 1000, 100, 7);
  });
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
}

TEST(RankAgreementTest, AnotherModelShapeIsRefusedOnEveryRankNamingFieldValuesAndRank) {
  const Tokenizer tokenizer = CharTokenizer("abc");
  const std::vector<absl::Status> results = Check(3, [&](int rank) {
    TrainConfig c = DefaultTrainConfig();
    if (rank == 2) c.set_n_layer(6);
    return RunFingerprint(c, tokenizer, 1000, 100, 7);
  });
  for (const absl::Status& s : results) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), AllOf(HasSubstr("n_layer is 4 on rank 0 but 6 on rank 2"),
                                   HasSubstr("different settings")));
    EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("rank 1"))) << "rank 1 agrees";
  }
}

TEST(RankAgreementTest, DifferentDataIsRefusedNamingTheTokenizerAndTheSplit) {
  const std::vector<absl::Status> results = Check(2, [&](int rank) {
    return RunFingerprint(DefaultTrainConfig(), CharTokenizer(rank == 0 ? "abc" : "abd"), 1000,
                          rank == 0 ? 100 : 99, 7);
  });
  for (const absl::Status& s : results) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), AllOf(HasSubstr("the tokenizer of data_dir"),
                                   HasSubstr("the validation split of data_dir is 100 tokens on "
                                             "rank 0 but 99 tokens on rank 1")));
    EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("training split")));
  }
}

// Data of the same sizes and tokenizer but other text (another corpus, a
// copy that differs) passed: the ranks compared sizes and the tokenizer
// only. Checksums of the tokens are compared too, naming the rank.
TEST(RankAgreementTest, DataOfOtherContentIsRefusedNamingTheRank) {
  const std::vector<absl::Status> results = Check(3, [&](int rank) {
    return RunFingerprint(DefaultTrainConfig(), CharTokenizer("abc"), 1000, 100, rank == 1 ? 8 : 7);
  });
  for (const absl::Status& s : results) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(),
                HasSubstr("the content of data_dir is tokens CRC32C 00000007 on rank 0 but "
                          "tokens CRC32C 00000008 on rank 1"));
    EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("rank 2"))) << "rank 2 agrees";
  }
}

TEST(RankAgreementTest, ManyDifferencesStayOneLine) {
  const std::vector<absl::Status> results = Check(2, [&](int rank) {
    TrainConfig c = DefaultTrainConfig();
    if (rank == 1) {
      c.set_n_layer(1);
      c.set_n_head(1);
      c.set_n_embd(8);
      c.set_block_size(8);
      c.set_batch_size(1);
      c.set_sample_prompt("a\nb");
    }
    return RunFingerprint(c, CharTokenizer("ab"), 10, 10, 7);
  });
  for (const absl::Status& s : results) {
    EXPECT_THAT(s.message(), HasSubstr("and 2 more"));
    EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.message();
  }
}

TEST(RankAgreementTest, OneRankAlwaysAgrees) {
  EXPECT_TRUE(Check(1, [](int) { return std::vector<std::string>{"x: 1"}; })[0].ok());
}

}  // namespace
}  // namespace dropk
