// CpuKernels: memory, threads, reductions and the optimizer.
#include <omp.h>

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "cpu/cpu_kernels.h"
#include "cpu/xsmm_gemm.h"
#include "kernel_math.h"

extern "C" {
// OpenBLAS extensions (declared in its cblas.h on most builds; repeated here
// so a reference-BLAS header still compiles).
void openblas_set_num_threads(int num_threads);
char* openblas_get_config(void);
int openblas_get_parallel(void);  // 0: single-threaded build, 1: pthreads, 2: OpenMP
}

namespace dropk {
namespace {

// Every OpenBLAS call of the CPU kernels runs inside their own OpenMP
// regions, one call per thread (FixedTileSgemm, TiledSgemm,
// GemmOnThisThread), where OpenBLAS's OpenMP build stays on the calling
// thread. Its OpenMP build follows the team (as it always did); a pthreads
// build would start threads of its own inside each call, team x team of
// them, and sum in an order that depends on their count, so it gets one.
void SetOpenBlasThreads(int team) {
  openblas_set_num_threads(openblas_get_parallel() == 2 ? team : 1);
}

}  // namespace

CpuKernels::CpuKernels(int num_threads, std::unique_ptr<Bf16Matmul> bf16)
    : num_threads_(num_threads > 0 ? num_threads : omp_get_num_procs()),
      active_threads_(num_threads_),
      governor_(num_threads_),
      bf16_(std::move(bf16)) {
  omp_set_num_threads(num_threads_);
  SetOpenBlasThreads(num_threads_);
}

void CpuKernels::FitThreadsToLoad() {
  const int threads = governor_.Update();
  if (threads == active_threads_) return;
  active_threads_ = threads;
  // The OpenMP build of OpenBLAS runs its sgemm on OpenMP teams as well.
  omp_set_num_threads(threads);
  SetOpenBlasThreads(threads);
}

std::string CpuKernels::Describe() const {
  std::string text = absl::StrCat("cpu, ", num_threads_, " threads, ", openblas_get_config());
  if (bf16_ != nullptr) {
    absl::StrAppend(&text, ", ", bf16_->Description());
  } else {
    absl::StrAppend(&text, ", ", XsmmGemmDescription());
  }
  return text;
}

void* CpuKernels::Allocate(size_t bytes) {
  // 64-byte alignment for AVX-512; rounded up so aligned_alloc accepts it.
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* ptr = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (ptr == nullptr) throw std::bad_alloc();
  // Touch every page now, so no first-touch page faults land inside a step.
  std::memset(ptr, 0, rounded);
  bf16_weights_.Invalidate(ptr, rounded);  // in case a freed weight lived here
  return ptr;
}

void CpuKernels::Free(void* ptr) {
  // The block may have held weights; their copies go with it (its size is
  // not known here, so all of them: Free is for teardown, not steps).
  if (ptr != nullptr) bf16_weights_.InvalidateAll();
  std::free(ptr);
}

void CpuKernels::NoteExternalWrite(const void* dst, size_t bytes) {
  bf16_weights_.Invalidate(dst, bytes);
}

void CpuKernels::CopyToDevice(void* dst, const void* host_src, size_t bytes) {
  bf16_weights_.Invalidate(dst, bytes);
  std::memcpy(dst, host_src, bytes);
}

void CpuKernels::CopyToHost(void* host_dst, const void* src, size_t bytes) {
  std::memcpy(host_dst, src, bytes);
}

void CpuKernels::Zero(void* dst, size_t bytes) {
  bf16_weights_.Invalidate(dst, bytes);
  // The gradients are cleared every step; one thread's memset of the
  // recipe's 3.2 MB took ~0.5 ms (3.5% of its step) on the 2-core Zen 4.
  constexpr size_t kChunk = size_t{256} << 10;
  if (bytes < (size_t{1} << 20)) return static_cast<void>(std::memset(dst, 0, bytes));
  const size_t chunks = (bytes + kChunk - 1) / kChunk;
  char* base = static_cast<char*>(dst);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < chunks; ++c) {
    std::memset(base + c * kChunk, 0, std::min(kChunk, bytes - c * kChunk));
  }
}

