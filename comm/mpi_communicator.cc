#include "comm/mpi_communicator.h"

#include <mpi.h>

#include <chrono>
#include <csignal>
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/check.h"  // after mpi.h: MPI_CHECK
#include "device_staging.h"
#include "absl/strings/str_join.h"
#include "comm/peer_probe.h"

namespace dropk {
namespace {

MPI_Datatype ToMpi(DataType type) {
  switch (type) {
    case DataType::kFloat32: return MPI_FLOAT;
    case DataType::kFloat64: return MPI_DOUBLE;
    case DataType::kInt32: return MPI_INT32_T;
    case DataType::kInt64: return MPI_INT64_T;
    case DataType::kUint8: return MPI_UINT8_T;
  }
  return MPI_DATATYPE_NULL;
}

#ifdef DROPK_HAS_CUDA
constexpr bool kStagesDeviceBuffers = true;
#else
constexpr bool kStagesDeviceBuffers = false;
#endif

MPI_Op ToMpi(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

void DivideInPlace(const Buffer& b, size_t begin, size_t count, int divisor) {
  switch (b.type) {
    case DataType::kFloat32: {
      float* p = static_cast<float*>(b.data) + begin;
      const float inv = 1.0f / divisor;
      for (size_t i = 0; i < count; ++i) p[i] *= inv;
      break;
    }
    case DataType::kFloat64: {
      double* p = static_cast<double*>(b.data) + begin;
      for (size_t i = 0; i < count; ++i) p[i] /= divisor;
      break;
    }
    case DataType::kInt32: {
      int32_t* p = static_cast<int32_t*>(b.data) + begin;
      for (size_t i = 0; i < count; ++i) p[i] /= divisor;
      break;
    }
    case DataType::kInt64: {
      int64_t* p = static_cast<int64_t*>(b.data) + begin;
      for (size_t i = 0; i < count; ++i) p[i] /= divisor;
      break;
    }
    case DataType::kUint8: {
      uint8_t* p = static_cast<uint8_t*>(b.data) + begin;
      for (size_t i = 0; i < count; ++i) p[i] = static_cast<uint8_t>(p[i] / divisor);
      break;
    }
  }
}

// One queued collective and its outcome, shared by the caller's Work handle
// and the communication thread.
struct Operation {
  std::string name;  // e.g. "AllReduce #12 (1048576 x float32)"
  std::function<absl::Status()> run;
  std::chrono::milliseconds timeout;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  absl::Status status;
  double run_seconds = 0;
};

// Where every rank of the job can be probed (index = rank), and this rank's
// listener that answers for it. Shared by the communicator and its Work
// handles.
struct ProbeTable {
  std::vector<ProbeAddress> peers;
  std::unique_ptr<ProbeListener> listener;
};

// Why the collective `name` did not finish on `rank`: the peers that do not
// answer a TCP probe are named (Unavailable); when all answer, the cause is
// one that a probe cannot see (DeadlineExceeded).
absl::Status DescribeTimeout(const std::string& name, int rank, std::chrono::milliseconds timeout,
                             const ProbeTable* probes) {
  const std::string head = absl::StrCat(name, " on rank ", rank, " did not complete within ",
                                        timeout.count() / 1000.0, " s: ");
  std::vector<std::string> lost;
  if (probes != nullptr && !probes->peers.empty()) {
    const std::vector<PeerState> states =
        ProbePeers(probes->peers, std::chrono::milliseconds(2000));
    for (size_t r = 0; r < states.size(); ++r) {
      const ProbeAddress& peer = probes->peers[r];
      const bool probeable = peer.port != 0 && peer.num_addresses > 0;
      if (static_cast<int>(r) == rank || !probeable) continue;
      const std::string who =
          absl::StrCat("rank ", r, " (", FirstAddressText(probes->peers[r]), ")");
      if (states[r] == PeerState::kUnreachable) {
        lost.push_back(absl::StrCat(who, " is unreachable (no answer within 2 s: link down or host lost)"));
      } else if (states[r] == PeerState::kRefused) {
        lost.push_back(absl::StrCat(who, " is gone (its host refuses: the process died)"));
      }
    }
  }
  if (!lost.empty()) return absl::UnavailableError(head + absl::StrJoin(lost, "; "));
  return absl::DeadlineExceededError(
      head + "another rank is not taking part (stuck, or issuing collectives in a different "
             "order; every peer answers on the network)");
}

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<Operation> op, int rank, std::shared_ptr<const ProbeTable> probes)
      : op_(std::move(op)), rank_(rank), probes_(std::move(probes)) {}
  absl::Status Wait() override {
    std::unique_lock<std::mutex> lock(op_->mu);
    if (!op_->done_cv.wait_for(lock, op_->timeout, [&] { return op_->done; })) {
      lock.unlock();
      return DescribeTimeout(op_->name, rank_, op_->timeout, probes_.get());
    }
    return op_->status;
  }
  bool IsCompleted() override {
    std::lock_guard<std::mutex> lock(op_->mu);
    return op_->done;
  }
  double RunSeconds() const override {
    std::lock_guard<std::mutex> lock(op_->mu);
    return op_->run_seconds;
  }

