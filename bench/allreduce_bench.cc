// Allreduce bus bandwidth of dropk's Communicator against raw MPI_Allreduce
// on the same, preallocated buffers, 4 KiB to 256 MiB, in one run.
// Bus bandwidth = 2 (n - 1) / n * bytes / time (the NCCL-tests convention),
// so figures compare across rank counts.
// Usage: mpirun -np 2 dropk-allreduce-bench [--max-mib 256] [--iters N]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"

namespace {

using Clock = std::chrono::steady_clock;

double BusGBps(size_t bytes, double seconds, int n) {
  return 2.0 * (n - 1) / n * static_cast<double>(bytes) / seconds / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("dropk allreduce benchmark");
  int max_mib = 256, min_iters = 5;
  app.add_option("--max-mib", max_mib, "largest buffer, MiB")->check(CLI::PositiveNumber);
  app.add_option("--iters", min_iters, "timed iterations at the largest size")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

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
    std::printf("%d ranks | bus bandwidth GB/s (2(n-1)/n x bytes / time), median of runs\n", n);
    std::printf("%10s %8s %14s %14s %8s\n", "bytes", "iters", "MPI_Allreduce", "Communicator",
                "ratio");
  }
  for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
    const size_t count = bytes / 4;
    const int iters = static_cast<int>(std::clamp<size_t>(max_bytes / bytes, min_iters, 200));
    auto time_median = [&](auto&& once) {
      std::vector<double> t;
      once();  // warm-up
      for (int i = 0; i < iters; ++i) {
        (void)c.Barrier()->Wait();
        const Clock::time_point t0 = Clock::now();
        once();
        t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      std::sort(t.begin(), t.end());
      double median = t[t.size() / 2];
      // The slowest rank's median is the job's.
      (void)c.AllReduce(dropk::HostBuffer(&median, 1), dropk::ReduceOp::kMax)->Wait();
      return median;
    };
    // The communication thread is idle between our Wait()s, so calling MPI
    // here never overlaps its calls (MPI_THREAD_SERIALIZED).
    const double raw = time_median([&] {
      MPI_Allreduce(MPI_IN_PLACE, buffer.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    });
    const double ours = time_median([&] {
      (void)c.AllReduce(dropk::HostBuffer(buffer.data(), count), dropk::ReduceOp::kSum)->Wait();
    });
    if (c.Rank() == 0) {
      std::printf("%10zu %8d %14.2f %14.2f %8.2f\n", bytes, iters, BusGBps(bytes, raw, n),
                  BusGBps(bytes, ours, n), raw / ours);
    }
    std::fill(buffer.begin(), buffer.begin() + count, 1.0f);  // keep values finite
  }
  return 0;
}
