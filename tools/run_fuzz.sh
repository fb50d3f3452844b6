#!/usr/bin/env bash
# Builds the fuzzers with clang (libFuzzer + ASan + UBSan) in build-fuzz/ and
# runs each for a bounded time (default 60 s): the checkpoint-manifest
# fuzzer, seeded with the manifest of a real checkpoint written by a tiny
# training run; the completion-request fuzzer (request bodies and BPE
# prompts, what a client of dropk-serve controls), seeded with a few bodies;
# and the training-config fuzzer (config files and flags, then the memory
# sizing), seeded with configs/.
#
#   tools/run_fuzz.sh [SECONDS]
#
# Needs clang-14 and libclang-rt-14-dev (apt-get install -y clang-14
# libclang-rt-14-dev), and a normal build in build/ (for the seed run).
# Exit status: 0 when the fuzzers found nothing in the time given.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-60}"
BUILD=build-fuzz
JOBS="${JOBS:-2}"

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DDROPK_FUZZ=ON -DDROPK_NATIVE=OFF -DDROPK_CUDA=OFF -DBUILD_TESTING=OFF >/dev/null
ninja -C "$BUILD" -j "$JOBS" dropk-checkpoint-manifest-fuzzer dropk-completion-request-fuzzer \
  dropk-train-config-fuzzer

# Runs fuzzer NAME (dropk-NAME-fuzzer) over CORPUS for SECONDS_TO_RUN.
run_fuzzer() {
  "$BUILD/bin/dropk-$1-fuzzer" "$2" -max_total_time="$SECONDS_TO_RUN" \
    -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1
}

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
run_fuzzer checkpoint-manifest "$CORPUS"

# Request bodies (mode byte 0) and raw prompts (mode byte 1).
CORPUS="$BUILD/fuzz-corpus/completion_request"
mkdir -p "$CORPUS"
if [ -z "$(ls -A "$CORPUS")" ]; then
  i=0
  for body in '{"prompt":"ROMEO:","max_tokens":16,"temperature":0.8,"top_k":10,"seed":1}' \
      '{"prompt":["a","b c"],"n":2,"stream":true,"logprobs":3,"stop":["\n"],"top_p":0.9}' \
      '{"prompt":[[1,2,3],[50256]],"max_tokens":null,"seed":18446744073709551615}' \
      '{"prompt":"caf\u00e9 \ud83d\ude00","echo":false,"best_of":1,"logit_bias":{}}'; do
    { printf '\x00'; printf '%s' "$body"; } > "$CORPUS/seed-body-$i"
    i=$((i + 1))
  done
  { printf '\x01'; printf "Hello, world! It's 2026: \xe2\x82\xac\xff\xfe  \n\tok"; } > "$CORPUS/seed-prompt"
fi
run_fuzzer completion-request "$CORPUS"

# Config files (mode byte 0) and flag lines (mode byte 1).
CORPUS="$BUILD/fuzz-corpus/train_config"
mkdir -p "$CORPUS"
if [ -z "$(ls -A "$CORPUS")" ]; then
  for config in configs/*.textproto; do
    { printf '\x00'; cat "$config"; } > "$CORPUS/seed-$(basename "$config" .textproto)"
  done
  { printf '\x01'; printf 'n_layer=12\nn_head=12\nn_embd=768\nblock_size=1024\nbatch_size=8\n'; } \
    > "$CORPUS/seed-flags"
fi
run_fuzzer train-config "$CORPUS"
