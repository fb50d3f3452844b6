#!/usr/bin/env bash
# Data-parallel benchmarks on one machine, in one run:
#  1. allreduce bus bandwidth, dropk's Communicator against raw MPI_Allreduce
#     on the same buffers, 4 KiB to 256 MiB, 2 ranks;
#  2. training throughput of the foundation benchmark's two configs:
#     1 rank x 2 threads against 2 ranks x 1 thread, overlap on and off,
#     with the communication time per step (total and exposed).
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset so OpenBLAS picks its own
# kernel (see run_train_bench.sh).
# Usage: bench/run_ddp_bench.sh [BUILD_DIR] [--steps N]
set -euo pipefail
build=${1:-build}
shift || true
bin="$build/bin"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }

echo "== allreduce, 2 ranks"
run mpirun -np 2 --oversubscribe "$bin/dropk-allreduce-bench"

echo "== training throughput: 1 rank x 2 threads"
run "$bin/dropk-train-throughput-bench" --threads 2 "$@"
for overlap in true false; do
  echo "== training throughput: 2 ranks x 1 thread, overlap $overlap"
  run mpirun -np 2 --oversubscribe "$bin/dropk-train-throughput-bench" --threads 1 \
    --overlap "$overlap" "$@"
done
