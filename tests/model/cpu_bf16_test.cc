// The CPU's precision bf16 (oneDNN matmuls with bf16 inputs, fp32
// accumulation): the rounding of the inputs, each projection against the
// fp32 kernels within bf16's rounding, a few GPT training steps tracking
// fp32's losses, and runs reproducible bit for bit at one thread count.
// Where oneDNN has no bf16 matmul for the CPU (an AVX2 one) or the build has
// no oneDNN, these run the widened path (fp32 products of the bf16-rounded
// inputs); ctest runs them again with DROPK_CPU_BF16=widened, so both paths
// are tested on a CPU oneDNN serves.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "model/gpt.h"
#include "model/kernels.h"

namespace dropk {
namespace {

using Vec = std::vector<float>;

Vec Random(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Vec v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// Kernels with precision bf16 on `threads` threads; every CPU has them.
std::unique_ptr<Kernels> Bf16Kernels(int threads) {
  KernelOptions options;
  options.num_threads = threads;
  options.precision = MatmulPrecision::kBf16;
  absl::StatusOr<std::unique_ptr<Kernels>> k = MakeKernels(Device::kCpu, options);
  EXPECT_TRUE(k.ok()) << k.status();
  return k.ok() ? *std::move(k) : nullptr;
}

#define ASSERT_BF16(k) ASSERT_NE((k), nullptr)

// Largest |a - b| relative to the largest |b|.
double MaxRelativeDifference(const Vec& a, const Vec& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

struct ProjectionResult {
  Vec out, dinp, dw, dbias;
};

// One projection's forward and backward through k on fixed random inputs
// (seeded by the shape), dinp accumulated onto 0.5 and dw onto 0.25.
ProjectionResult RunProjection(Kernels& k, int N, int C, int OC) {
  const Vec inp = Random(N * C, 1 + C), w = Random(OC * C, 2 + OC), bias = Random(OC, 3),
            dout = Random(N * OC, 4 + N);
  ProjectionResult r{Vec(N * OC), Vec(N * C, 0.5f), Vec(OC * C, 0.25f), Vec(OC, 0.125f)};
  k.MatmulForward(r.out.data(), inp.data(), w.data(), bias.data(), N, C, OC);
  k.MatmulBackward(r.dinp.data(), r.dw.data(), r.dbias.data(), dout.data(), inp.data(), w.data(), N,
                   C, OC, /*accumulate_dinp=*/true);
  return r;
}

TEST(CpuBf16Test, ProjectionsMatchFp32WithinBf16Rounding) {
  std::unique_ptr<Kernels> bf16 = Bf16Kernels(2);
  ASSERT_BF16(bf16);
  EXPECT_NE(bf16->Describe().find("bf16"), std::string::npos) << bf16->Describe();
  if (const char* asked = std::getenv("DROPK_CPU_BF16"); asked && std::string(asked) == "widened") {
    EXPECT_NE(bf16->Describe().find("bf16 projections widened to fp32 for OpenBLAS "
                                    "(DROPK_CPU_BF16=widened)"),
              std::string::npos)
        << bf16->Describe();
  }
  std::unique_ptr<Kernels> fp32 = MakeKernels(Device::kCpu, 2).value();
  // Not multiples of any vector width, odd ones, a long K (C = 1,100), and a
  // tiny product.
  for (const auto& [N, C, OC] : {std::tuple{70, 48, 96}, std::tuple{70, 1100, 96},
                                 std::tuple{33, 47, 65}, std::tuple{3, 2, 4}}) {
    SCOPED_TRACE(testing::Message() << "N " << N << " C " << C << " OC " << OC);
    const ProjectionResult want = RunProjection(*fp32, N, C, OC);
    const ProjectionResult got = RunProjection(*bf16, N, C, OC);
    // bf16 keeps 8 significant bits: each input is off by at most 2^-9
    // relative, so a dot product of C or N terms is off by about 2^-8 of the
    // largest term sums; 2e-2 of the largest output leaves a margin and is
    // far below what a wrong layout (a transposed operand) gives.
    EXPECT_LT(MaxRelativeDifference(got.out, want.out), 2e-2);
    EXPECT_LT(MaxRelativeDifference(got.dinp, want.dinp), 2e-2);
    EXPECT_LT(MaxRelativeDifference(got.dw, want.dw), 2e-2);
    // The bias gradient is a sum in fp32 in both modes.
    EXPECT_EQ(got.dbias, want.dbias);
    // Not simply fp32: the rounding to bf16 shows.
    EXPECT_NE(got.out, want.out);
  }
}

// Inputs are rounded to the nearest bf16, ties to even, NaN and infinities
// kept: seen through out = inp · w^T with w = (1, 0), which is the rounded
// first column of inp exactly. 1,007 rows make 2,014 values, so rows
// 1,004-1,006 fall in the conversion's scalar tail (whether it runs 16 or 8
// lanes) and the rest in its vector body; every case goes in the body, the
// NaNs in the tail too.
// The NaNs are ones that plain rounding would turn into an infinity
// (0x7F800001) or into zero (0xFFFFFFFF), beside a quiet one. (Subnormals
// cannot be seen this way: AVX512-BF16's dot product flushes them.)
TEST(CpuBf16Test, InputsRoundToNearestEvenKeepingNaNAndInfinities) {
  std::unique_ptr<Kernels> k = Bf16Kernels(2);
  ASSERT_BF16(k);
  constexpr int N = 1007;
  const auto from_bits = [](uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    float in, want;  // want NaN: any NaN
  };
  const std::vector<Case> cases = {
      {1.0f + std::ldexp(1.0f, -8), 1.0f},  // halfway: down to the even 1
      {1.0f + 3 * std::ldexp(1.0f, -8), 1.0f + std::ldexp(1.0f, -6)},  // halfway: up to even
      {from_bits(0x7F800001u), nan},
      {from_bits(0xFFFFFFFFu), nan},
      {nan, nan},
      {1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20), 1.0f + std::ldexp(1.0f, -7)},
      {-2.5f, -2.5f},
      {inf, inf},
      {std::numeric_limits<float>::max(), inf},
  };
  Vec inp(2 * N, 0.0f);
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  for (int n = 0; n < N; ++n) inp[2 * n] = dist(gen);
  // Case i goes to body row i; the three NaN cases also to the tail rows.
  const std::vector<int> body_rows = {3, 17, 42, 100, 500, 700, 850, 998, 999};
  const std::vector<int> tail_rows = {1004, 1005, 1006};
  std::vector<int> case_of_row(N, -1);
  for (size_t i = 0; i < cases.size(); ++i) {
    case_of_row[body_rows[i]] = static_cast<int>(i);
    if (i < tail_rows.size()) case_of_row[tail_rows[i]] = static_cast<int>(i + 2);  // the NaNs
  }
  for (int n = 0; n < N; ++n) {
    if (case_of_row[n] >= 0) inp[2 * n] = cases[case_of_row[n]].in;
  }
  const Vec w = {1.0f, 0.0f};
  Vec out(N);
  k->MatmulForward(out.data(), inp.data(), w.data(), nullptr, N, 2, 1);
  for (int n = 0; n < N; ++n) {
    const float x = inp[2 * n];
    if (case_of_row[n] >= 0) {
      const float want = cases[case_of_row[n]].want;
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(out[n])) << "row " << n << " gave " << out[n];
      } else {
        EXPECT_EQ(out[n], want) << "row " << n << " in " << x;
      }
      continue;
    }
    // Others: within half a bf16 place (at most 2^-8 relative), and a bf16 value.
    EXPECT_LE(std::abs(out[n] - x), std::abs(x) * std::ldexp(1.0f, -8)) << "row " << n;
    uint32_t bits;
    std::memcpy(&bits, &out[n], sizeof bits);
    EXPECT_EQ(bits & 0xFFFFu, 0u) << "row " << n;
  }
}

// How TrainSteps drives the kernels.
struct TrainOptions {
  int micro_batches = 1;  // gradient accumulation steps per optimizer step
  // Announce a write to the parameters before every Forward and Backward, so
  // that no bf16 copy of a weight is ever reused: the reference of a run with
  // the weight cache.
  bool forget_weight_copies = false;
};

// Trains a few steps at fp32 and at bf16 from the same weights on the same
// batch and returns the losses; `k` decides the precision.
std::vector<float> TrainSteps(Kernels* k, int steps, Vec* final_params,
                              const TrainOptions& options = {}) {
  const GptConfig config{/*vocab_size=*/65, /*block_size=*/32, /*n_layer=*/2, /*n_head=*/4,
                         /*n_embd=*/64};
  constexpr int kB = 4, kT = 32;
  std::vector<int32_t> tokens, targets;
  for (int i = 0; i < kB * kT; ++i) {
    tokens.push_back((i * 7 + 3) % config.vocab_size);
    targets.push_back((i * 5 + 1) % config.vocab_size);
  }
  std::unique_ptr<Gpt> gpt = Gpt::Create(config, kB, k).value();
  gpt->InitWeights(11);
  DeviceBuffer<float> m(k, gpt->num_params()), v(k, gpt->num_params());
  std::vector<float> losses;
  DropoutPlan plan;
  plan.seed = 3;
  plan.rates = {0.1f, 0.1f, 0.1f, 0.1f};
  for (int s = 0; s < steps; ++s) {
    const auto forget = [&] {
      if (options.forget_weight_copies) {
        k->NoteExternalWrite(gpt->params(), gpt->num_params() * sizeof(float));
      }
    };
    gpt->ZeroGrad();
    float loss = 0;
    for (int micro = 0; micro < options.micro_batches; ++micro) {
      plan.step = static_cast<uint32_t>(s * options.micro_batches + micro);
      forget();
      loss += gpt->Forward(tokens.data(), targets.data(), kB, kT, &plan);
      forget();
      gpt->Backward(1.0f / options.micro_batches);
    }
    losses.push_back(loss / options.micro_batches);
    AdamWArgs args;
    args.lr = 3e-3f;
    args.bias_correction1 = 1.0f - std::pow(0.9f, s + 1);
    args.bias_correction2 = 1.0f - std::pow(0.999f, s + 1);
    k->AdamW(gpt->params(), gpt->grads(), m.data(), v.data(), gpt->num_params(), args);
  }
  final_params->resize(gpt->num_params());
  k->CopyToHost(final_params->data(), gpt->params(), final_params->size() * sizeof(float));
  return losses;
}

TEST(CpuBf16Test, TrainingTracksFp32AndIsReproducible) {
  std::unique_ptr<Kernels> bf16 = Bf16Kernels(2);
  ASSERT_BF16(bf16);
  std::unique_ptr<Kernels> fp32 = MakeKernels(Device::kCpu, 2).value();
  constexpr int kSteps = 20;
  Vec fp32_params, bf16_params, again_params;
  const std::vector<float> want = TrainSteps(fp32.get(), kSteps, &fp32_params);
  const std::vector<float> got = TrainSteps(bf16.get(), kSteps, &bf16_params);
  ASSERT_LT(want.back(), want.front() - 0.5f) << "the fp32 run must learn for this to mean much";
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(got[s], want[s], 0.02f + 0.01f * want[s]) << "step " << s;
  }
  // Same precision, same thread count: the same bits.
  std::unique_ptr<Kernels> bf16_again = Bf16Kernels(2);
  const std::vector<float> again = TrainSteps(bf16_again.get(), kSteps, &again_params);
  EXPECT_EQ(again, got);
  EXPECT_EQ(again_params, bf16_params);
}

