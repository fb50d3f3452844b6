#include "comm/nccl_communicator.h"

#include <cstdlib>

namespace dropk {

void SetNcclEnvironmentDefaults() {
  // overwrite=0: a user's own setting stands; an existing variable is left
  // as is, so a second call changes nothing.
  setenv("NCCL_RUNTIME_CONNECT", "0", /*overwrite=*/0);
}

}  // namespace dropk

#ifndef DROPK_HAS_NCCL

namespace dropk {

bool NcclAvailable() { return false; }

absl::Status NcclUsable() {
  return absl::UnimplementedError(
      "this build of dropk has no NCCL (it was built without the CUDA Toolkit or NCCL)");
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(Communicator*, int) {
  return absl::UnimplementedError(
      "comm backend NCCL: this build of dropk has no NCCL (it was built without the CUDA "
      "Toolkit or NCCL); use MPI");
}

}  // namespace dropk

#else  // DROPK_HAS_NCCL

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "done_work.h"

namespace dropk {

std::string NcclLoadError();  // nccl_loader.cc

namespace {

using Clock = std::chrono::steady_clock;

// How often Wait() looks at a collective and at NCCL's asynchronous error.
constexpr std::chrono::microseconds kPollInterval{200};

ncclDataType_t ToNccl(DataType type) {
  switch (type) {
    case DataType::kFloat32: return ncclFloat32;
    case DataType::kFloat64: return ncclFloat64;
    case DataType::kInt32: return ncclInt32;
    case DataType::kInt64: return ncclInt64;
    case DataType::kUint8: return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAverage: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
  }
  return ncclSum;
}

// The communicator's state that its Work handles share: the NCCL comm and
// whether it was aborted (after which every call fails at once).
struct NcclState {
  ncclComm_t comm = nullptr;
  int rank = 0;
  int device = 0;
  std::mutex mu;
  bool aborted = false;
  std::string abort_reason;

  // Aborts the communicator once; later callers get the first reason.
  void Abort(const std::string& reason) {
    std::lock_guard<std::mutex> lock(mu);
    if (aborted) return;
    aborted = true;
    abort_reason = reason;
    ncclCommAbort(comm);  // stops this rank's kernels; its result is moot now
    comm = nullptr;
  }
  // Empty when usable, else why not.
  std::string AbortReason() {
    std::lock_guard<std::mutex> lock(mu);
    return aborted ? abort_reason : std::string();
  }
};

// One enqueued collective: events around it on the communicator's stream.
class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> state, std::string name, std::chrono::milliseconds timeout,
           cudaEvent_t start, cudaEvent_t done)
      : state_(std::move(state)),
        name_(std::move(name)),
        deadline_(Clock::now() + timeout),
        timeout_(timeout),
        start_(start),
        done_(done) {}
  ~NcclWork() override {
    cudaEventDestroy(start_);
    cudaEventDestroy(done_);
  }

  absl::Status Wait() override {
    if (finished_) return result_;
    for (;;) {
      if (std::string reason = state_->AbortReason(); !reason.empty()) {
        return Finish(
            absl::AbortedError(absl::StrCat(name_, " on rank ", state_->rank,
                                            ": the NCCL communicator was aborted (", reason, ")")));
      }
      const cudaError_t q = cudaEventQuery(done_);
      if (q == cudaSuccess) return Finish(absl::OkStatus());
      if (q != cudaErrorNotReady) {
        const std::string why = absl::StrCat(name_, " on rank ", state_->rank, ": ",
                                             cudaGetErrorName(q), " (", cudaGetErrorString(q), ")");
        state_->Abort(why);
        return Finish(absl::InternalError(why));
      }
      ncclResult_t async = ncclSuccess;
      {
        std::lock_guard<std::mutex> lock(state_->mu);
        if (state_->comm != nullptr) ncclCommGetAsyncError(state_->comm, &async);
      }
      if (async != ncclSuccess && async != ncclInProgress) {
        const std::string why =
            absl::StrCat(name_, " on rank ", state_->rank, ": NCCL reported ",
                         ncclGetErrorString(async), "; aborted the communicator");
        state_->Abort(why);
        return Finish(absl::InternalError(why));
      }
      if (Clock::now() > deadline_) {
        const std::string why = absl::StrCat(
            name_, " on rank ", state_->rank, " did not complete within ",
            timeout_.count() / 1000.0,
            " s: another rank is not taking part (dead, stuck, or issuing collectives in a "
            "different order); aborted the NCCL communicator (ncclCommAbort)");
        state_->Abort(why);
        return Finish(absl::DeadlineExceededError(why));
      }
      std::this_thread::sleep_for(kPollInterval);
    }
  }

