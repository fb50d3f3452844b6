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
//   CUBLAS_CHECK and NCCL_CHECK (cuda_runtime.h, cublasLt.h, nccl.h) with the
//   CUDA backend. Those sections sit outside the include guard, each behind
//   its own guard, so including this header again after the library's header
//   adds them. They need abseil's status and strings (absl::status,
//   absl::strings) from the including target.
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
  return absl::InternalError(absl::StrCat("rank ", rank, ": ", call, " failed: ",
                                          std::string(text, len), " (", file, ":", line, ")"));
}

}  // namespace dropk::internal

#define MPI_CHECK(call)                                                                   \
  do {                                                                                    \
    const int dropk_mpi_check_rc = (call);                                                \
    if (dropk_mpi_check_rc != MPI_SUCCESS) {                                              \
      return ::dropk::internal::MpiError(#call, dropk_mpi_check_rc, __FILE__, __LINE__);  \
    }                                                                                     \
  } while (0)

#endif  // MPI_VERSION && !DROPK_BASE_CHECK_MPI_