// The bf16 copies of the weights are made once and reused (forward,
// backward, every micro-batch) until the weights change. A copy that
// outlived an AdamW update would train on stale weights and part from a run
// that converts afresh on every use.
TEST(CpuBf16Test, ReusedWeightCopiesTrainAsFreshConversions) {
  std::unique_ptr<Kernels> cached = Bf16Kernels(2);
  ASSERT_BF16(cached);
  std::unique_ptr<Kernels> fresh = Bf16Kernels(2);
  constexpr int kSteps = 3;
  const TrainOptions reuse{/*micro_batches=*/2, /*forget_weight_copies=*/false};
  const TrainOptions forget{/*micro_batches=*/2, /*forget_weight_copies=*/true};
  Vec cached_params, fresh_params;
  const std::vector<float> got = TrainSteps(cached.get(), kSteps, &cached_params, reuse);
  const std::vector<float> want = TrainSteps(fresh.get(), kSteps, &fresh_params, forget);
  EXPECT_EQ(got, want);
  EXPECT_EQ(cached_params, fresh_params);
  // And the steps did change the weights, so reuse was put to the test.
  EXPECT_NE(got.front(), got.back());
}

// Every way the kernels write memory drops the bf16 copy of a weight that
// it overwrites: the next product uses the new values, as a kernels object
// that never saw the old ones computes them.
TEST(CpuBf16Test, EveryWriteToAWeightDropsItsBf16Copy) {
  constexpr int N = 9, C = 32, OC = 16;
  const Vec inp = Random(N * C, 5), w0 = Random(OC * C, 6), w1 = Random(OC * C, 7);
  // out = inp · w^T through `k`, twice: the first fills k's copy of w.
  const auto product = [&](Kernels& k, const float* w) {
    Vec out(N * OC);
    k.MatmulForward(out.data(), inp.data(), w, nullptr, N, C, OC);
    return out;
  };
  const auto want = [&](const Vec& w) {
    std::unique_ptr<Kernels> k = Bf16Kernels(1);
    return product(*k, w.data());
  };
  struct Write {
    const char* name;
    // Changes w on the device; may use scratch (3 * OC * C floats), which
    // is allocated before, since a Free drops every copy.
    std::function<void(Kernels&, float* w, float* scratch)> apply;
    std::function<void(Vec&)> on_host;  // the same change to a host copy
  };
  const std::vector<Write> writes = {
      {"CopyToDevice",
       [&](Kernels& k, float* w, float*) {
         k.CopyToDevice(w, w1.data(), w1.size() * sizeof(float));
       },
       [&](Vec& w) { w = w1; }},
      {"CopyToDevice of a part",
       [&](Kernels& k, float* w, float*) { k.CopyToDevice(w + 100, w1.data(), 7 * sizeof(float)); },
       [&](Vec& w) { std::copy(w1.begin(), w1.begin() + 7, w.begin() + 100); }},
      {"Zero", [&](Kernels& k, float* w, float*) { k.Zero(w + C, C * sizeof(float)); },
       [&](Vec& w) { std::fill(w.begin() + C, w.begin() + 2 * C, 0.0f); }},
      {"Scale", [&](Kernels& k, float* w, float*) { k.Scale(w, 0.5f, OC * C); },
       [&](Vec& w) {
         for (float& x : w) x *= 0.5f;
       }},
      {"AdamW",
       [&](Kernels& k, float* w, float* scratch) {
         float *g = scratch, *m = scratch + OC * C, *v = scratch + 2 * OC * C;
         k.CopyToDevice(g, w1.data(), w1.size() * sizeof(float));
         AdamWArgs args;
         args.lr = 0.1f;
         k.AdamW(w, g, m, v, OC * C, args);
       },
       nullptr},
      // The optimizer's path: two ranges covering w, with a gap of one
      // weight between them (which keeps its value).
      {"AdamWRanges",
       [&](Kernels& k, float* w, float* scratch) {
         float *g = scratch, *m = scratch + OC * C, *v = scratch + 2 * OC * C;
         k.CopyToDevice(g, w1.data(), w1.size() * sizeof(float));
         AdamWArgs args;
         args.lr = 0.1f;
         const std::vector<AdamWRange> ranges = {{0, 40, 0.1f}, {41, size_t{OC} * C, 0.0f}};
         k.AdamWRanges(w, g, m, v, ranges, args);
       },
       nullptr},
      {"NoteExternalWrite",
       [&](Kernels& k, float* w, float*) {
         std::copy(w1.begin(), w1.end(), w);  // as a collective would
         k.NoteExternalWrite(w + 5, sizeof(float));
       },
       [&](Vec& w) { w = w1; }},
  };
  for (const Write& write : writes) {
    SCOPED_TRACE(write.name);
    std::unique_ptr<Kernels> k = Bf16Kernels(1);
    ASSERT_BF16(k);
    DeviceBuffer<float> w(k.get(), OC * C), scratch(k.get(), 3 * OC * C);
    k->CopyToDevice(w.data(), w0.data(), w0.size() * sizeof(float));
    const Vec before = product(*k, w.data());
    ASSERT_EQ(product(*k, w.data()), before);
    write.apply(*k, w.data(), scratch.data());
    Vec host(OC * C);
    k->CopyToHost(host.data(), w.data(), host.size() * sizeof(float));
    if (write.on_host != nullptr) {
      Vec expected = w0;
      write.on_host(expected);
      ASSERT_EQ(host, expected) << "the write itself";
    }
    const Vec after = product(*k, w.data());
    EXPECT_NE(after, before);
    EXPECT_EQ(after, want(host));
  }
}

