// The cuBLAS and cuBLASLt functions that model/cuda/ calls, defined here as
// forwarders to the real libraries opened on first use (see
// base/lazy_library.h: linking them would make every dropk binary load
// 600 MB of libraries at start). A function whose library cannot be loaded
// returns CUBLAS_STATUS_NOT_INITIALIZED; CublasLoadError() says why.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <string>

#include "base/lazy_library.h"
#include "cuda/cuda_kernels.h"

#ifndef DROPK_CUDA_LIBRARY_DIR
#define DROPK_CUDA_LIBRARY_DIR ""
#endif

namespace dropk {
namespace {

LazyLibrary& Cublas() {
  static LazyLibrary library{"libcublas.so.13", "libcublas.so",
                             DROPK_CUDA_LIBRARY_DIR "/libcublas.so.13"};
  return library;
}

LazyLibrary& CublasLt() {
  static LazyLibrary library{"libcublasLt.so.13", "libcublasLt.so",
                             DROPK_CUDA_LIBRARY_DIR "/libcublasLt.so.13"};
  return library;
}

}  // namespace

std::string CublasLoadError() {
  std::string error;
  if (!CublasLt().Loaded()) error = "cannot load cuBLASLt: " + CublasLt().error();
  if (!Cublas().Loaded()) {
    error += (error.empty() ? "" : "; ") + std::string("cannot load cuBLAS: ") + Cublas().error();
  }
  return error;
}

}  // namespace dropk

using dropk::Cublas;
using dropk::CublasLt;

extern "C" {

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
  DROPK_LAZY_FORWARD(Cublas(), cublasCreate_v2, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle);
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
  DROPK_LAZY_FORWARD(Cublas(), cublasDestroy_v2, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle);
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  DROPK_LAZY_FORWARD(Cublas(), cublasSetStream_v2, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle, stream);
}

const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
  DROPK_LAZY_FORWARD(Cublas(), cublasGetStatusName, "CUBLAS_STATUS (cuBLAS not loaded)");
  return real(status);
}

const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
  DROPK_LAZY_FORWARD(Cublas(), cublasGetStatusString, "cuBLAS could not be loaded");
  return real(status);
}

using GemmExFn = cublasStatus_t(CUBLASWINAPI*)(cublasHandle_t, cublasOperation_t, cublasOperation_t,
                                               int, int, int, const void*, const void*,
                                               cudaDataType, int, const void*, cudaDataType, int,
                                               const void*, void*, cudaDataType, int,
                                               cublasComputeType_t, cublasGemmAlgo_t);
cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const void* alpha, const void* A, cudaDataType Atype,
                                         int lda, const void* B, cudaDataType Btype, int ldb,
                                         const void* beta, void* C, cudaDataType Ctype, int ldc,
                                         cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  DROPK_LAZY_FORWARD_AS(Cublas(), GemmExFn, cublasGemmEx, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype,
              ldc, computeType, algo);
}

using GemmStridedBatchedExFn = cublasStatus_t(CUBLASWINAPI*)(
    cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*,
    cudaDataType, int, long long int, const void*, cudaDataType, int, long long int, const void*,
    void*, cudaDataType, int, long long int, int, cublasComputeType_t, cublasGemmAlgo_t);
cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void* alpha, const void* A, cudaDataType Atype, int lda, long long int strideA,
    const void* B, cudaDataType Btype, int ldb, long long int strideB, const void* beta, void* C,
    cudaDataType Ctype, int ldc, long long int strideC, int batchCount,
    cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  DROPK_LAZY_FORWARD_AS(Cublas(), GemmStridedBatchedExFn, cublasGemmStridedBatchedEx,
                        CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb,
              strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType, algo);
}

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* handle) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtCreate, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle);
}

cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t handle) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtDestroy, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle);
}

size_t CUBLASWINAPI cublasLtGetVersion(void) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtGetVersion, 0);
  return real();
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                                     cublasComputeType_t computeType,
                                                     cudaDataType_t scaleType) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatmulDescCreate, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(desc, computeType, scaleType);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatmulDescDestroy, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(desc);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr,
                                                           const void* buf, size_t size) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatmulDescSetAttribute, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(desc, attr, buf, size);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout,
                                                       cudaDataType type, uint64_t rows,
                                                       uint64_t cols, int64_t ld) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatrixLayoutCreate, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(layout, type, rows, cols, ld);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatrixLayoutDestroy, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(layout);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatmulPreferenceCreate, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatmulPreferenceDestroy, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
    size_t size) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatmulPreferenceSetAttribute,
                     CUBLAS_STATUS_NOT_INITIALIZED);
  return real(pref, attr, buf, size);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* returned) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatmulAlgoGetHeuristic, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle, desc, a, b, c, d, pref, requested, results, returned);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                           const void* alpha, const void* A,
                                           cublasLtMatrixLayout_t Adesc, const void* B,
                                           cublasLtMatrixLayout_t Bdesc, const void* beta,
                                           const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                                           cublasLtMatrixLayout_t Ddesc,
                                           const cublasLtMatmulAlgo_t* algo, void* workspace,
                                           size_t workspaceSizeInBytes, cudaStream_t stream) {
  DROPK_LAZY_FORWARD(CublasLt(), cublasLtMatmul, CUBLAS_STATUS_NOT_INITIALIZED);
  return real(handle, desc, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc, algo, workspace,
              workspaceSizeInBytes, stream);
}

}  // extern "C"
