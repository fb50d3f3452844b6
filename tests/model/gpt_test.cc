// Whole-model properties: gradient check with dropout active, determinism,
// dropout off in evaluation, gradient-ready ranges, accumulation.
#include "model/gpt.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <set>
#include <vector>
#include "support/failing_kernels.h"

namespace dropk {
namespace {

class GptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernels_ = MakeKernels(Device::kCpu, 2).value();
    config_ = {/*vocab_size=*/11, /*block_size=*/8, /*n_layer=*/2, /*n_head=*/2, /*n_embd=*/8};
    gpt_ = Gpt::Create(config_, B, kernels_.get()).value();
    gpt_->InitWeights(123);
    // Larger weights than GPT-2's 0.02 so every path carries signal.
    std::vector<float> p = Params();
    for (float& x : p) x *= 10.0f;
    SetParams(p);
    for (int i = 0; i < B * T; ++i) {
      tokens_.push_back((i * 7 + 3) % config_.vocab_size);
      targets_.push_back((i * 5 + 1) % config_.vocab_size);
    }
    plan_.seed = 99;
    plan_.step = 17;
    plan_.stream_base = 1;
    plan_.rates = {0.1f, 0.2f, 0.15f, 0.25f};
  }
  std::vector<float> Params() const {
    std::vector<float> p(gpt_->num_params());
    kernels_->CopyToHost(p.data(), gpt_->params(), p.size() * sizeof(float));
    return p;
  }
  void SetParams(const std::vector<float>& p) {
    kernels_->CopyToDevice(gpt_->params(), p.data(), p.size() * sizeof(float));
  }
  std::vector<float> Grads() const {
    std::vector<float> g(gpt_->num_params());
    kernels_->CopyToHost(g.data(), gpt_->grads(), g.size() * sizeof(float));
    return g;
  }
  float Loss(const DropoutPlan* plan) {
    return gpt_->Forward(tokens_.data(), targets_.data(), B, T, plan);
  }

  static constexpr int B = 2, T = 6;
  std::unique_ptr<Kernels> kernels_;
  GptConfig config_;
  std::unique_ptr<Gpt> gpt_;
  std::vector<int32_t> tokens_, targets_;
  DropoutPlan plan_;
};

TEST_F(GptTest, GradientMatchesFiniteDifferencesWithDropoutActive) {
  Loss(&plan_);
  gpt_->ZeroGrad();
  gpt_->Backward(1.0f);
  const std::vector<float> analytic = Grads();
  std::vector<float> p = Params();
  // The largest gradients of every tensor, where float32 differences are
  // informative.
  for (const ParamTensor& t : gpt_->layout().tensors()) {
    std::vector<size_t> idx(t.numel);
    std::iota(idx.begin(), idx.end(), t.offset);
    std::partial_sort(
        idx.begin(), idx.begin() + std::min<size_t>(3, idx.size()), idx.end(),
        [&](size_t a, size_t b) { return std::abs(analytic[a]) > std::abs(analytic[b]); });
    for (size_t j = 0; j < std::min<size_t>(3, idx.size()); ++j) {
      const size_t i = idx[j];
      const float eps = 2e-3f;
      const float saved = p[i];
      p[i] = saved + eps;
      SetParams(p);
      const double up = Loss(&plan_);
      p[i] = saved - eps;
      SetParams(p);
      const double down = Loss(&plan_);
      p[i] = saved;
      SetParams(p);
      const double numeric = (up - down) / (2.0 * eps);
      EXPECT_NEAR(numeric, analytic[i], 3e-2 * std::abs(analytic[i]) + 1e-3)
          << t.name << " element " << i - t.offset;
    }
  }
}

TEST_F(GptTest, ForwardIsDeterministicAndDropoutChangesTheLoss) {
  const float with_dropout = Loss(&plan_);
  EXPECT_EQ(with_dropout, Loss(&plan_));
  const float eval = Loss(nullptr);
  DropoutPlan zero_rates = plan_;
  zero_rates.rates = {};
  EXPECT_EQ(eval, Loss(&zero_rates)) << "rates of 0 must equal no dropout";
  EXPECT_NE(eval, with_dropout);
  DropoutPlan next_step = plan_;
  next_step.step += 1;
  EXPECT_NE(with_dropout, Loss(&next_step)) << "a new step draws new masks";
}

