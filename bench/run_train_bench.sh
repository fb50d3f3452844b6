#!/usr/bin/env bash
# Training-throughput benchmark, run twice: with the machine's OpenBLAS
# settings as they are, then with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset
# so OpenBLAS picks its own kernel (AVX-512 where the CPU has it). Some
# machines preset OPENBLAS_CORETYPE=Haswell for old OpenBLAS builds; tests and
# CI keep it, only this benchmark lifts it.
# Usage: bench/run_train_bench.sh [BUILD_DIR] [extra flags for the binary]
set -euo pipefail
build=${1:-build}
shift || true
bin="$build/bin/dropk-train-throughput-bench"
[ -x "$bin" ] || { echo "run_train_bench: $bin not built (cmake --build $build)" >&2; exit 1; }
echo "== as configured (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"
"$bin" "$@"
echo "== OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$bin" "$@"
