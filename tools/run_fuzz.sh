#!/usr/bin/env bash
# Builds the checkpoint-manifest fuzzer with clang (libFuzzer + ASan + UBSan)
# in build-fuzz/ and runs it for a bounded time (default 60 s), seeded with
# the manifest of a real checkpoint written by a tiny training run.
#
#   tools/run_fuzz.sh [SECONDS]
#
# Needs clang-14 and libclang-rt-14-dev (apt-get install -y clang-14
# libclang-rt-14-dev), and a normal build in build/ (for the seed run).
# Exit status: 0 when the fuzzer found nothing in the time given.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-60}"
BUILD=build-fuzz
JOBS="${JOBS:-2}"

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DDROPK_FUZZ=ON -DDROPK_NATIVE=OFF -DBUILD_TESTING=OFF >/dev/null
ninja -C "$BUILD" -j "$JOBS" dropk-checkpoint-manifest-fuzzer

CORPUS="$BUILD/fuzz-corpus/checkpoint_manifest"
mkdir -p "$CORPUS"
if [ -x build/bin/dropk-train ] && [ -z "$(ls -A "$CORPUS")" ]; then
  SEED_DIR="$(mktemp -d)"
  trap 'rm -rf "$SEED_DIR"' EXIT
  build/bin/dropk data prepare --tokenizer char --out "$SEED_DIR/data" data/tinyshakespeare.txt >/dev/null
  build/bin/dropk-train --data_dir="$SEED_DIR/data" --out_dir="$SEED_DIR/run" --n_layer=1 \
    --n_head=1 --n_embd=4 --block_size=4 --batch_size=1 --max_iters=1 --eval_iters=1 \
    --sample_tokens=0 2>/dev/null
  manifest="$SEED_DIR/run/checkpoints/step-00000001/manifest.pb"
  { printf '\x00'; cat "$manifest"; } > "$CORPUS/seed-full"
  { printf '\x01'; cat "$manifest"; } > "$CORPUS/seed-deep"
fi
"$BUILD/bin/dropk-checkpoint-manifest-fuzzer" "$CORPUS" -max_total_time="$SECONDS_TO_RUN" \
  -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1