 private:
  std::shared_ptr<Operation> op_;
  int rank_;
  std::shared_ptr<const ProbeTable> probes_;  // null: no probing
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(int rank, int size, std::shared_ptr<const ProbeTable> probes)
      : rank_(rank), size_(size), probes_(std::move(probes)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
    MPI_Finalize();
  }

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string BackendName() const override { return "mpi"; }

  std::unique_ptr<Work> AllReduce(Buffer buffer, ReduceOp op,
                                  const CollectiveOptions& options) override {
    const std::string name = Describe("AllReduce", buffer);
    if (absl::Status s = CheckMemory(buffer, name); !s.ok()) return Failed(name, s);
    void* ready = options.ready_event;
    return Enqueue(name, options, [this, buffer, op, ready]() -> absl::Status {
      absl::StatusOr<Buffer> host = StageIn(buffer, 0, true, ready);
      if (!host.ok()) return host.status();
      if (absl::Status s = ReduceScatterAllGather(*host, op); !s.ok()) return s;
      return StageOut(buffer, 0);
    });
  }

  std::unique_ptr<Work> Broadcast(Buffer buffer, int root,
                                  const CollectiveOptions& options) override {
    const std::string name = Describe("Broadcast", buffer);
    if (absl::Status s = CheckMemory(buffer, name); !s.ok()) return Failed(name, s);
    if (root < 0 || root >= size_) {
      return Failed(name, absl::InvalidArgumentError(
                              absl::StrCat(name, ": root ", root, " outside 0..", size_ - 1)));
    }
    void* ready = options.ready_event;
    return Enqueue(name, options, [this, buffer, root, ready]() -> absl::Status {
      absl::StatusOr<Buffer> host = StageIn(buffer, 0, rank_ == root, ready);
      if (!host.ok()) return host.status();
      // MPI counts are int: send large buffers in pieces.
      const size_t elem = DataTypeSize(buffer.type);
      for (size_t off = 0; off < buffer.count; off += kMaxChunk) {
        const int n = static_cast<int>(std::min(kMaxChunk, buffer.count - off));
        MPI_CHECK(MPI_Bcast(static_cast<char*>(host->data) + off * elem, n, ToMpi(buffer.type),
                            root, MPI_COMM_WORLD));
      }
      return StageOut(buffer, 0);
    });
  }

  std::unique_ptr<Work> AllGather(Buffer input, Buffer output,
                                  const CollectiveOptions& options) override {
    const std::string name = Describe("AllGather", input);
    if (absl::Status s = CheckMemory(input, name); !s.ok()) return Failed(name, s);
    if (absl::Status s = CheckMemory(output, name); !s.ok()) return Failed(name, s);
    if (output.count != input.count * size_ || output.type != input.type) {
      return Failed(name, absl::InvalidArgumentError(absl::StrCat(
                              name, ": output must hold ", size_, " x ", input.count,
                              " elements of the input's type, has ", output.count)));
    }
    if (input.count > kMaxChunk) {
      return Failed(name, absl::UnimplementedError(absl::StrCat(name, ": more than ", kMaxChunk,
                                                                " elements per rank")));
    }
    void* ready = options.ready_event;
    return Enqueue(name, options, [this, input, output, ready]() -> absl::Status {
      absl::StatusOr<Buffer> in = StageIn(input, 0, true, ready);
      if (!in.ok()) return in.status();
      absl::StatusOr<Buffer> out = StageIn(output, 1, false, nullptr);
      if (!out.ok()) return out.status();
      MPI_CHECK(MPI_Allgather(in->data, static_cast<int>(input.count), ToMpi(input.type),
                              out->data, static_cast<int>(input.count), ToMpi(input.type),
                              MPI_COMM_WORLD));
      return StageOut(output, 1);
    });
  }

