#!/usr/bin/env bash
# The fp32 projections through libxsmm's tiles (dropk's default on AVX-512
# CPUs, model/cpu/xsmm_gemm.h) against OpenBLAS (DROPK_CPU_GEMM=openblas, the
# path before), side by side in one run: dropk-train-throughput-bench on the
# Shakespeare recipe and the small config, the two alternating run by run so
# that a change in the machine's speed hits both, medians of each, and the
# ratio libxsmm / OpenBLAS in tokens/s (> 1: libxsmm is faster).
# Usage: bench/projection_library_bench.sh [BUILD_DIR] [--repeats N] [--steps N]
set -euo pipefail
build=build
repeats=5
steps=10
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats|--steps)
      [ $# -ge 2 ] || { echo "projection_library_bench: $1 needs a value (see --help)" >&2; exit 2; }
      if [ "$1" = --repeats ]; then repeats=$2; else steps=$2; fi
      shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "projection_library_bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
for n in "$repeats" "$steps"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "projection_library_bench: --repeats and --steps take a positive integer, got '$n'" >&2; exit 2; }
done
bin="$build/bin/dropk-train-throughput-bench"
[ -x "$bin" ] || { echo "projection_library_bench: $bin not built (cmake --build $build)" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== fp32 projections: libxsmm tiles against OpenBLAS, same run ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) core(s); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= repeats; ++r)); do
  for library in libxsmm openblas; do
    DROPK_CPU_GEMM=$library "$bin" --config all --steps "$steps" > "$out/$library.$r" 2>&1 || {
      echo "projection_library_bench: $bin failed with DROPK_CPU_GEMM=$library:" >&2
      cat "$out/$library.$r" >&2
      exit 1
    }
  done
done
# Both columns must be what they say: a build without libxsmm, or a CPU it
# does not take, ignores DROPK_CPU_GEMM=libxsmm.
for library in libxsmm openblas; do
  described=$(grep -h -m1 -o 'fp32 projections through [^|,]*' "$out/$library.1" || true)
  echo "  $library run: ${described:-(no line naming the library)}"
  case "$library:$described" in
    libxsmm:*"through libxsmm"*|openblas:*"through OpenBLAS"*) ;;
    *) echo "projection_library_bench: the $library runs did not use $library (see above); nothing to compare" >&2
       exit 1 ;;
  esac
done

# The median tokens/s of `config` over the runs of `library`.
median_tokens() {
  local library=$1 config=$2
  for f in "$out/$library".*; do
    awk -v c="$config" '$1 == c { for (i = 1; i < NF; ++i) if ($(i + 1) == "tokens/s") print $i }' "$f"
  done | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
printf '%-12s %16s %16s %18s\n' config "libxsmm tok/s" "OpenBLAS tok/s" "libxsmm/OpenBLAS"
for config in shakespeare small; do
  x=$(median_tokens libxsmm "$config") && o=$(median_tokens openblas "$config") || {
    echo "projection_library_bench: no tokens/s line for $config in the benchmark's output" >&2
    exit 1
  }
  awk -v c="$config" -v x="$x" -v o="$o" 'BEGIN { printf "%-12s %16s %16s %17.3fx\n", c, x, o, x / o }'
done
echo "(medians of $repeats alternating runs of $steps timed steps each; load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
