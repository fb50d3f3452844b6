#!/usr/bin/env bash
# The main job on the bundled default: installs dependencies, builds,
# prepares Tiny Shakespeare (char-level), trains nanoGPT's CPU recipe
# (configs/shakespeare_char_cpu.textproto) data-parallel on 2 MPI ranks and
# prints a sample. batch_size is per rank, so 2 ranks x 6 keep the recipe's
# global batch of 12. DROPK_RANKS changes the rank count (batch_size then
# stays 12 / ranks when that divides, else 12 per rank); extra arguments are
# passed to dropk-train (e.g. --max_iters=200).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/setup.sh
bash tools/build.sh
bin=${DROPK_BUILD_DIR:-$root/build}/bin
if [ ! -f data/shakespeare_char/train.bin ]; then
  "$bin/dropk" data prepare --tokenizer char --out data/shakespeare_char data/tinyshakespeare.txt
fi
ranks=${DROPK_RANKS:-2}
per_rank=12
[ $((12 % ranks)) -eq 0 ] && per_rank=$((12 / ranks))
# Open MPI refuses to run as root unless told; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -np "$ranks" --oversubscribe "$bin/dropk-train" \
  --config configs/shakespeare_char_cpu.textproto --batch_size="$per_rank" "$@"
