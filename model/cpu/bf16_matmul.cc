#include "cpu/bf16_matmul.h"

#include <omp.h>

#include <cstring>
#include <map>
#include <tuple>
#include <unordered_map>

#include "absl/strings/str_cat.h"

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

}  // namespace

absl::StatusOr<std::unique_ptr<Bf16Matmul>> Bf16Matmul::Create() {
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
    return absl::FailedPreconditionError(absl::StrCat(
        "precision bf16 on the cpu: oneDNN cannot make a bf16 matmul here: ", e.what()));
  }
#else
  return absl::FailedPreconditionError(
      "precision bf16 on the cpu needs oneDNN, and this build of dropk has none (install "
      "Debian's libdnnl-dev and build again); use precision fp32");
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