// A write next to a weight, not on it (the gradients, an activation),
// leaves its copy in use. Seen through a write the kernels are not told of:
// while the copy is kept the product still uses the old weight.
TEST(CpuBf16Test, WritesBesideAWeightKeepItsCopy) {
  std::unique_ptr<Kernels> k = Bf16Kernels(1);
  ASSERT_BF16(k);
  constexpr int N = 5, C = 16, OC = 8;
  const Vec inp = Random(N * C, 8), w0 = Random(OC * C, 9), w1 = Random(OC * C, 10);
  DeviceBuffer<float> buffer(k.get(), 3 * OC * C);  // [before | w | after]
  float* w = buffer.data() + OC * C;
  k->CopyToDevice(w, w0.data(), w0.size() * sizeof(float));
  Vec first(N * OC), second(N * OC), third(N * OC);
  k->MatmulForward(first.data(), inp.data(), w, nullptr, N, C, OC);
  std::copy(w1.begin(), w1.end(), w);  // unannounced
  k->Zero(buffer.data(), OC * C * sizeof(float));
  k->Scale(w + OC * C, 2.0f, OC * C);
  k->NoteExternalWrite(w - 1, sizeof(float));
  k->MatmulForward(second.data(), inp.data(), w, nullptr, N, C, OC);
  EXPECT_EQ(second, first);
  k->NoteExternalWrite(w + OC * C - 1, sizeof(float));  // its last element
  k->MatmulForward(third.data(), inp.data(), w, nullptr, N, C, OC);
  EXPECT_NE(third, first);
}

TEST(CpuBf16Test, Tf32IsRefusedOnTheCpuWithOneLine) {
  const absl::StatusOr<std::unique_ptr<Kernels>> k =
      MakeKernels(Device::kCpu, {1, MatmulPrecision::kTf32, 0});
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.status().message().find("tf32 needs the cuda device"), std::string::npos)
      << k.status();
}

}  // namespace
}  // namespace dropk
