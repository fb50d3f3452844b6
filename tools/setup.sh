#!/usr/bin/env bash
# Installs every system dependency of dropk from Debian 12's packages.
# Idempotent: when everything is already present it only checks and returns.
# Usage: tools/setup.sh   (as root, or with sudo available)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  openmpi-bin libopenmpi-dev                 # MPI backend, mpirun
  protobuf-compiler libprotobuf-dev          # configs, tokenizer, checkpoints
  libboost-dev libboost-system-dev           # Asio/Beast for the sampling service
  libopenblas-openmp-dev                     # sgemm; the OpenMP build shares our thread pool and runs
                                             # single-threaded inside our parallel regions
  libgtest-dev libgmock-dev                  # unit tests
  libcli11-dev                               # command-line flags
  nlohmann-json3-dev                         # JSON for metrics and the HTTP API
  libdnnl-dev                                # oneDNN: bf16 matmuls on the CPU (precision: BF16), AMX / AVX512-BF16 at run time
  libxsmm-dev                                # libxsmm: JIT AVX-512 kernels for the fp32 projections (static; optional at build time)
  libpcre2-dev                               # GPT-2's pre-tokenization regex: Unicode categories, JIT
  libabsl-dev                                # absl::Status / StatusOr for errors users can cause
  libomp-dev                                 # not needed by g++ (libgomp), kept for clang builds
  curl                                       # the main job and the service's end-to-end tests
  gnuplot-nox                                # dropk plot and the studies (PNG through cairo)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
