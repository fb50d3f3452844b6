#include "comm/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"  // after mpi.h: MPI_CHECK
#include "comm/peer_lost.h"
#include "comm/peer_probe.h"
#include "device_staging.h"
#include "ring_allreduce.h"

namespace dropk {
namespace {

#ifdef DROPK_HAS_CUDA
constexpr bool kStagesDeviceBuffers = true;
#else
constexpr bool kStagesDeviceBuffers = false;
#endif

MPI_Op ToMpi(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

using Clock = std::chrono::steady_clock;

// Runs a collective, or goes on with it, until it completes (returns its
// status) or `deadline` passes (nullopt: call again later to go on).
// Collectives made of blocking MPI calls ignore the deadline.
using RunFn = std::function<std::optional<absl::Status>(Clock::time_point deadline)>;

// One issued collective and its outcome, shared by the caller's Work handle
// and whoever runs it.
struct Operation {
  std::string name;  // e.g. "AllReduce #12 (1048576 x float32)"
  RunFn run;
  // The run honours its deadline (a polled host AllReduce), so a caller
  // waiting on it may run it itself without giving up its timeout.
  bool caller_may_run = false;
  // Where it stands when it times out (a ring AllReduce says which peer it
  // waits on); null: nothing to say.
  std::function<std::optional<RingAllReducer::Stall>()> stall;
  Clock::time_point issued;
  std::chrono::milliseconds timeout;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  absl::Status status;
  double run_seconds = 0;
};

// The collectives issued and not completed, in issue order, and whether a
// thread is running one (that thread alone makes MPI calls: MPI is
// initialised MPI_THREAD_SERIALIZED). Shared by the communicator, its
// communication thread and its Work handles.
struct OperationQueue {
  std::mutex mu;
  std::condition_variable cv;                      // the communication thread waits on it
  std::deque<std::shared_ptr<Operation>> pending;  // front: the next to run or go on with
  bool running = false;
  bool stopping = false;
  // The communication thread waits without a deadline, so only a notify
  // wakes it; otherwise it looks at the queue every kCallerGrace by itself.
  bool thread_asleep = false;
  Clock::time_point last_issued;  // when the newest collective was issued
};

// Runs op until it completes or `deadline` passes; returns its status when
// it completed. Adds the time spent to op.run_seconds.
std::optional<absl::Status> RunOperation(Operation& op, Clock::time_point deadline) {
  const Clock::time_point start = Clock::now();
  std::optional<absl::Status> status = op.run(deadline);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::lock_guard<std::mutex> lock(op.mu);
  op.run_seconds += seconds;
  return status;
}

// Records op's outcome and wakes its waiters.
void Complete(Operation& op, absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(op.mu);
    op.status = std::move(status);
    op.done = true;
  }
  op.done_cv.notify_all();
}

// Where every rank of the job can be probed (index = rank), and this rank's
// listener that answers for it. Shared by the communicator and its Work
// handles.
struct ProbeTable {
  std::vector<ProbeAddress> peers;
  std::unique_ptr<ProbeListener> listener;
};

// Why the collective `name` did not finish on `rank`: the peers that do not
// answer a TCP probe are named (Unavailable); when all answer, the cause is
// one that a probe cannot see (DeadlineExceeded). The former is marked as a
// lost peer (comm/peer_lost.h): only that cause leaves ending the job to
// the launcher.
absl::Status DescribeTimeout(const std::string& name, int rank, std::chrono::milliseconds timeout,
                             const ProbeTable* probes,
                             const std::optional<RingAllReducer::Stall>& stall) {
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
        lost.push_back(
            absl::StrCat(who, " is unreachable (no answer within 2 s: link down or host lost)"));
      } else if (states[r] == PeerState::kRefused) {
        lost.push_back(absl::StrCat(who, " is gone (its host refuses: the process died)"));
      }
    }
  }
  if (!lost.empty()) return PeerLostError(head + absl::StrJoin(lost, "; "));
  // The peer a ring AllReduce waits on: with two ranks the one not taking
  // part; with more, the stuck rank or one it holds up, nearer in the ring.
  std::string waiting;
  if (stall) {
    const bool known = probes != nullptr && stall->peer < static_cast<int>(probes->peers.size());
    const std::string who = absl::StrCat(
        "rank ", stall->peer,
        known ? absl::StrCat(" (", FirstAddressText(probes->peers[stall->peer]), ")") : "");
    waiting = absl::StrCat("; this rank waits ",
                           stall->receiving ? absl::StrCat("on data from ", who)
                                            : absl::StrCat("for ", who, " to take its data"),
                           ", step ", stall->step, " of ", stall->steps, " of the ring");
  }
  return absl::DeadlineExceededError(
      head + "another rank is not taking part" + waiting +
      " (stuck, or issuing collectives in a different order; every peer answers on the "
      "network)");
}

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<Operation> op, std::shared_ptr<OperationQueue> queue, int rank,
          std::shared_ptr<const ProbeTable> probes)
      : op_(std::move(op)), queue_(std::move(queue)), rank_(rank), probes_(std::move(probes)) {}

  absl::Status Wait() override {
    if (op_->caller_may_run && RunHereIfNext()) {
      std::lock_guard<std::mutex> lock(op_->mu);
      if (op_->done) return op_->status;
      // Not done by the deadline: the communication thread goes on with it.
      return DescribeTimeout(op_->name, rank_, op_->timeout, probes_.get(),
                             op_->stall ? op_->stall() : std::nullopt);
    }
    std::unique_lock<std::mutex> lock(op_->mu);
    if (!op_->done_cv.wait_for(lock, op_->timeout, [&] { return op_->done; })) {
      lock.unlock();
      return DescribeTimeout(op_->name, rank_, op_->timeout, probes_.get(),
                             op_->stall ? op_->stall() : std::nullopt);
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
  // When this operation is the next to run and no thread is running one,
  // runs it on the calling thread until it completes or its timeout passes
  // (then hands it back to the communication thread, which goes on with
  // it) and returns true. Handing it to the communication thread instead
  // would cost two thread wake-ups, several microseconds each on a busy
  // machine, against the 15-20 us that a 64 KiB allreduce takes between two
  // ranks of one machine.
  bool RunHereIfNext() {
    {
      std::lock_guard<std::mutex> lock(queue_->mu);
      if (queue_->running || queue_->pending.empty() || queue_->pending.front() != op_) {
        return false;  // done, running, or queued behind others
      }
      queue_->pending.pop_front();
      queue_->running = true;
    }
    std::optional<absl::Status> status = RunOperation(*op_, Clock::now() + op_->timeout);
    bool more = false;
    {
      std::lock_guard<std::mutex> lock(queue_->mu);
      queue_->running = false;
      if (!status.has_value()) queue_->pending.push_front(op_);
      more = !queue_->pending.empty();
    }
    if (more) queue_->cv.notify_one();
    if (status.has_value()) Complete(*op_, *std::move(status));
    return true;
  }

  std::shared_ptr<Operation> op_;
  std::shared_ptr<OperationQueue> queue_;
  int rank_;
  std::shared_ptr<const ProbeTable> probes_;  // null: no probing
};

// How long the communication thread leaves a collective that its caller may
// run (Operation::caller_may_run) to the caller: a caller that waits on it
// sooner runs it itself (MpiWork::RunHereIfNext). Issuing one wakes no
// thread either: while collectives keep coming (within kThreadAwakeFor of
// the newest) the thread looks at the queue this often by itself, and only
// an asleep thread is notified. Each wake-up takes a core from a rank that
// is polling inside a collective; one per collective cost 0.3-0.5x of raw
// MPI_Allreduce's speed from 16 to 64 KiB (bench/allreduce_bench, 2 ranks
// on 2 cores). A millisecond is short against a backward pass, so gradient
// buckets launched during backward still overlap it.
constexpr std::chrono::microseconds kCallerGrace{1000};
constexpr std::chrono::milliseconds kThreadAwakeFor{200};

class MpiCommunicator final : public Communicator {
 public:
  // ring_comm: a dup of MPI_COMM_WORLD for AllReduce's point-to-point
  // messages; freed here.
  MpiCommunicator(int rank, int size, std::shared_ptr<const ProbeTable> probes, MPI_Comm ring_comm)
      : rank_(rank),
        size_(size),
        probes_(std::move(probes)),
        ring_comm_(ring_comm),
        ring_(ring_comm, rank, size),
        queue_(std::make_shared<OperationQueue>()) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(queue_->mu);
      queue_->stopping = true;
    }
    queue_->cv.notify_all();
    thread_.join();
    MPI_Comm_free(&ring_comm_);
    MPI_Finalize();
  }

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string BackendName() const override { return "mpi"; }

  std::unique_ptr<Work> AllReduce(Buffer buffer, ReduceOp op,
                                  const CollectiveOptions& options) override {
    const std::string name = Describe("AllReduce", buffer);
    if (absl::Status s = CheckMemory(buffer, name); !s.ok()) return Failed(name, s);
    if (buffer.memory == MemoryKind::kHost) {
      // Polled, so that the caller's Wait() may run it (see MpiWork).
      auto ring_id = std::make_shared<std::atomic<uint64_t>>(0);
      return Enqueue(
          name, options, /*caller_may_run=*/true,
          [this, buffer, op,
           ring_id](Clock::time_point deadline) mutable -> std::optional<absl::Status> {
            if (ring_id->load() == 0) ring_id->store(ring_.Start(buffer, op));
            absl::StatusOr<bool> done = ring_.Poll(deadline);
            if (!done.ok()) return done.status();
            if (!*done) return std::nullopt;
            return absl::OkStatus();
          },
          [this, ring_id] { return ring_.StallOf(ring_id->load()); });
    }
    void* ready = options.ready_event;
    return Enqueue(name, options, [this, buffer, op, ready]() -> absl::Status {
      absl::StatusOr<Buffer> host = StageIn(buffer, 0, true, ready);
      if (!host.ok()) return host.status();
      ring_.Start(*host, op);
      absl::StatusOr<bool> done = ring_.Poll(Clock::time_point::max());
      if (!done.ok()) return done.status();
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
        MPI_CHECK(MPI_Bcast(static_cast<char*>(host->data) + off * elem, n, MpiType(buffer.type),
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
      return Failed(name, absl::InvalidArgumentError(
                              absl::StrCat(name, ": output must hold ", size_, " x ", input.count,
                                           " elements of the input's type, has ", output.count)));
    }
    if (input.count > kMaxChunk) {
      return Failed(name, absl::UnimplementedError(
                              absl::StrCat(name, ": more than ", kMaxChunk, " elements per rank")));
    }
    void* ready = options.ready_event;
    return Enqueue(name, options, [this, input, output, ready]() -> absl::Status {
      absl::StatusOr<Buffer> in = StageIn(input, 0, true, ready);
      if (!in.ok()) return in.status();
      absl::StatusOr<Buffer> out = StageIn(output, 1, false, nullptr);
      if (!out.ok()) return out.status();
      MPI_CHECK(MPI_Allgather(in->data, static_cast<int>(input.count), MpiType(input.type),
                              out->data, static_cast<int>(input.count), MpiType(input.type),
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
      return Failed(name, absl::InvalidArgumentError(
                              absl::StrCat(name, ": input must hold ", size_, " x ", output.count,
                                           " elements of the output's type, has ", input.count)));
    }
    if (output.count > kMaxChunk) {
      return Failed(name, absl::UnimplementedError(
                              absl::StrCat(name, ": more than ", kMaxChunk, " elements per rank")));
    }
    void* ready = options.ready_event;
    return Enqueue(name, options, [this, input, output, op, ready]() -> absl::Status {
      absl::StatusOr<Buffer> in = StageIn(input, 0, true, ready);
      if (!in.ok()) return in.status();
      absl::StatusOr<Buffer> out = StageIn(output, 1, false, nullptr);
      if (!out.ok()) return out.status();
      MPI_CHECK(MPI_Reduce_scatter_block(in->data, out->data, static_cast<int>(output.count),
                                         MpiType(input.type), ToMpi(op), MPI_COMM_WORLD));
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
      return absl::UnimplementedError(
          absl::StrCat(name, " on rank ", rank_,
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
      return absl::Status(
          host.status().code(),
          absl::StrCat("rank ", rank_, ": staging a CUDA buffer: ", host.status().message()));
    }
    return host;
  }
  absl::Status StageOut(const Buffer& b, int slot) {
    if (b.memory == MemoryKind::kHost) return absl::OkStatus();
    absl::Status s = staging_.StageOut(b, slot);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("rank ", rank_,
                                                 ": copying a staged result "
                                                 "back to the GPU: ",
                                                 s.message()));
    }
    return s;
  }

  std::unique_ptr<Work> Failed(const std::string& name, absl::Status status) {
    auto op = std::make_shared<Operation>();
    op->name = name;
    op->timeout = std::chrono::milliseconds(0);
    op->done = true;
    op->status = std::move(status);
    return std::make_unique<MpiWork>(std::move(op), queue_, rank_, probes_);
  }

  // Queues a collective made of blocking MPI calls, for the communication
  // thread.
  std::unique_ptr<Work> Enqueue(const std::string& name, const CollectiveOptions& options,
                                std::function<absl::Status()> run) {
    return Enqueue(
        name, options, /*caller_may_run=*/false,
        [run = std::move(run)](Clock::time_point) -> std::optional<absl::Status> { return run(); });
  }

  std::unique_ptr<Work> Enqueue(
      const std::string& name, const CollectiveOptions& options, bool caller_may_run, RunFn run,
      std::function<std::optional<RingAllReducer::Stall>()> stall = nullptr) {
    auto op = std::make_shared<Operation>();
    op->name = name;
    op->run = std::move(run);
    op->stall = std::move(stall);
    op->caller_may_run = caller_may_run;
    op->issued = Clock::now();
    op->timeout = options.timeout;
    bool wake = !caller_may_run;
    {
      std::lock_guard<std::mutex> lock(queue_->mu);
      queue_->pending.push_back(op);
      queue_->last_issued = op->issued;
      wake = wake || queue_->thread_asleep;
    }
    // A collective that the caller may run is left to it for kCallerGrace;
    // the thread, when awake, finds it by itself after that.
    if (wake) queue_->cv.notify_one();
    return std::make_unique<MpiWork>(std::move(op), queue_, rank_, probes_);
  }

  // The communication thread: runs the queued collectives in issue order,
  // each to completion (the caller's Wait() gives up at the timeout, not
  // this thread), except those a waiting caller runs itself. It leaves a
  // collective that its caller may run kCallerGrace to be claimed first.
  void Loop() {
    OperationQueue& q = *queue_;
    std::unique_lock<std::mutex> lock(q.mu);
    // Just finished a collective: the next one queued behind it (gradient
    // buckets issued during backward) starts at once, grace or not, since
    // its caller was not waiting to run it.
    bool busy = false;
    for (;;) {
      const Clock::time_point now = Clock::now();
      if (q.stopping && q.pending.empty()) return;  // drained
      const bool can_take = !q.pending.empty() && !q.running;
      const Clock::time_point start_at = can_take ? q.pending.front()->issued + kCallerGrace : now;
      if (can_take &&
          (!q.pending.front()->caller_may_run || q.stopping || busy || now >= start_at)) {
        std::shared_ptr<Operation> op = q.pending.front();
        q.pending.pop_front();
        q.running = true;
        lock.unlock();
        std::optional<absl::Status> status = RunOperation(*op, Clock::time_point::max());
        lock.lock();
        // Free before the waiter wakes, so that it finds no thread running
        // when it issues its next collective and waits on it (MpiWork).
        q.running = false;
        lock.unlock();
        Complete(*op, status.value_or(absl::InternalError(op->name + ": did not complete")));
        lock.lock();
        busy = true;
        continue;
      }
      busy = false;
      if (can_take) {
        q.cv.wait_until(lock, start_at);  // the caller's grace
      } else if (now < q.last_issued + kThreadAwakeFor) {
        // Nothing to take now (or a caller is running one): look again
        // soon, for collectives issued without a wake-up.
        q.cv.wait_until(lock, now + kCallerGrace);
      } else {
        q.thread_asleep = true;
        q.cv.wait(lock);
        q.thread_asleep = false;
      }
    }
  }

  const int rank_, size_;
  const std::shared_ptr<const ProbeTable> probes_;
  uint64_t sequence_ = 0;
  MPI_Comm ring_comm_;
  RingAllReducer ring_;    // used by the thread running an operation only
  DeviceStaging staging_;  // used by the thread running an operation only
  const std::shared_ptr<OperationQueue> queue_;
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
    AbortJob(absl::StrCat("rank ", rank, ": the MPI library offers thread level ", provided,
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
  // AllReduce's own messages travel on a communicator of their own, so they
  // can never match anything else sent on MPI_COMM_WORLD.
  MPI_Comm ring_comm = MPI_COMM_NULL;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &ring_comm) != MPI_SUCCESS) {
    AbortJob(absl::StrCat("rank ", rank, ": MPI_Comm_dup(MPI_COMM_WORLD) failed"), 1);
  }
  return std::unique_ptr<Communicator>(
      new MpiCommunicator(rank, size, std::move(probes), ring_comm));
}

void AbortJob(const std::string& reason, int exit_code, const std::function<void()>& after_report) {
  std::fprintf(stderr, "%s\n", reason.c_str());
  std::fflush(stderr);
  if (after_report) after_report();
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

void AbortJobAfterLauncherGrace(const std::string& reason, int exit_code,
                                std::chrono::seconds grace,
                                const std::function<void()>& after_report) {
  std::fprintf(stderr, "%s; waiting up to %lld s for the launcher to end the job\n", reason.c_str(),
               static_cast<long long>(grace.count()));
  std::fflush(stderr);
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  if (after_report) after_report();
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

int LauncherWorldSize() {
  return std::max(1, EnvInt("OMPI_COMM_WORLD_SIZE", EnvInt("PMI_SIZE", 1)));
}

int LocalRank() {
  return EnvInt("OMPI_COMM_WORLD_LOCAL_RANK",
                EnvInt("MPI_LOCALRANKID", EnvInt("SLURM_LOCALID", 0)));
}

}  // namespace dropk