TEST_F(GptTest, GradsReadyRangesCoverTheBufferInReverseOrder) {
  Loss(&plan_);
  gpt_->ZeroGrad();
  std::vector<std::pair<size_t, size_t>> ranges;
  std::set<DeviceEvent*> events;
  gpt_->Backward(1.0f, [&](size_t begin, size_t end, DeviceEvent* ready) {
    ranges.emplace_back(begin, end);
    ASSERT_NE(ready, nullptr) << "every range comes with its readiness event";
    ready->HostWait();
    events.insert(ready);
  });
  ASSERT_EQ(ranges.size(), static_cast<size_t>(config_.n_layer + 2));
  EXPECT_EQ(events.size(), ranges.size()) << "one event per range, alive until the next Backward";
  EXPECT_EQ(ranges.front().second, gpt_->num_params());
  EXPECT_EQ(ranges.back().first, 0u);
  for (size_t i = 1; i < ranges.size(); ++i) EXPECT_EQ(ranges[i].second, ranges[i - 1].first);
}

TEST_F(GptTest, ForwardChecksItsBatchContract) {
  // A batch larger than the model was built for would write past its
  // activations: a bug in the caller, caught by DROPK_CHECK.
  const int too_many = gpt_->max_batch() + 1;
  std::vector<int32_t> tokens(static_cast<size_t>(too_many) * config_.block_size, 1);
  EXPECT_DEATH(gpt_->Forward(tokens.data(), nullptr, too_many, config_.block_size, nullptr),
               "CHECK failed: B >= 1 && B <= max_batch_.*max_batch=");
  EXPECT_DEATH(gpt_->Forward(tokens.data(), nullptr, 1, config_.block_size + 1, nullptr),
               "CHECK failed: T >= 1");
}

TEST_F(GptTest, BackwardAccumulatesScaledGradients) {
  Loss(&plan_);
  gpt_->ZeroGrad();
  gpt_->Backward(1.0f);
  const std::vector<float> once = Grads();
  Loss(&plan_);
  gpt_->Backward(0.5f);
  const std::vector<float> accumulated = Grads();
  for (size_t i = 0; i < once.size(); ++i) {
    ASSERT_NEAR(accumulated[i], 1.5f * once[i], 1e-5f * std::abs(once[i]) + 1e-9f) << i;
  }
}

TEST(GptCreateTest, RejectsInvalidShapes) {
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 1).value();
  auto bad = Gpt::Create({10, 8, 2, 3, 8}, 1, k.get());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("n_embd=8"), std::string::npos) << bad.status();
  EXPECT_FALSE(Gpt::Create({0, 8, 2, 2, 8}, 1, k.get()).ok());
}

TEST(GptFootprintTest, CountsWhatTheLayoutHolds) {
  for (const GptConfig& config : {GptConfig{65, 64, 4, 4, 128}, GptConfig{11, 8, 2, 2, 8},
                                  GptConfig{50257, 1024, 12, 12, 768}}) {
    const ParamLayout layout(config);
    EXPECT_EQ(ParamLayout::CountParams(config).value(), layout.num_params());
    const GptFootprint f = Gpt::Footprint(config, 12).value();
    EXPECT_EQ(f.params_bytes, 4.0 * layout.num_params());
    EXPECT_EQ(f.grads_bytes, f.params_bytes);
    EXPECT_GT(f.activations_bytes, 0);
  }
  // Activations grow linearly with the batch.
  const GptConfig config{65, 64, 4, 4, 128};
  EXPECT_DOUBLE_EQ(Gpt::Footprint(config, 24).value().activations_bytes,
                   2 * Gpt::Footprint(config, 12).value().activations_bytes);
}

TEST(GptFootprintTest, SizesShapesNoMachineHoldsWithoutAllocating) {
  // nanoGPT-sized vocab, 1000 layers of 8192 channels: about 805 G parameters.
  const GptFootprint big = Gpt::Footprint({65, 64, 1000, 64, 8192}, 12).value();
  EXPECT_NEAR(big.params_bytes / 4, 1000.0 * (12.0 * 8192 * 8192 + 13 * 8192), 1e9);
  // Rows past 2^31 and parameter counts past 2^64 are sized or refused, not wrapped.
  EXPECT_GT(Gpt::Footprint({65, 64, 4, 4, 128}, 2147483647).value().activations_bytes, 1e15);
  absl::StatusOr<GptFootprint> huge = Gpt::Footprint({65, 64, 2147483647, 2, 2147483646}, 1);
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("overflows"), std::string::npos) << huge.status();
}

TEST(GptCreateTest, RefusesRowsTheKernelsCannotIndex) {
  std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, 1).value();
  absl::StatusOr<std::unique_ptr<Gpt>> gpt = Gpt::Create({65, 64, 1, 1, 8}, 2147483647, k.get());
  ASSERT_FALSE(gpt.ok());
  EXPECT_NE(gpt.status().message().find("block_size 64"), std::string::npos) << gpt.status();
}