float* CpuKernels::ThreadScratch(size_t floats_per_thread) {
  if (floats_per_thread > scratch_per_thread_) {
    scratch_per_thread_ = floats_per_thread;
    const int threads = std::max(num_threads_, omp_get_max_threads());
    scratch_.assign(scratch_per_thread_ * static_cast<size_t>(threads), 0.0f);
  }
  return scratch_.data();
}

double CpuKernels::SumSquares(const float* x, size_t n) {
  // Fixed blocks, added in order: the bits do not depend on the team size
  // (an OpenMP reduction's would), so resizing the team keeps runs exact.
  // Within a block, kLanes running sums (element i goes to lane i % kLanes,
  // then the lanes are added in order) keep the adds independent, so they
  // vectorise instead of waiting on one another: one chain of dependent
  // double adds ran at a quarter of memory speed.
  constexpr size_t kBlock = size_t{1} << 14;
  constexpr size_t kLanes = 16;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  block_sums_.resize(blocks);
  double* sums = block_sums_.data();
#pragma omp parallel for schedule(static)
  for (size_t b = 0; b < blocks; ++b) {
    const size_t begin = b * kBlock, end = std::min(n, begin + kBlock);
    double lanes[kLanes] = {};
    size_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      for (size_t j = 0; j < kLanes; ++j) lanes[j] += static_cast<double>(x[i + j]) * x[i + j];
    }
    for (size_t j = 0; i < end; ++i, ++j) lanes[j] += static_cast<double>(x[i]) * x[i];
    double s = 0.0;
    for (size_t j = 0; j < kLanes; ++j) s += lanes[j];
    sums[b] = s;
  }
  double total = 0.0;
  for (size_t b = 0; b < blocks; ++b) total += sums[b];
  return total;
}

void CpuKernels::AdamW(float* params, const float* grads, float* m, float* v, size_t n,
                       const AdamWArgs& a) {
  bf16_weights_.Invalidate(params, n * sizeof(float));
  const AdamWConstants k = AdamWConstantsOf(a);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) AdamWUpdate(&params[i], &m[i], &v[i], grads[i], k);
}

void CpuKernels::AdamWRanges(float* params, const float* grads, float* m, float* v,
                             const std::vector<AdamWRange>& ranges, const AdamWArgs& args) {
  // One parallel region for all ranges (a model's 30-100 tensors alternate
  // between decayed and not, so one AdamW call each paid a team wake-up
  // per range): each thread takes an equal share of the ranges'
  // concatenation. Every parameter gets the same arithmetic as in AdamW,
  // so the partition does not change a bit.
  std::vector<size_t> starts(ranges.size() + 1, 0);  // ranges' offsets in the concatenation
  std::vector<AdamWConstants> constants;
  constants.reserve(ranges.size());
  AdamWArgs range_args = args;
  for (size_t r = 0; r < ranges.size(); ++r) {
    bf16_weights_.Invalidate(params + ranges[r].begin,
                             (ranges[r].end - ranges[r].begin) * sizeof(float));
    starts[r + 1] = starts[r] + (ranges[r].end - ranges[r].begin);
    range_args.weight_decay = ranges[r].weight_decay;
    constants.push_back(AdamWConstantsOf(range_args));
  }
  const size_t total = starts.back();
#pragma omp parallel
  {
    const size_t team = static_cast<size_t>(omp_get_num_threads());
    const size_t me = static_cast<size_t>(omp_get_thread_num());
    const size_t first = total * me / team, last = total * (me + 1) / team;
    for (size_t r = 0; r < ranges.size(); ++r) {
      const size_t lo = std::max(first, starts[r]), hi = std::min(last, starts[r + 1]);
      if (lo >= hi) continue;
      const size_t base = ranges[r].begin - starts[r];  // concatenation index -> buffer offset
      const AdamWConstants& k = constants[r];
      for (size_t i = base + lo; i < base + hi; ++i) {
        AdamWUpdate(&params[i], &m[i], &v[i], grads[i], k);
      }
    }
  }
}

void CpuKernels::Scale(float* x, float alpha, size_t n) {
  bf16_weights_.Invalidate(x, n * sizeof(float));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) x[i] *= alpha;
}

}  // namespace dropk
