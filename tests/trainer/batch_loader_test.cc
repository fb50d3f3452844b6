// The batch loader: windows in range, a permutation per epoch (no window
// read twice within an epoch, for any split), purity in (seed, step).
#include "trainer/batch_loader.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <set>
#include <vector>

#include "support/temp_dir.h"
#include "trainer/data_parallel.h"

namespace dropk {
namespace {

TEST(PermuteIndexTest, IsABijectionForAwkwardSizes) {
  for (uint64_t n : {1u, 2u, 3u, 5u, 17u, 64u, 1000u, 4097u}) {
    std::set<uint64_t> seen;
    for (uint64_t x = 0; x < n; ++x) {
      const uint64_t y = PermuteIndex(x, n, 42, 1, 2);
      ASSERT_LT(y, n);
      seen.insert(y);
    }
    EXPECT_EQ(seen.size(), n) << n;
  }
  int moved = 0;
  for (uint64_t x = 0; x < 1000; ++x)
    moved += PermuteIndex(x, 1000, 42, 1, 2) != PermuteIndex(x, 1000, 43, 1, 2);
  EXPECT_GT(moved, 900) << "another seed, another order";
}

class BatchLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Each test (ctest runs them as separate, possibly parallel, processes)
    // writes its own file.
    path_ = std::filesystem::path(dir_.path()) / "batch_loader_test.bin";
    std::vector<int32_t> tokens(1000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i % 50);
    ASSERT_TRUE(WriteTokenFile(path_.string(), tokens, 50).ok());
    file_ = std::make_unique<TokenDataset>(
        TokenDataset::FromFile(TokenFile::Open(path_.string()).value()));
  }
  test_util::ScopedTempDir dir_{"batch_loader"};
  std::filesystem::path path_;
  std::unique_ptr<TokenDataset> file_;
};

TEST_F(BatchLoaderTest, NoWindowRepeatsWithinAnEpochForAnySplit) {
  const int T = 16;
  for (int world : {1, 2, 3, 4}) {
    const int B = 3, accum = 2;
    const uint64_t global = static_cast<uint64_t>(B) * accum * world;
    BatchLoader loader(file_.get(), 7, T, kTrainBatches, global);
    const uint64_t windows = loader.windows_per_epoch();
    ASSERT_EQ(windows, (1000u - T) / T);
    std::set<uint64_t> offsets;
    uint64_t drawn = 0;
    for (uint64_t step = 0; drawn < windows; ++step) {
      for (int micro = 0; micro < accum; ++micro) {
        for (int rank = 0; rank < world; ++rank) {
          for (int b = 0; b < B && drawn < windows; ++b, ++drawn) {
            const uint64_t off =
                loader.SampleOffset(step, FirstSampleOf(micro, rank, world, B) + b);
            ASSERT_LE(off + T + 1, file_->size());
            offsets.insert(off);
          }
        }
      }
    }
    EXPECT_EQ(offsets.size(), windows) << "world " << world << ": a window repeated in epoch 0";
  }
}

TEST_F(BatchLoaderTest, BatchesArePureFunctionsOfSeedAndStep) {
  const int T = 16;
  BatchLoader a(file_.get(), 7, T, kTrainBatches, 8), b(file_.get(), 7, T, kTrainBatches, 8);
  BatchLoader other_seed(file_.get(), 8, T, kTrainBatches, 8);
  BatchLoader eval(file_.get(), 7, T, kEvalValBatches, 8);
  int differ_seed = 0, differ_split = 0;
  for (uint64_t step = 0; step < 50; ++step) {
    for (uint64_t s = 0; s < 8; ++s) {
      const uint64_t off = a.SampleOffset(step, s);
      ASSERT_EQ(off, b.SampleOffset(step, s));
      differ_seed += off != other_seed.SampleOffset(step, s);
      differ_split += off != eval.SampleOffset(step, s);
    }
  }
  EXPECT_GT(differ_seed, 350);
  EXPECT_GT(differ_split, 350);
}

TEST_F(BatchLoaderTest, TargetsAreInputsShiftedByOneAndSplitsCompose) {
  const int T = 8, B = 4;
  BatchLoader loader(file_.get(), 3, T, kTrainBatches, B);
  std::vector<int32_t> in(B * T), tg(B * T);
  loader.Fill(5, 0, B, in.data(), tg.data());
  for (int b = 0; b < B; ++b) {
    const uint64_t off = loader.SampleOffset(5, b);
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(in[b * T + t], (*file_)[off + t]);
      EXPECT_EQ(tg[b * T + t], (*file_)[off + t + 1]);
    }
  }
  std::vector<int32_t> in2(B * T), tg2(B * T);
  loader.Fill(5, 0, 2, in2.data(), tg2.data());
  loader.Fill(5, 2, 2, in2.data() + 2 * T, tg2.data() + 2 * T);
  EXPECT_EQ(in, in2);
  EXPECT_EQ(tg, tg2);
}

TEST_F(BatchLoaderTest, TinyDataStillYieldsValidWindows) {
  const int T = 600;  // fewer than 2T tokens: a single window per epoch
  BatchLoader loader(file_.get(), 1, T, kTrainBatches, 4);
  EXPECT_EQ(loader.windows_per_epoch(), 1u);
  for (uint64_t step = 0; step < 20; ++step) {
    EXPECT_LE(loader.SampleOffset(step, 3) + T + 1, file_->size());
  }
}

}  // namespace
}  // namespace dropk
