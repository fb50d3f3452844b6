// The NCCL functions that nccl_communicator.cc calls, defined here as
// forwarders to libnccl opened on first use (see base/lazy_library.h: the
// library is over 200 MB, and only GPU runs need it). A function whose
// library cannot be loaded returns ncclSystemError; NcclLoadError() says why.
#ifdef DROPK_HAS_NCCL

#include <nccl.h>

#include <string>

#include "base/lazy_library.h"

#ifndef DROPK_NCCL_LIBRARY_PATH
#define DROPK_NCCL_LIBRARY_PATH ""
#endif

namespace dropk {

LazyLibrary& NcclLibrary() {
  static LazyLibrary library{"libnccl.so.2", "libnccl.so", DROPK_NCCL_LIBRARY_PATH};
  return library;
}

// Empty when libnccl loads, else why not.
std::string NcclLoadError() {
  return NcclLibrary().Loaded() ? std::string() : "cannot load NCCL: " + NcclLibrary().error();
}

}  // namespace dropk

using dropk::NcclLibrary;

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclGetUniqueId, ncclSystemError);
  return real(id);
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclCommInitRank, ncclSystemError);
  return real(comm, nranks, id, rank);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclCommDestroy, ncclSystemError);
  return real(comm);
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclCommAbort, ncclSystemError);
  return real(comm);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclCommGetAsyncError, ncclSystemError);
  return real(comm, async_error);
}

const char* ncclGetErrorString(ncclResult_t result) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclGetErrorString, "NCCL could not be loaded");
  return real(result);
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclAllReduce, ncclSystemError);
  return real(send, recv, count, type, op, comm, stream);
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recv_count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclReduceScatter, ncclSystemError);
  return real(send, recv, recv_count, type, op, comm, stream);
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t send_count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclAllGather, ncclSystemError);
  return real(send, recv, send_count, type, comm, stream);
}

ncclResult_t ncclReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclReduce, ncclSystemError);
  return real(send, recv, count, type, op, root, comm, stream);
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
  DROPK_LAZY_FORWARD(NcclLibrary(), ncclBroadcast, ncclSystemError);
  return real(send, recv, count, type, root, comm, stream);
}

}  // extern "C"

#endif  // DROPK_HAS_NCCL