  std::unique_ptr<Work> ReduceScatter(Buffer input, Buffer output, ReduceOp op,
                                      const CollectiveOptions& options) override {
    const std::string name = Describe("ReduceScatter", input);
    if (absl::Status s = CheckMemory(input, name); !s.ok()) return Failed(name, s);
    if (absl::Status s = CheckMemory(output, name); !s.ok()) return Failed(name, s);
    if (input.count != output.count * size_ || output.type != input.type) {
      return Failed(name, absl::InvalidArgumentError(absl::StrCat(
                              name, ": input must hold ", size_, " x ", output.count,
                              " elements of the output's type, has ", input.count)));
    }
    if (output.count > kMaxChunk) {
      return Failed(name, absl::UnimplementedError(absl::StrCat(name, ": more than ", kMaxChunk,
                                                                " elements per rank")));
    }
    void* ready = options.ready_event;
    return Enqueue(name, options, [this, input, output, op, ready]() -> absl::Status {
      absl::StatusOr<Buffer> in = StageIn(input, 0, true, ready);
      if (!in.ok()) return in.status();
      absl::StatusOr<Buffer> out = StageIn(output, 1, false, nullptr);
      if (!out.ok()) return out.status();
      MPI_CHECK(MPI_Reduce_scatter_block(in->data, out->data, static_cast<int>(output.count),
                                         ToMpi(input.type), ToMpi(op), MPI_COMM_WORLD));
      if (op == ReduceOp::kAverage) DivideInPlace(*out, 0, output.count, size_);
      return StageOut(output, 1);
    });
  }

  std::unique_ptr<Work> Barrier(const CollectiveOptions& options) override {
    const std::string name = absl::StrCat("Barrier #", ++sequence_);
    return Enqueue(name, options, [this]() -> absl::Status {
      MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      return absl::OkStatus();
    });
  }

 private:
  static constexpr size_t kMaxChunk = size_t{1} << 30;  // elements per MPI call (int counts)

  std::string Describe(const char* op, const Buffer& b) {
    static const char* kTypeNames[] = {"float32", "float64", "int32", "int64", "uint8"};
    return absl::StrCat(op, " #", ++sequence_, " (", b.count, " x ",
                        kTypeNames[static_cast<int>(b.type)], ")");
  }

