// Allreduce bus bandwidth of dropk's Communicator against raw MPI_Allreduce
// on the same, preallocated buffer, 4 KiB to 256 MiB, in one run.
// Bus bandwidth = 2 (n - 1) / n * bytes / time (the NCCL-tests convention),
// so figures compare across rank counts.
//
// Fairness: both run on the same buffer, after the same warm-up, each
// timed from an MPI_Barrier to its return on the calling thread (the
// Communicator's AllReduce(...)->Wait(), everything a caller pays). The two
// alternate within each round, in swapped order every other round, so that
// load from other processes on a shared machine falls on both alike. Each
// rank takes the median of its rounds; the job's figure is the slowest
// rank's median. ratio = MPI_Allreduce time / Communicator time (above 1:
// the Communicator is faster).
// Usage: mpirun -np 2 dropk-allreduce-bench [--max-mib 256] [--rounds N]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>
#include <optional>

#include "bench_flags.h"

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"

namespace {

using Clock = std::chrono::steady_clock;

double BusGBps(size_t bytes, double seconds, int n) {
  return 2.0 * (n - 1) / n * static_cast<double>(bytes) / seconds / 1e9;
}

// The slowest rank's median of `times`.
double JobMedian(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  double median = times[times.size() / 2];
  MPI_Allreduce(MPI_IN_PLACE, &median, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return median;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("dropk allreduce benchmark");
  int max_mib = 256, min_rounds = 11;
  app.add_option("--max-mib", max_mib, "largest buffer, MiB")->check(CLI::PositiveNumber);
  app.add_option("--rounds", min_rounds, "timed rounds at the largest size (more below)")
      ->check(CLI::PositiveNumber);
  if (std::optional<int> code = dropk::ParseBenchFlags(app, argc, argv, "dropk-allreduce-bench")) {
    return *code;
  }

  if (!dropk::LaunchedByMpi()) {
    std::fprintf(stderr, "dropk-allreduce-bench: run it under mpirun -np 2 (or more)\n");
    return 2;
  }
  auto comm = dropk::MakeMpiCommunicator();
  if (!comm.ok()) {
    std::fprintf(stderr, "%s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  dropk::Communicator& c = **comm;
  const int n = c.Size();
  const size_t max_bytes = static_cast<size_t>(max_mib) << 20;
  // One buffer, allocated and touched once: first-touch page faults would
  // otherwise dominate large sizes (about 11 us per 4 KiB page here).
  std::vector<float> buffer(max_bytes / 4, 1.0f);
  if (c.Rank() == 0) {
    std::printf(
        "%d ranks | bus bandwidth GB/s (2(n-1)/n x bytes / time), slowest rank's median,"
        " alternating rounds\n",
        n);
    std::printf("%10s %8s %14s %14s %8s\n", "bytes", "rounds", "MPI_Allreduce", "Communicator",
                "ratio");
  }
  for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
    const size_t count = bytes / 4;
    const int rounds = static_cast<int>(std::clamp<size_t>(max_bytes / bytes, min_rounds, 200));
    // Every Communicator collective has completed before the next raw MPI
    // call, so its thread makes no MPI call meanwhile (MPI_THREAD_SERIALIZED).
    auto raw = [&] {
      MPI_Allreduce(MPI_IN_PLACE, buffer.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    };
    auto ours = [&] {
      (void)c.AllReduce(dropk::HostBuffer(buffer.data(), count), dropk::ReduceOp::kSum)->Wait();
    };
    auto timed = [&](auto&& once) {
      MPI_Barrier(MPI_COMM_WORLD);
      const Clock::time_point t0 = Clock::now();
      once();
      return std::chrono::duration<double>(Clock::now() - t0).count();
    };
    for (int i = 0; i < 2; ++i) {  // warm-up: connections, scratch memory, caches
      raw();
      ours();
    }
    std::vector<double> raw_s, ours_s;
    for (int i = 0; i < rounds; ++i) {
      if (i % 2 == 0) {
        raw_s.push_back(timed(raw));
        ours_s.push_back(timed(ours));
      } else {
        ours_s.push_back(timed(ours));
        raw_s.push_back(timed(raw));
      }
    }
    const double raw_median = JobMedian(raw_s), ours_median = JobMedian(ours_s);
    if (c.Rank() == 0) {
      std::printf("%10zu %8d %14.2f %14.2f %8.2f\n", bytes, rounds, BusGBps(bytes, raw_median, n),
                  BusGBps(bytes, ours_median, n), raw_median / ours_median);
      std::fflush(stdout);
    }
    std::fill(buffer.begin(), buffer.begin() + count, 1.0f);  // keep values finite
  }
  return 0;
}
