#!/usr/bin/env bash
# Peak memory of `dropk data prepare --tokenizer gpt2` on a corpus larger
# than it should ever hold: generates SIZE_MB of text (Tiny Shakespeare,
# copies numbered so the text is not one repeated block), prepares it with
# /usr/bin/time -v, and prints the peak RSS and the wall time beside the
# input size. Goal: a 2 GB input under 1 GB RSS.
# Usage: bench/run_prepare_rss_bench.sh [SIZE_MB=2048] [build dir] [work dir]
# Needs about 2.5 x SIZE_MB of free disk in the work dir (default /tmp).
set -euo pipefail
size_mb=${1:-2048}
build=${2:-build}
work=$(mktemp -d "${3:-/tmp}/dropk-prepare-rss.XXXXXX")
trap 'rm -rf "$work"' EXIT

input="$work/corpus.txt"
target=$((size_mb * 1024 * 1024))
copy=0
while [ "$(stat -c %s "$input" 2>/dev/null || echo 0)" -lt "$target" ]; do
  # 64 numbered copies per append keep the loop short.
  for _ in $(seq 64); do
    copy=$((copy + 1))
    printf 'Copy %d of the text.\n' "$copy"
    cat data/tinyshakespeare.txt
  done >> "$input"
done
truncate -s "$target" "$input"
echo "input: $(stat -c %s "$input") bytes ($copy copies of data/tinyshakespeare.txt)"

/usr/bin/time -v "$build/bin/dropk" data prepare --tokenizer gpt2 --gpt2-dir data/gpt2 \
    --out "$work/out" "$input" 2> "$work/time.txt"
grep -E "Maximum resident set size|Elapsed \(wall clock\)|Percent of CPU" "$work/time.txt"
rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
echo "peak RSS: $((rss_kb / 1024)) MiB for a $size_mb MiB input (goal: under 1024 MiB for 2048)"
ls -la "$work/out"
