#include "cpu/bf16_matmul.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpu/tiled_sgemm.h"
#include "model/kernels.h"

#ifdef DROPK_HAS_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace dropk {
namespace {

#ifdef DROPK_HAS_DNNL

class DnnlBf16Matmul final : public Bf16Matmul {
 public:
  DnnlBf16Matmul() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  void Multiply(float* c, const uint16_t* a, LeftOperand a_layout, const uint16_t* b,
                RightOperand b_layout, const float* bias, int M, int N, int K,
                bool accumulate) override {
    Entry& entry = Primitive(M, N, K, a_layout, b_layout, bias != nullptr, accumulate);
    dnnl::memory a_mem(entry.a, engine_, const_cast<uint16_t*>(a));
    dnnl::memory b_mem(entry.b, engine_, const_cast<uint16_t*>(b));
    dnnl::memory c_mem(entry.c, engine_, c);
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}};
    if (bias != nullptr) {
      args.emplace(DNNL_ARG_BIAS, dnnl::memory(entry.bias, engine_, const_cast<float*>(bias)));
    }
    entry.primitive.execute(stream_, args);
    stream_.wait();
    implementation_ = entry.implementation;
  }

  std::string Implementation() const override { return implementation_; }
  std::string Description() const override { return "bf16 projections through oneDNN"; }

 private:
  struct Entry {
    dnnl::memory::desc a, b, c, bias;
    dnnl::matmul primitive;
    std::string implementation;
  };
  using Key = std::tuple<int, int, int, LeftOperand, RightOperand, bool, bool, int>;

  // The cached primitive of one shape, built on first use. The team size is
  // part of the key: oneDNN partitions the work for the team it was built for.
  Entry& Primitive(int M, int N, int K, LeftOperand a_layout, RightOperand b_layout, bool has_bias,
                   bool accumulate) {
    const Key key{M, N, K, a_layout, b_layout, has_bias, accumulate, omp_get_max_threads()};
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    Entry entry;
    // A transposed operand is the plain one read through strides (tag ba).
    entry.a =
        dnnl::memory::desc({M, K}, dt::bf16, a_layout == LeftOperand::kMByK ? tag::ab : tag::ba);
    entry.b =
        dnnl::memory::desc({K, N}, dt::bf16, b_layout == RightOperand::kKByN ? tag::ab : tag::ba);
    entry.c = dnnl::memory::desc({M, N}, dt::f32, tag::ab);
    entry.bias = dnnl::memory::desc({1, N}, dt::f32, tag::ab);
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::desc desc = has_bias
                                        ? dnnl::matmul::desc(entry.a, entry.b, entry.bias, entry.c)
                                        : dnnl::matmul::desc(entry.a, entry.b, entry.c);
    const dnnl::matmul::primitive_desc pd(desc, attr, engine_);
    entry.implementation = pd.impl_info_str();
    entry.primitive = dnnl::matmul(pd);
    return cache_.emplace(key, std::move(entry)).first->second;
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<Key, Entry> cache_;
  std::string implementation_ = "none yet";
};

#endif  // DROPK_HAS_DNNL

class WidenedBf16Matmul final : public Bf16Matmul {
 public:
  explicit WidenedBf16Matmul(std::string why) : why_(std::move(why)) {}

  void Multiply(float* c, const uint16_t* a, LeftOperand a_layout, const uint16_t* b,
                RightOperand b_layout, const float* bias, int M, int N, int K,
                bool accumulate) override {
    const bool transpose_a = a_layout == LeftOperand::kKByM;
    const bool transpose_b = b_layout == RightOperand::kNByK;
    // b is a weight or the layer's input; a may be the LM head's logit
    // gradient (tokens x vocabulary), so it is widened a block of rows at a
    // time. The blocks are fixed by the shape: the same bits at any team size.
    const float* b32 = Widened(b_, b, static_cast<size_t>(K) * N, 1, 0);
    float beta = accumulate ? 1.0f : 0.0f;
    if (bias != nullptr) {
      // Each output row starts from the bias; sgemm adds the product.
#pragma omp parallel for schedule(static)
      for (int m = 0; m < M; ++m)
        std::memcpy(c + static_cast<size_t>(m) * N, bias, N * sizeof(float));
      beta = 1.0f;
    }
    const int block = WidenedRowsPerBlock(M, K);
    for (int m0 = 0; m0 < M; m0 += block) {
      const int rows = std::min(block, M - m0);
      // Rows m0.. of a (M,K), or columns m0.. of a stored (K,M).
      const float* a32 = transpose_a ? Widened(a_, a + m0, rows, K, M)
                                     : Widened(a_, a + static_cast<size_t>(m0) * K,
                                               static_cast<size_t>(rows) * K, 1, 0);
      FixedTileSgemm(transpose_a, transpose_b, rows, N, K, a32, transpose_a ? rows : K, b32,
                     transpose_b ? K : N, beta, c + static_cast<size_t>(m0) * N, N);
    }
  }