  bool IsCompleted() override { return finished_ || cudaEventQuery(done_) != cudaErrorNotReady; }

  double RunSeconds() const override {
    float ms = 0.0f;
    if (!finished_ || !result_.ok()) return 0.0;
    if (cudaEventElapsedTime(&ms, start_, done_) != cudaSuccess) return 0.0;
    return ms / 1000.0;
  }

 private:
  absl::Status Finish(absl::Status status) {
    finished_ = true;
    result_ = std::move(status);
    return result_;
  }

  std::shared_ptr<NcclState> state_;
  const std::string name_;
  const Clock::time_point deadline_;
  const std::chrono::milliseconds timeout_;
  cudaEvent_t start_, done_;
  bool finished_ = false;
  absl::Status result_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclState> state, int size, cudaStream_t stream,
                   int* barrier_scratch)
      : state_(std::move(state)), size_(size), stream_(stream), barrier_(barrier_scratch) {}

  ~NcclCommunicator() override {
    // Best effort: a destructor cannot report. A healthy communicator drains
    // and is destroyed; an aborted one is already gone.
    cudaSetDevice(state_->device);
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->aborted && state_->comm != nullptr) {
      cudaStreamSynchronize(stream_);
      ncclCommDestroy(state_->comm);
      state_->comm = nullptr;
    }
    cudaFree(barrier_);
    cudaStreamDestroy(stream_);
  }

  int Rank() const override { return state_->rank; }
  int Size() const override { return size_; }
  std::string BackendName() const override { return "nccl"; }

  std::unique_ptr<Work> AllReduce(Buffer buffer, ReduceOp op,
                                  const CollectiveOptions& options) override {
    const std::string name = Describe("AllReduce", buffer);
    if (absl::Status s = CheckDevice(buffer, name); !s.ok()) return Failed(s);
    return Enqueue(name, options, [&]() -> absl::Status {
      if (buffer.count == 0 || size_ == 1) return absl::OkStatus();
      const size_t chunk = buffer.count / size_;
      const size_t elem = DataTypeSize(buffer.type);
      char* data = static_cast<char*>(buffer.data);
      if (chunk > 0) {
        // In place: rank r's block of the reduction lands at its own offset.
        NCCL_CHECK(ncclReduceScatter(data, data + state_->rank * chunk * elem, chunk,
                                     ToNccl(buffer.type), ToNccl(op), state_->comm, stream_));
        NCCL_CHECK(ncclAllGather(data + state_->rank * chunk * elem, data, chunk,
                                 ToNccl(buffer.type), state_->comm, stream_));
      }
      const size_t tail = buffer.count - chunk * size_;
      if (tail > 0) {
        char* rest = data + chunk * size_ * elem;
        NCCL_CHECK(ncclReduce(rest, rest, tail, ToNccl(buffer.type), ToNccl(op), 0, state_->comm,
                              stream_));
        NCCL_CHECK(ncclBroadcast(rest, rest, tail, ToNccl(buffer.type), 0, state_->comm, stream_));
      }
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> Broadcast(Buffer buffer, int root,
                                  const CollectiveOptions& options) override {
    const std::string name = Describe("Broadcast", buffer);
    if (absl::Status s = CheckDevice(buffer, name); !s.ok()) return Failed(s);
    if (root < 0 || root >= size_) {
      return Failed(absl::InvalidArgumentError(
          absl::StrCat(name, ": root ", root, " outside 0..", size_ - 1)));
    }
    return Enqueue(name, options, [&]() -> absl::Status {
      NCCL_CHECK(ncclBroadcast(buffer.data, buffer.data, buffer.count, ToNccl(buffer.type), root,
                               state_->comm, stream_));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> AllGather(Buffer input, Buffer output,
                                  const CollectiveOptions& options) override {
    const std::string name = Describe("AllGather", input);
    if (absl::Status s = CheckDevice(input, name); !s.ok()) return Failed(s);
    if (absl::Status s = CheckDevice(output, name); !s.ok()) return Failed(s);
    if (output.count != input.count * size_ || output.type != input.type) {
      return Failed(absl::InvalidArgumentError(
          absl::StrCat(name, ": output must hold ", size_, " x ", input.count,
                       " elements of the input's type, has ", output.count)));
    }
    return Enqueue(name, options, [&]() -> absl::Status {
      NCCL_CHECK(ncclAllGather(input.data, output.data, input.count, ToNccl(input.type),
                               state_->comm, stream_));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> ReduceScatter(Buffer input, Buffer output, ReduceOp op,
                                      const CollectiveOptions& options) override {
    const std::string name = Describe("ReduceScatter", input);
    if (absl::Status s = CheckDevice(input, name); !s.ok()) return Failed(s);
    if (absl::Status s = CheckDevice(output, name); !s.ok()) return Failed(s);
    if (input.count != output.count * size_ || output.type != input.type) {
      return Failed(absl::InvalidArgumentError(
          absl::StrCat(name, ": input must hold ", size_, " x ", output.count,
                       " elements of the output's type, has ", input.count)));
    }
    return Enqueue(name, options, [&]() -> absl::Status {
      NCCL_CHECK(ncclReduceScatter(input.data, output.data, output.count, ToNccl(input.type),
                                   ToNccl(op), state_->comm, stream_));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> Barrier(const CollectiveOptions& options) override {
    const std::string name = absl::StrCat("Barrier #", ++sequence_);
    return Enqueue(name, options, [&]() -> absl::Status {
      NCCL_CHECK(ncclAllReduce(barrier_, barrier_, 1, ncclInt32, ncclSum, state_->comm, stream_));
      return absl::OkStatus();
    });
  }

 private:
  std::string Describe(const char* op, const Buffer& b) {
    static const char* kTypeNames[] = {"float32", "float64", "int32", "int64", "uint8"};
    return absl::StrCat(op, " #", ++sequence_, " (", b.count, " x ",
                        kTypeNames[static_cast<int>(b.type)], ")");
  }

  absl::Status CheckDevice(const Buffer& b, const std::string& name) const {
    if (b.memory != MemoryKind::kCuda) {
      return absl::UnimplementedError(
          absl::StrCat(name, " on rank ", state_->rank,
                       ": the NCCL backend takes CUDA buffers; use MPI for host memory"));
    }
    if (b.data == nullptr && b.count > 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": null buffer"));
    }
    return absl::OkStatus();
  }

  std::unique_ptr<Work> Failed(absl::Status status) {
    return std::make_unique<DoneWork>(std::move(status));
  }

  // Orders the collective after options.ready_event, brackets `issue` (the
  // NCCL calls) with events on the communicator's stream, and returns the
  // Work that polls them.
  template <typename Issue>
  std::unique_ptr<Work> Enqueue(const std::string& name, const CollectiveOptions& options,
                                Issue issue) {
    if (std::string reason = state_->AbortReason(); !reason.empty()) {
      return Failed(absl::AbortedError(absl::StrCat(
          name, " on rank ", state_->rank, ": the NCCL communicator was aborted (", reason, ")")));
    }
    absl::Status status = [&]() -> absl::Status {
      CUDA_CHECK(cudaSetDevice(state_->device));
      if (options.ready_event != nullptr) {
        CUDA_CHECK(cudaStreamWaitEvent(stream_, static_cast<cudaEvent_t>(options.ready_event), 0));
      }
      return absl::OkStatus();
    }();
    cudaEvent_t start = nullptr, done = nullptr;
    if (status.ok()) status = CreateEvents(&start, &done);
    if (status.ok()) status = RecordAround(start, done, issue);
    if (!status.ok()) {
      if (start != nullptr) cudaEventDestroy(start);
      if (done != nullptr) cudaEventDestroy(done);
      const std::string why = absl::StrCat(name, " on rank ", state_->rank, ": ", status.message());
      state_->Abort(why);
      return Failed(absl::Status(status.code(), why));
    }
    return std::make_unique<NcclWork>(state_, name, options.timeout, start, done);
  }

  static absl::Status CreateEvents(cudaEvent_t* start, cudaEvent_t* done) {
    CUDA_CHECK(cudaEventCreate(start));
    CUDA_CHECK(cudaEventCreate(done));
    return absl::OkStatus();
  }

  template <typename Issue>
  absl::Status RecordAround(cudaEvent_t start, cudaEvent_t done, Issue& issue) {
    CUDA_CHECK(cudaEventRecord(start, stream_));
    if (absl::Status s = issue(); !s.ok()) return s;
    CUDA_CHECK(cudaEventRecord(done, stream_));
    return absl::OkStatus();
  }

  std::shared_ptr<NcclState> state_;
  const int size_;
  cudaStream_t stream_;
  int* barrier_;  // one device int for Barrier
  uint64_t sequence_ = 0;
};

// How long every rank may take to join the NCCL communicator.
constexpr std::chrono::seconds kNcclInitTimeout{300};

// Ends the process with one line if it is still alive `timeout` after its
// construction, unless destroyed (the guarded call returned) before then.
class InitWatchdog {
 public:
  InitWatchdog(int rank, std::chrono::seconds timeout)
      : thread_([this, rank, timeout] {
          std::unique_lock<std::mutex> lock(mu_);
          if (done_cv_.wait_for(lock, timeout, [this] { return done_; })) return;
          std::fprintf(stderr,
                       "dropk: rank %d: ncclCommInitRank did not complete within %lld s: a rank "
                       "did not join the NCCL communicator (dead, or stuck before it); ending "
                       "this process so that the launcher ends the job\n",
                       rank, static_cast<long long>(timeout.count()));
          std::fflush(stderr);
          std::_Exit(1);
        }) {}
  ~InitWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    done_cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::thread thread_;  // last: starts after the members it uses
};

absl::Status CreateComm(Communicator* bootstrap, int cuda_device, NcclState* state,
                        cudaStream_t* stream, int** barrier) {
  if (std::string error = NcclLoadError(); !error.empty()) {
    return absl::FailedPreconditionError(error);
  }
  // Every peer connection at init, under InitWatchdog below, unless the user
  // chose otherwise: NCCL >= 2.22 connects lazily by default, inside the
  // first collective of each algorithm, a host call that no deadline bounds
  // (a stuck peer would hang it for good), and allocates its buffers then,
  // after the memory check. Older NCCL connects at init anyway. Set before
  // NCCL's first call (ncclGetUniqueId) reads its environment; dropk-train
  // has set it already, before its threads started.
  SetNcclEnvironmentDefaults();
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: cudaGetDeviceCount returned ",
                     rc != cudaSuccess ? cudaGetErrorName(rc) : "0 devices"));
  }
  if (cuda_device < 0 || cuda_device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda device ", cuda_device, " requested, but this machine has ", count));
  }
  CUDA_CHECK(cudaSetDevice(cuda_device));
  // Rank 0 sends the id with whether it got one: a failure there must not
  // leave the other ranks waiting out the broadcast's timeout.
  struct {
    ncclUniqueId id;
    int32_t ok;
  } offer{};
  ncclResult_t id_result = ncclSuccess;
  if (bootstrap->Rank() == 0) {
    id_result = ncclGetUniqueId(&offer.id);
    offer.ok = id_result == ncclSuccess ? 1 : 0;
  }
  Buffer offer_bytes{&offer, sizeof(offer), DataType::kUint8, MemoryKind::kHost};
  if (absl::Status s = bootstrap->Broadcast(offer_bytes, 0)->Wait(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("broadcasting the NCCL unique id: ", s.message()));
  }
  if (!offer.ok) {
    return absl::UnavailableError(
        bootstrap->Rank() == 0
            ? absl::StrCat("ncclGetUniqueId failed: ", ncclGetErrorString(id_result))
            : std::string("rank 0 could not create the NCCL unique id (its own line says why)"));
  }
  CUDA_CHECK(cudaStreamCreateWithFlags(stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaMalloc(barrier, sizeof(int)));
  CUDA_CHECK(cudaMemset(*barrier, 0, sizeof(int)));
  // ncclCommInitRank waits for every rank to join and has no timeout of its
  // own: a peer that died after the broadcast would hang this rank for good.
  // A watchdog ends the process instead, with one line, so that mpirun ends
  // the job.
  InitWatchdog watchdog(bootstrap->Rank(), kNcclInitTimeout);
  NCCL_CHECK(ncclCommInitRank(&state->comm, bootstrap->Size(), offer.id, bootstrap->Rank()));
  return absl::OkStatus();
}

}  // namespace

bool NcclAvailable() { return true; }

absl::Status NcclUsable() {
  if (std::string error = NcclLoadError(); !error.empty()) {
    return absl::FailedPreconditionError(error);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(Communicator* bootstrap,
                                                                   int cuda_device) {
  auto state = std::make_shared<NcclState>();
  state->rank = bootstrap->Rank();
  state->device = cuda_device;
  cudaStream_t stream = nullptr;
  int* barrier = nullptr;
  if (absl::Status s = CreateComm(bootstrap, cuda_device, state.get(), &stream, &barrier);
      !s.ok()) {
    if (barrier != nullptr) cudaFree(barrier);
    if (stream != nullptr) cudaStreamDestroy(stream);
    return absl::Status(s.code(), absl::StrCat("NCCL communicator on rank ", bootstrap->Rank(),
                                               ", cuda device ", cuda_device, ": ", s.message()));
  }
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(std::move(state), bootstrap->Size(), stream, barrier));
}

}  // namespace dropk

#endif  // DROPK_HAS_NCCL
