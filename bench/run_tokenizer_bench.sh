#!/usr/bin/env bash
# GPT-2 BPE encoding speed: dropk's encoder (MB/s per core, 1 and 2 threads)
# against OpenAI's encoder.py algorithm (tools/gpt2_reference.py, Python) on
# the same text in the same run.
# Usage: bench/run_tokenizer_bench.sh [build dir]   (from the repository root)
set -euo pipefail
build=${1:-build}
"$build/bin/dropk-tokenizer-bench" --max-threads 2
python3 - <<'PY'
import sys, time
sys.path.insert(0, "tools")
import gpt2_reference
enc = gpt2_reference.Encoder("data/gpt2")
text = open("data/tinyshakespeare.txt", encoding="utf-8").read()
start = time.time()
ids = enc.encode(text)
seconds = time.time() - start
print("encoder.py (Python, 1 core, with its piece cache): %.2f MB/s, %d tokens"
      % (len(text.encode()) / 1e6 / seconds, len(ids)))
PY
