// One trail for failures (NCCL's checks.h is the model). Two kinds:
//
// - DROPK_CHECK(cond) << "context": an internal invariant of dropk. When it
//   does not hold the program is broken, so it prints "file:line: CHECK
//   failed: cond context" to stderr and aborts. Never use it for what a user
//   or the world can cause (a bad config value, a corrupt file, a dead peer):
//   those are absl::Status values that name the thing at fault.
// - <LIB>_CHECK(call): converts a foreign library's error code into an
//   absl::Status naming the call, file and line, and returns it from the
//   enclosing function (which must return absl::Status or StatusOr). Each
//   section is compiled only when the library's header was included first,
//   so this header links nothing: MPI_CHECK (mpi.h) now; CUDA_CHECK,
//   CUBLAS_CHECK and NCCL_CHECK (cuda_runtime.h, cublasLt.h or cublas_v2.h,
//   nccl.h) with the CUDA backend. Those sections sit outside the include
//   guard, each behind its own guard, so including this header again after
//   the library's header adds them. They need abseil's status and strings
//   (absl::status, absl::strings) from the including target.
// - <LIB>_CHECK_THROW(operation, call): the same trail for a call whose
//   failure cannot be returned (inside a void Kernels op or an inference
//   step): throws dropk::DeviceError (base/device_error.h) whose what() is
//   "<operation>: <call> failed: <error name> (<text>) at file:line". The
//   binaries catch it and end cleanly (one line, exit 1; dropk-serve fails
//   the requests and reports itself unhealthy) instead of dumping core.
//   CUDA_CHECK_THROW and CUBLAS_CHECK_THROW exist.
// - <LIB>_CHECK_ABORT(call): the same trail where not even throwing is
//   allowed (a destructor, a C callback): prints it and aborts.
#ifndef DROPK_BASE_CHECK_H_
#define DROPK_BASE_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace dropk::internal {