  std::string Implementation() const override { return "widened to fp32"; }
  std::string Description() const override {
    return absl::StrCat("bf16 projections widened to fp32 for OpenBLAS (", why_, ")");
  }

 private:
  // `lines` runs of `width` bf16 values, `stride` apart in `bits`, as
  // floats (exact) packed in `buffer`.
  static const float* Widened(std::vector<float>& buffer, const uint16_t* bits, size_t width,
                              size_t lines, size_t stride) {
    if (buffer.size() < width * lines) buffer.resize(width * lines);
    float* out = buffer.data();
    // Collapsed, so that one long run (lines == 1) is shared out too.
#pragma omp parallel for collapse(2) schedule(static)
    for (size_t line = 0; line < lines; ++line) {
      for (size_t i = 0; i < width; ++i) {
        out[line * width + i] = Bf16BitsToFloat(bits[line * stride + i]);
      }
    }
    return out;
  }

  std::string why_;
  std::vector<float> a_, b_;
};

}  // namespace

double CpuWidenedBf16ScratchBytes(double rows, double wide, double width) {
  // b: a (wide, width) weight or the (rows, width) input; a: a block of
  // WidenedRowsPerBlock rows over K, K being wide, rows or width.
  const double longest = std::max({rows, wide, width});
  const double right = std::max(wide, rows) * width;
  const double left = std::max(static_cast<double>(kWidenedBlockFloats), kWidenedMinRows * longest);
  return sizeof(float) * (right + left);
}

int WidenedRowsPerBlock(int M, int K) {
  const int64_t rows = std::max<int64_t>(kWidenedMinRows, kWidenedBlockFloats / std::max(K, 1));
  return static_cast<int>(std::min<int64_t>(rows, std::max(M, 1)));
}

std::unique_ptr<Bf16Matmul> MakeWidenedBf16Matmul(std::string why) {
  return std::make_unique<WidenedBf16Matmul>(std::move(why));
}

absl::StatusOr<std::unique_ptr<Bf16Matmul>> Bf16Matmul::Create() {
  // To compare the two paths, or test the widened one, on a CPU oneDNN serves.
  if (const char* asked = std::getenv("DROPK_CPU_BF16");
      asked != nullptr && std::string(asked) == "widened") {
    return MakeWidenedBf16Matmul("DROPK_CPU_BF16=widened");
  }
#ifdef DROPK_HAS_DNNL
  try {
    auto matmul = std::make_unique<DnnlBf16Matmul>();
    // One tiny product proves that this machine can run a bf16 matmul.
    const uint16_t one = ToBf16Bits(1.0f);
    float c = 0;
    matmul->Multiply(&c, &one, LeftOperand::kMByK, &one, RightOperand::kKByN, nullptr, 1, 1, 1,
                     false);
    if (c != 1.0f) return absl::InternalError("oneDNN's bf16 matmul computed 1 x 1 wrongly");
    return std::unique_ptr<Bf16Matmul>(std::move(matmul));
  } catch (const dnnl::error& e) {
    // Debian's oneDNN 2.7 makes bf16 matmuls on AVX-512 CPUs only.
    return MakeWidenedBf16Matmul(
        absl::StrCat("oneDNN has no bf16 matmul for this CPU: ", e.what()));
  }
#else
  return MakeWidenedBf16Matmul("this build has no oneDNN");
#endif
}

namespace {

// ToBf16Bits on a vector's worth of lanes, written with GCC's vector
// extensions: the compiler left the scalar loop unvectorised (15 GB/s on a
// Zen 4, against 80-100 for this with AVX-512; a precision bf16 step
// converts its matmul operands, ~60 ms of a 460 ms small-config step
// before). The same bits as ToBf16Bits for every input, NaNs and
// subnormals included (AVX512-BF16's own instruction flushes subnormals).
#if defined(__AVX512F__)
constexpr int kConvertLanes = 16;
#else
constexpr int kConvertLanes = 8;
#endif
typedef uint32_t WordLanes __attribute__((vector_size(4 * kConvertLanes)));
typedef uint16_t HalfLanes __attribute__((vector_size(2 * kConvertLanes)));

inline void ConvertLanesToBf16(uint16_t* dst, const float* src) {
  WordLanes u;
  std::memcpy(&u, src, sizeof u);
  const WordLanes rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const WordLanes quiet_nan = (u >> 16) | 0x0040u;
  const WordLanes bits = (u & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded;
  const HalfLanes halves = __builtin_convertvector(bits, HalfLanes);
  std::memcpy(dst, &halves, sizeof halves);
}

}  // namespace

void ConvertToBf16(uint16_t* dst, const float* src, size_t n) {
  const size_t whole = n / kConvertLanes;
#pragma omp parallel for schedule(static)
  for (size_t v = 0; v < whole; ++v) {
    ConvertLanesToBf16(dst + v * kConvertLanes, src + v * kConvertLanes);
  }
  for (size_t i = whole * kConvertLanes; i < n; ++i) dst[i] = ToBf16Bits(src[i]);
}

}  // namespace dropk
