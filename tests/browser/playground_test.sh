#!/usr/bin/env bash
# ctest's playground_browser test: trains a tiny model, serves it with an API
# key, and runs playground.test.mjs in headless chromium against it.
# Usage: playground_test.sh BUILD_DIR [SCREENSHOT.png]
# Exit 77 (ctest: skipped) with one line saying why when chromium, node or
# playwright-core is missing (tools/setup_tests.sh installs all three).
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
screenshot=${2:-$build/playground.png}

skip() { echo "SKIPPED playground browser test: $*"; exit 77; }
chromium=${DROPK_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || skip "no chromium at $chromium (apt-get install chromium)"
command -v node >/dev/null || skip "node is not installed"
[ -d "$here/node_modules/playwright-core" ] || skip "playwright-core is not installed (npm ci --prefix tests/browser)"
# Chromium must be able to start here (it cannot in some sandboxes).
"$chromium" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
  --dump-dom about:blank >/dev/null 2>&1 || skip "chromium cannot start on this machine"

work=$(mktemp -d /tmp/dropk_playground.XXXXXX)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# DROPK_PLAYGROUND_CHECKPOINTS serves an existing run instead (for a screenshot of a real model).
checkpoints=${DROPK_PLAYGROUND_CHECKPOINTS:-}
if [ -z "$checkpoints" ]; then
  head -c 200000 "$root/data/tinyshakespeare.txt" > "$work/corpus.txt"
  "$build/bin/dropk" data prepare --tokenizer char --out "$work/data" "$work/corpus.txt" >/dev/null
  OMP_WAIT_POLICY=PASSIVE "$build/bin/dropk-train" --config "$root/configs/shakespeare_char_cpu.textproto" \
    --data_dir="$work/data" --out_dir="$work/run" --max_iters=60 --eval_interval=60 --eval_iters=2 \
    --n_layer=2 --n_embd=64 --n_head=2 --num_threads=1 --sample_tokens=0 2>"$work/train.log" \
    || { cat "$work/train.log"; exit 1; }
  checkpoints=$work/run/checkpoints
fi

printf 'playground-secret-key' > "$work/key"
"$build/bin/dropk-serve" --checkpoints "$checkpoints" --port 0 --port-file "$work/port" \
  --api-key-file "$work/key" --threads 1 >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || { echo "dropk-serve did not start:"; cat "$work/serve.log"; exit 1; }
url="http://127.0.0.1:$(cat "$work/port")/"

node "$here/playground.test.mjs" "$url" "playground-secret-key" "$screenshot" \
  || { echo "--- dropk-serve log"; tail -20 "$work/serve.log"; exit 1; }
echo "screenshot: $screenshot"
