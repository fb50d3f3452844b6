#!/usr/bin/env bash
# The main job on the bundled default, the whole system end to end:
#  1. installs dependencies and builds (Release);
#  2. prepares Tiny Shakespeare (char-level);
#  3. trains nanoGPT's CPU recipe (configs/shakespeare_char_cpu.textproto)
#     data-parallel on 2 MPI ranks, writing checkpoints every 500 steps
#     (batch_size is per rank: 2 ranks x 6 keep the recipe's global batch of
#     12); a rerun resumes from the newest checkpoint;
#  4. starts dropk-serve on the checkpoints, fetches a few seeded top-k
#     completions over HTTP, prints them, and stops the service cleanly.
# DROPK_RANKS changes the rank count, DROPK_RUN_DIR the run directory; extra
# arguments go to dropk-train
# (e.g. --max_iters=200).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/setup.sh
bash tools/build.sh
bin=${DROPK_BUILD_DIR:-$root/build}/bin
run_dir=${DROPK_RUN_DIR:-out/shakespeare_char_cpu}

if [ ! -f data/shakespeare_char/train.bin ]; then
  "$bin/dropk" data prepare --tokenizer char --out data/shakespeare_char data/tinyshakespeare.txt
fi

ranks=${DROPK_RANKS:-2}
per_rank=12
[ $((12 % ranks)) -eq 0 ] && per_rank=$((12 / ranks))
# Open MPI refuses to run as root unless told; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== training: mpirun -np $ranks dropk-train (run directory $run_dir)"
mpirun -np "$ranks" --oversubscribe "$bin/dropk-train" \
  --config configs/shakespeare_char_cpu.textproto --batch_size="$per_rank" \
  --out_dir="$run_dir" --resume=latest --sample_tokens=0 "$@"

echo "== serving $run_dir/checkpoints"
port_file=$(mktemp)
trap 'rm -f "$port_file"; [ -n "${serve_pid:-}" ] && kill "$serve_pid" 2>/dev/null || true' EXIT
"$bin/dropk-serve" --checkpoints "$run_dir/checkpoints" --port 0 --port-file "$port_file" &
serve_pid=$!
for _ in $(seq 1 300); do
  [ -s "$port_file" ] && curl -sf "http://127.0.0.1:$(cat "$port_file")/readyz" >/dev/null && break
  kill -0 "$serve_pid" 2>/dev/null || { echo "dropk-serve exited early" >&2; exit 1; }
  sleep 0.1
done
url="http://127.0.0.1:$(cat "$port_file")"
curl -sf "$url/v1/models"
echo
for seed in 1 2 3; do
  echo "== completion: prompt 'ROMEO:', top_k 10, temperature 0.8, seed $seed"
  "$bin/dropk" sample --url "$url" --prompt "ROMEO:" --top-k 10 --temperature 0.8 \
    --seed "$seed" --max-tokens 200
  echo
done
kill -TERM "$serve_pid"
wait "$serve_pid"
serve_pid=
echo "== dropk-serve stopped cleanly"