  // Host buffers, or CUDA buffers where the build has CUDA (staged through
  // pinned host memory on the communication thread).
  absl::Status CheckMemory(const Buffer& b, const std::string& name) const {
    if (b.memory == MemoryKind::kCuda && !kStagesDeviceBuffers) {
      return absl::UnimplementedError(absl::StrCat(
          name, " on rank ", rank_,
          ": a CUDA buffer, but this build of dropk has no CUDA support"));
    }
    if (b.data == nullptr && b.count > 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": null buffer"));
    }
    return absl::OkStatus();
  }

  // A host view of b: b itself, or its staged copy (see DeviceStaging).
  absl::StatusOr<Buffer> StageIn(const Buffer& b, int slot, bool copy_in, void* ready_event) {
    if (b.memory == MemoryKind::kHost) return b;
    absl::StatusOr<Buffer> host = staging_.StageIn(b, slot, copy_in, ready_event);
    if (!host.ok()) {
      return absl::Status(host.status().code(),
                          absl::StrCat("rank ", rank_, ": staging a CUDA buffer: ",
                                       host.status().message()));
    }
    return host;
  }
  absl::Status StageOut(const Buffer& b, int slot) {
    if (b.memory == MemoryKind::kHost) return absl::OkStatus();
    absl::Status s = staging_.StageOut(b, slot);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("rank ", rank_, ": copying a staged result "
                                                 "back to the GPU: ", s.message()));
    }
    return s;
  }

  std::unique_ptr<Work> Failed(const std::string& name, absl::Status status) {
    auto op = std::make_shared<Operation>();
    op->name = name;
    op->timeout = std::chrono::milliseconds(0);
    op->done = true;
    op->status = std::move(status);
    return std::make_unique<MpiWork>(std::move(op), rank_, probes_);
  }

  std::unique_ptr<Work> Enqueue(const std::string& name, const CollectiveOptions& options,
                                std::function<absl::Status()> run) {
    auto op = std::make_shared<Operation>();
    op->name = name;
    op->run = std::move(run);
    op->timeout = options.timeout;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(op);
    }
    cv_.notify_one();
    return std::make_unique<MpiWork>(std::move(op), rank_, probes_);
  }

  // Reduce-scatter in (almost) equal blocks, then all-gather the reduced
  // blocks: every element is reduced on exactly one rank, so all ranks get
  // the same bits. Counts up to size * 2^30 elements per call.
  absl::Status ReduceScatterAllGather(const Buffer& b, ReduceOp op) {
    if (size_ == 1 || b.count == 0) return absl::OkStatus();
    const size_t elem = DataTypeSize(b.type);
    const size_t base = b.count / size_, extra = b.count % size_;
    counts_.resize(size_);
    displs_.resize(size_);
    size_t offset = 0;
    for (int r = 0; r < size_; ++r) {
      const size_t n = base + (static_cast<size_t>(r) < extra ? 1 : 0);
      if (n > kMaxChunk) return absl::UnimplementedError("AllReduce: buffer too large");
      counts_[r] = static_cast<int>(n);
      displs_[r] = static_cast<int>(offset);
      offset += n;
      if (offset > static_cast<size_t>(INT32_MAX)) {
        return absl::UnimplementedError("AllReduce: more than 2^31 elements per call");
      }
    }
    char* data = static_cast<char*>(b.data);
    char* mine = data + static_cast<size_t>(displs_[rank_]) * elem;
    // In place: this rank's block receives the reduction of everyone's block.
    MPI_CHECK(MPI_Reduce_scatter(MPI_IN_PLACE, data, counts_.data(), ToMpi(b.type), ToMpi(op),
                                 MPI_COMM_WORLD));
    // MPI_IN_PLACE reduce-scatter leaves the result at the start of the buffer.
    if (counts_[rank_] > 0 && mine != data) {
      std::memmove(mine, data, static_cast<size_t>(counts_[rank_]) * elem);
    }
    if (op == ReduceOp::kAverage) DivideInPlace(b, displs_[rank_], counts_[rank_], size_);
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts_.data(),
                             displs_.data(), ToMpi(b.type), MPI_COMM_WORLD));
    return absl::OkStatus();
  }

  void Loop() {
    for (;;) {
      std::shared_ptr<Operation> op;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping and drained
        op = queue_.front();
        queue_.pop_front();
      }
      const auto start = std::chrono::steady_clock::now();
      absl::Status status = op->run();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      {
        std::lock_guard<std::mutex> lock(op->mu);
        op->status = std::move(status);
        op->run_seconds = seconds;
        op->done = true;
      }
      op->done_cv.notify_all();
    }
  }

  const int rank_, size_;
  const std::shared_ptr<const ProbeTable> probes_;
  uint64_t sequence_ = 0;
  std::vector<int> counts_, displs_;  // reused by every AllReduce
  DeviceStaging staging_;             // used on the communication thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Operation>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return absl::FailedPreconditionError("MPI is already initialised");
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
    return absl::UnavailableError("MPI_Init_thread failed");
  }
  // Errors come back as codes, which MPI_CHECK turns into Status values.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (provided < MPI_THREAD_SERIALIZED) {
    AbortJob(absl::StrCat("rank ", rank,
                          ": the MPI library offers thread level ", provided,
                          ", dropk needs MPI_THREAD_SERIALIZED (", MPI_THREAD_SERIALIZED, ")"),
             1);
  }
  // Every rank learns where to probe the others when a collective stalls.
  // Without a listener (no sockets) the timeouts still work, unexplained.
  auto probes = std::make_shared<ProbeTable>();
  absl::StatusOr<ProbeListener> listener = ProbeListener::Open();
  ProbeAddress mine;
  if (listener.ok()) {
    mine = listener->address();
    probes->listener = std::make_unique<ProbeListener>(*std::move(listener));
  }
  probes->peers.resize(size);
  if (MPI_Allgather(&mine, sizeof(mine), MPI_BYTE, probes->peers.data(), sizeof(mine), MPI_BYTE,
                    MPI_COMM_WORLD) != MPI_SUCCESS) {
    probes->peers.clear();
  }
  return std::unique_ptr<Communicator>(new MpiCommunicator(rank, size, std::move(probes)));
}

void AbortJob(const std::string& reason, int exit_code) {
  std::fprintf(stderr, "%s\n", reason.c_str());
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

void AbortJobAfterLauncherGrace(const std::string& reason, int exit_code,
                                std::chrono::seconds grace) {
  std::fprintf(stderr, "%s; waiting up to %lld s for the launcher to end the job\n",
               reason.c_str(), static_cast<long long>(grace.count()));
  std::fflush(stderr);
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  std::this_thread::sleep_for(grace);
  AbortJob("the launcher did not end the job; aborting it", exit_code);
}

namespace {
int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  // Leading digits count: Slurm writes e.g. SLURM_NTASKS_PER_NODE=2(x4).
  return (end != v && n >= 0) ? static_cast<int>(n) : fallback;
}
}  // namespace

bool LaunchedByMpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

int LocalWorldSize() {
  return std::max(1, EnvInt("OMPI_COMM_WORLD_LOCAL_SIZE",
                            EnvInt("MPI_LOCALNRANKS", EnvInt("SLURM_NTASKS_PER_NODE", 1))));
}

int LocalRank() {
  return EnvInt("OMPI_COMM_WORLD_LOCAL_RANK", EnvInt("MPI_LOCALRANKID", EnvInt("SLURM_LOCALID", 0)));
}

}  // namespace dropk
