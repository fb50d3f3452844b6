#!/usr/bin/env bash
# The main job on the bundled default: installs dependencies, builds,
# prepares Tiny Shakespeare (char-level), trains nanoGPT's CPU recipe
# (configs/shakespeare_char_cpu.textproto) and prints a sample.
# Extra arguments are passed to dropk-train (e.g. --max_iters=200).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/setup.sh
bash tools/build.sh
bin=${DROPK_BUILD_DIR:-$root/build}/bin
if [ ! -f data/shakespeare_char/train.bin ]; then
  "$bin/dropk" data prepare --tokenizer char --out data/shakespeare_char data/tinyshakespeare.txt
fi
"$bin/dropk-train" --config configs/shakespeare_char_cpu.textproto "$@"