// Collects the streamed context of a failed DROPK_CHECK, then aborts in its
// destructor. Only DROPK_CHECK creates one.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition) {
    stream_ << file << ":" << line << ": CHECK failed: " << condition << " ";
  }
  ~CheckFailure() {
    std::fprintf(stderr, "%s\n", stream_.str().c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets `DROPK_CHECK(c) << x` compile as a void expression.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace dropk::internal

#define DROPK_CHECK(condition)                 \
  (condition) ? (void)0                        \
              : ::dropk::internal::Voidify() & \
                    ::dropk::internal::CheckFailure(__FILE__, __LINE__, #condition).stream()

#endif  // DROPK_BASE_CHECK_H_

// ---------------------------------------------------------------- MPI
// MPI_CHECK(MPI_Barrier(comm)): on an error code, returns an
// absl::InternalError "rank R: MPI_Barrier(comm) failed: <MPI's text>
// (file:line)". The communicator must use MPI_ERRORS_RETURN, or MPI aborts
// before the code comes back.
#if defined(MPI_VERSION) && !defined(DROPK_BASE_CHECK_MPI_)
#define DROPK_BASE_CHECK_MPI_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dropk::internal {

inline absl::Status MpiError(const char* call, int rc, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  int rank = -1, initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return absl::InternalError(absl::StrCat(
      "rank ", rank, ": ", call, " failed: ", std::string(text, len), " (", file, ":", line, ")"));
}

}  // namespace dropk::internal

#define MPI_CHECK(call)                                                                  \
  do {                                                                                   \
    const int dropk_mpi_check_rc = (call);                                               \
    if (dropk_mpi_check_rc != MPI_SUCCESS) {                                             \
      return ::dropk::internal::MpiError(#call, dropk_mpi_check_rc, __FILE__, __LINE__); \
    }                                                                                    \
  } while (0)

#endif  // MPI_VERSION && !DROPK_BASE_CHECK_MPI_

// ---- CUDA runtime -------------------------------------------------------
#if defined(__CUDA_RUNTIME_H__) && !defined(DROPK_BASE_CHECK_CUDA_)
#define DROPK_BASE_CHECK_CUDA_
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/device_error.h"

namespace dropk::internal {
inline std::string CudaErrorText(cudaError_t rc, const char* call, const char* file, int line) {
  return absl::StrCat(call, " failed: ", cudaGetErrorName(rc), " (", cudaGetErrorString(rc),
                      ") at ", file, ":", line);
}
}  // namespace dropk::internal

#define CUDA_CHECK(call)                                                               \
  do {                                                                                 \
    const cudaError_t dropk_cuda_rc = (call);                                          \
    if (dropk_cuda_rc != cudaSuccess) {                                                \
      return ::absl::InternalError(                                                    \
          ::dropk::internal::CudaErrorText(dropk_cuda_rc, #call, __FILE__, __LINE__)); \
    }                                                                                  \
  } while (0)
#define CUDA_CHECK_THROW(operation, call)                                                     \
  do {                                                                                        \
    const cudaError_t dropk_cuda_rc = (call);                                                 \
    if (dropk_cuda_rc != cudaSuccess) {                                                       \
      throw ::dropk::DeviceError((operation), ::dropk::internal::CudaErrorText(               \
                                                  dropk_cuda_rc, #call, __FILE__, __LINE__)); \
    }                                                                                         \
  } while (0)
#define CUDA_CHECK_ABORT(call)                                                         \
  do {                                                                                 \
    const cudaError_t dropk_cuda_rc = (call);                                          \
    DROPK_CHECK(dropk_cuda_rc == cudaSuccess)                                          \
        << ::dropk::internal::CudaErrorText(dropk_cuda_rc, #call, __FILE__, __LINE__); \
  } while (0)
#endif  // CUDA runtime

// ---- cuBLAS / cuBLASLt --------------------------------------------------
#if defined(CUBLAS_API_H_) && !defined(DROPK_BASE_CHECK_CUBLAS_)
#define DROPK_BASE_CHECK_CUBLAS_
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/device_error.h"

namespace dropk::internal {
inline std::string CublasErrorText(cublasStatus_t rc, const char* call, const char* file,
                                   int line) {
  return absl::StrCat(call, " failed: ", cublasGetStatusName(rc), " (", cublasGetStatusString(rc),
                      ") at ", file, ":", line);
}
}  // namespace dropk::internal

#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    const cublasStatus_t dropk_cublas_rc = (call);                                         \
    if (dropk_cublas_rc != CUBLAS_STATUS_SUCCESS) {                                        \
      return ::absl::InternalError(                                                        \
          ::dropk::internal::CublasErrorText(dropk_cublas_rc, #call, __FILE__, __LINE__)); \
    }                                                                                      \
  } while (0)
#define CUBLAS_CHECK_THROW(operation, call)                                                     \
  do {                                                                                          \
    const cublasStatus_t dropk_cublas_rc = (call);                                              \
    if (dropk_cublas_rc != CUBLAS_STATUS_SUCCESS) {                                             \
      throw ::dropk::DeviceError((operation), ::dropk::internal::CublasErrorText(               \
                                                  dropk_cublas_rc, #call, __FILE__, __LINE__)); \
    }                                                                                           \
  } while (0)
#define CUBLAS_CHECK_ABORT(call)                                                           \
  do {                                                                                     \
    const cublasStatus_t dropk_cublas_rc = (call);                                         \
    DROPK_CHECK(dropk_cublas_rc == CUBLAS_STATUS_SUCCESS)                                  \
        << ::dropk::internal::CublasErrorText(dropk_cublas_rc, #call, __FILE__, __LINE__); \
  } while (0)
#endif  // cuBLAS

// ---- NCCL ---------------------------------------------------------------
#if defined(NCCL_H_) && !defined(DROPK_BASE_CHECK_NCCL_)
#define DROPK_BASE_CHECK_NCCL_
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dropk::internal {
inline std::string NcclErrorText(ncclResult_t rc, const char* call, const char* file, int line) {
  return absl::StrCat(call, " failed: ", ncclGetErrorString(rc), " (ncclResult_t ",
                      static_cast<int>(rc), ") at ", file, ":", line);
}
}  // namespace dropk::internal

// ncclInProgress is a failure too. dropk's NCCL communicator is blocking
// (ncclCommInitRank: no ncclConfig_t with blocking = 0), so no call returns
// it; one that did would be a collective not yet on the stream when the
// caller records its completion event, and Wait would report a reduction
// done before it ran. Whoever makes the communicator non-blocking must wait
// out ncclInProgress (ncclCommGetAsyncError) before recording that event.
#define NCCL_CHECK(call)                                                               \
  do {                                                                                 \
    const ncclResult_t dropk_nccl_rc = (call);                                         \
    if (dropk_nccl_rc != ncclSuccess) {                                                \
      return ::absl::InternalError(                                                    \
          ::dropk::internal::NcclErrorText(dropk_nccl_rc, #call, __FILE__, __LINE__)); \
    }                                                                                  \
  } while (0)
#define NCCL_CHECK_ABORT(call)                                                         \
  do {                                                                                 \
    const ncclResult_t dropk_nccl_rc = (call);                                         \
    DROPK_CHECK(dropk_nccl_rc == ncclSuccess)                                          \
        << ::dropk::internal::NcclErrorText(dropk_nccl_rc, #call, __FILE__, __LINE__); \
  } while (0)
#endif  // NCCL