// The CPU kernels resize their thread team between steps under load
// (Kernels::FitThreadsToLoad), which is only sound if no result depends on
// the team size: gradients and the global-norm sum of squares must match
// bitwise whatever the team.
TEST(GptTeamSizeTest, GradientsAndNormDoNotDependOnTheThreadCount) {
  const GptConfig config{/*vocab_size=*/65, /*block_size=*/32, /*n_layer=*/2, /*n_head=*/4,
                         /*n_embd=*/64};
  constexpr int kB = 4, kT = 32;
  std::vector<int32_t> tokens, targets;
  for (int i = 0; i < kB * kT; ++i) {
    tokens.push_back((i * 7 + 3) % config.vocab_size);
    targets.push_back((i * 5 + 1) % config.vocab_size);
  }
  DropoutPlan plan;
  plan.seed = 5;
  plan.rates = {0.1f, 0.1f, 0.1f, 0.1f};
  struct Result {
    float loss;
    std::vector<float> grads;
    double sum_squares;
  };
  auto run = [&](int threads) {
    std::unique_ptr<Kernels> k = MakeKernels(Device::kCpu, threads).value();
    std::unique_ptr<Gpt> gpt = Gpt::Create(config, kB, k.get()).value();
    gpt->InitWeights(7);
    gpt->ZeroGrad();
    Result r;
    r.loss = gpt->Forward(tokens.data(), targets.data(), kB, kT, &plan);
    gpt->Backward(1.0f);
    r.grads.resize(gpt->num_params());
    k->CopyToHost(r.grads.data(), gpt->grads(), r.grads.size() * sizeof(float));
    r.sum_squares = k->SumSquares(gpt->grads(), gpt->num_params());
    return r;
  };
  const Result one = run(1);
  ASSERT_GT(one.grads.size(), 3u * (1u << 14)) << "SumSquares must span several blocks";
  for (int threads : {2, 3, 7}) {
    const Result many = run(threads);
    EXPECT_EQ(many.loss, one.loss) << threads << " threads";
    EXPECT_EQ(many.sum_squares, one.sum_squares) << threads << " threads";
    EXPECT_TRUE(many.grads == one.grads) << threads << " threads";
  }
}

// Kernels may keep another amount per layer for attention's backward
// (Kernels::AttentionSavedFloats; CUDA's flash kernels keep less). Each layer
// then finds in backward what forward left it, packed at the call's own
// batch and length, and the results are the plain kernels' bit for bit.
TEST(GptLayoutTest, EachLayerFindsWhatItsKernelsSavedAtAnyBatchAndLength) {
  const GptConfig config{/*vocab_size=*/11, /*block_size=*/8, /*n_layer=*/3, /*n_head=*/2,
                         /*n_embd=*/8};
  const int max_batch = 3, B = 2, T = 5, pad = 37;
  std::unique_ptr<Kernels> plain = MakeKernels(Device::kCpu, 1).value();
  test_util::FailingKernels padded(MakeKernels(Device::kCpu, 1).value(), "no op fails", 1);
  padded.PadAttentionSaved(pad);
  std::unique_ptr<Gpt> a = Gpt::Create(config, max_batch, plain.get()).value();
  std::unique_ptr<Gpt> b = Gpt::Create(config, max_batch, &padded).value();
  a->InitWeights(5);
  b->InitWeights(5);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    tokens[i] = (i * 7 + 3) % config.vocab_size;
    targets[i] = (i * 5 + 1) % config.vocab_size;
  }
  DropoutPlan plan;
  plan.seed = 3;
  plan.rates = {0.1f, 0.2f, 0.15f, 0.25f};
  const float la = a->Forward(tokens.data(), targets.data(), B, T, &plan);
  const float lb = b->Forward(tokens.data(), targets.data(), B, T, &plan);
  EXPECT_EQ(la, lb);
  a->Backward(1.0f);
  b->Backward(1.0f);
  std::vector<float> ga(a->num_params()), gb(b->num_params());
  plain->CopyToHost(ga.data(), a->grads(), ga.size() * sizeof(float));
  padded.CopyToHost(gb.data(), b->grads(), gb.size() * sizeof(float));
  EXPECT_EQ(ga, gb);
  const std::vector<const float*>& fwd = padded.forward_probs();
  std::vector<const float*> bwd = padded.backward_probs();
  ASSERT_EQ(fwd.size(), 3u);
  const size_t stride =
      plain->AttentionSavedFloats(B, T, config.n_embd, config.n_head) + static_cast<size_t>(pad);
  for (size_t l = 0; l < fwd.size(); ++l) {
    EXPECT_EQ(static_cast<size_t>(fwd[l] - fwd[0]), l * stride) << "layer " << l;
  }
  std::reverse(bwd.begin(), bwd.end());  // backward runs the layers last to first
  EXPECT_EQ(bwd, fwd);
}

}  // namespace
}  // namespace dropk
