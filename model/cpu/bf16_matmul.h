// Matrix products with bf16 inputs, fp32 accumulation and fp32 output on the
// CPU. Through oneDNN's matmul primitive (Debian's libdnnl-dev) where it has
// one for this CPU: AMX tiles on Intel Xeons that have them, AVX512-BF16 dot
// products on AMD Zen 4/5 and Cooper Lake, conversions on other AVX-512
// CPUs. Hand-writing such kernels is what oneDNN exists for, so dropk does
// not. Where oneDNN has none (Debian's oneDNN 2.7 needs AVX-512: an AVX2
// CPU such as AMD Zen 2/3 or an older Xeon) or the build has no oneDNN,
// the operands are widened to fp32, which holds a bf16 exactly, and
// multiplied by OpenBLAS (MakeWidenedBf16Matmul): the same contract, bf16
// inputs and fp32 accumulation, in another summation order and at about
// fp32's speed, so a run configured for bf16 runs on any CPU.
//
// Operands are row-major bf16 arrays that the caller converts
// (ConvertToBf16 below), read as they are or transposed (LeftOperand,
// RightOperand); the output stays fp32. Primitives are built once
// per shape and thread count and cached. For a given shape and thread count
// the results are deterministic; oneDNN may split a product differently for
// another team size, so with precision bf16 a run is reproducible bit for bit
// only at the same thread count (fp32 is at any, and so is the widened
// path).
//
// Private to model/cpu/. Not thread-safe: call from the driving thread.
#ifndef DROPK_MODEL_CPU_BF16_MATMUL_H_
#define DROPK_MODEL_CPU_BF16_MATMUL_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace dropk {

// The layout of the left-hand operand a of a product a · b (K,N).
enum class LeftOperand {
  kMByK,  // a is stored (M,K) row-major
  kKByM,  // a is stored (K,M) row-major, i.e. the product uses its transpose
};

// The layout of the right-hand operand of a product a (M,K) · b.
enum class RightOperand {
  kKByN,  // b is stored (K,N) row-major
  kNByK,  // b is stored (N,K) row-major, i.e. the product uses its transpose
};

class Bf16Matmul {
 public:
  // oneDNN's bf16 matmul where it can make one on this machine, else
  // MakeWidenedBf16Matmul's; the widened one too when the environment sets
  // DROPK_CPU_BF16=widened (any other value: the default). Fails only when
  // oneDNN's product of 1 x 1 is wrong.
  static absl::StatusOr<std::unique_ptr<Bf16Matmul>> Create();
  virtual ~Bf16Matmul() = default;

  // c (M,N) = a (M,K) · b [+ bias (N), when not null], or c += that when
  // accumulate (bias must then be null). a and b are bf16 bit patterns.
  virtual void Multiply(float* c, const uint16_t* a, LeftOperand a_layout, const uint16_t* b,
                        RightOperand b_layout, const float* bias, int M, int N, int K,
                        bool accumulate) = 0;
  // The oneDNN implementation of the last product, e.g. "brg:avx512_core_bf16",
  // or "widened to fp32".
  virtual std::string Implementation() const = 0;
  // How the products run, for the kernels' description: "bf16 projections
  // through oneDNN", or the widened path and why oneDNN is not used.
  virtual std::string Description() const = 0;
};

// The products on a CPU where oneDNN has no bf16 matmul: a and b widened to
// fp32 (exact) and multiplied by OpenBLAS's sgemm in tiles fixed by the
// shape (FixedTileSgemm), so results do not depend on the team size. b is
// widened whole, a in blocks of WidenedRowsPerBlock rows. `why`: the
// reason oneDNN is not used, for Description().
std::unique_ptr<Bf16Matmul> MakeWidenedBf16Matmul(std::string why);

// The widened path's block of a's rows for a product of M rows over K:
// kWidenedBlockFloats floats' worth, at least kWidenedMinRows rows (so a
// block is never too thin to share out), at most M. Its scratch is at most
// max(kWidenedBlockFloats, kWidenedMinRows * K) floats for a, K * N for b.
inline constexpr int64_t kWidenedBlockFloats = int64_t{1} << 23;  // 32 MiB
inline constexpr int kWidenedMinRows = 256;
int WidenedRowsPerBlock(int M, int K);

// f rounded to the nearest bf16 (ties to even), as bits; a NaN keeps its
// sign and becomes the quiet NaN.
inline uint16_t ToBf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  // Ties to even: add 0x7FFF plus the lowest kept bit, then truncate.
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(nan ? ((u >> 16) | 0x0040u) : rounded);
}

// The float a bf16 bit pattern stands for (exact: a bf16 is a float's upper
// half).
inline float Bf16BitsToFloat(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// dst[i] = src[i] rounded to the nearest bf16 (ties to even), i < n; NaN
// stays NaN. Parallel over the current OpenMP team.
void ConvertToBf16(uint16_t* dst, const float* src, size_t n);

}  // namespace dropk

#endif  // DROPK_MODEL_CPU_BF16_MATMUL_H_
