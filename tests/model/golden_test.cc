// The CPU GPT against an independent PyTorch reference: same weights and
// tokens, loss, logits and every parameter gradient within 1e-4 relative.
// The fixture is made by tools/make_golden_fixture.py (tests/data/README.md).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "model/gpt.h"
#include "model/kernels.h"

namespace dropk {
namespace {

struct Golden {
  GptConfig config;
  int B = 0, T = 0;
  std::vector<float> params, logits, grads;
  std::vector<int32_t> inputs, targets;
  float loss = 0;
};

Golden ReadGolden(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  char magic[8];
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic, 8), "DKGOLD01");
  int32_t h[7];
  in.read(reinterpret_cast<char*>(h), sizeof(h));
  Golden g;
  g.config = {h[0], h[1], h[2], h[3], h[4]};
  g.B = h[5];
  g.T = h[6];
  const size_t P = ParamLayout(g.config).num_params(), BT = g.B * g.T;
  auto read = [&in](auto& v, size_t n) {
    v.resize(n);
    in.read(reinterpret_cast<char*>(v.data()), n * sizeof(v[0]));
  };
  read(g.params, P);
  read(g.inputs, BT);
  read(g.targets, BT);
  in.read(reinterpret_cast<char*>(&g.loss), sizeof(float));
  read(g.logits, BT * g.config.vocab_size);
  read(g.grads, P);
  EXPECT_TRUE(in) << path << " is shorter than its header says";
  EXPECT_EQ(in.peek(), std::char_traits<char>::eof()) << path << " has trailing bytes";
  return g;
}

// Relative 1e-4, with an absolute floor of 1e-6 for entries that are ~0 in
// the reference (e.g. the unused last wpe row).
void ExpectClose(const std::vector<float>& actual, const std::vector<float>& expected,
                 const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size());
  int bad = 0;
  for (size_t i = 0; i < actual.size() && bad < 10; ++i) {
    const double tol = 1e-4 * std::max(std::abs(actual[i]), std::abs(expected[i])) + 1e-6;
    if (std::abs(actual[i] - expected[i]) > tol) {
      ADD_FAILURE() << what << "[" << i << "]: " << actual[i] << " vs reference " << expected[i];
      ++bad;
    }
  }
}

// Loss, logits and every gradient of the fixture's model on `kernels`.
void ExpectMatchesGolden(Kernels* kernels) {
  const Golden g = ReadGolden(DROPK_SOURCE_DIR "/tests/data/gpt_golden.bin");
  std::unique_ptr<Gpt> gpt = Gpt::Create(g.config, g.B, kernels).value();
  ASSERT_EQ(gpt->num_params(), g.params.size());
  kernels->CopyToDevice(gpt->params(), g.params.data(), g.params.size() * sizeof(float));

  const float loss = gpt->Forward(g.inputs.data(), g.targets.data(), g.B, g.T, nullptr);
  EXPECT_NEAR(loss, g.loss, 1e-4 * g.loss);

  std::vector<float> logits(g.logits.size());
  const int V = g.config.vocab_size;
  for (int b = 0; b < g.B; ++b) {
    for (int t = 0; t < g.T; ++t) gpt->LogitsToHost(b, t, logits.data() + (b * g.T + t) * V);
  }
  ExpectClose(logits, g.logits, "logits");

  gpt->ZeroGrad();
  gpt->Backward(1.0f);
  std::vector<float> grads(gpt->num_params());
  kernels->CopyToHost(grads.data(), gpt->grads(), grads.size() * sizeof(float));
  for (const ParamTensor& t : gpt->layout().tensors()) {
    ExpectClose(
        std::vector<float>(grads.begin() + t.offset, grads.begin() + t.offset + t.numel),
        std::vector<float>(g.grads.begin() + t.offset, g.grads.begin() + t.offset + t.numel),
        "grad " + t.name);
  }
}

TEST(GoldenTest, LossLogitsAndGradientsMatchPyTorch) {
  std::unique_ptr<Kernels> kernels = MakeKernels(Device::kCpu, 2).value();
  ExpectMatchesGolden(kernels.get());
}

// The same fixture through the CUDA kernels (fp32 matmuls).
TEST(GoldenTest, LossLogitsAndGradientsMatchPyTorchOnTheGpu) {
  absl::StatusOr<std::unique_ptr<Kernels>> kernels = MakeKernels(Device::kCuda, KernelOptions{});
  if (!kernels.ok()) GTEST_SKIP() << "needs a GPU: " << kernels.status().message();
  ExpectMatchesGolden(kernels->get());
}

}  // namespace
}  // namespace dropk
