#!/bin/bash
# dropk-serve on host 2 watches a shared checkpoint directory that a 2-host
# trainer (hosts 0 and 1) writes into; it loads each new LATEST and answers
# clients on other hosts over the simulated network.
# Usage: serve_reloads_across_hosts.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
. "$(dirname "$0")/lib.sh"
cluster_up 3
D=$DROPK_CLUSTER_DIR
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null
mkdir -p "$D/shared/run/checkpoints"

"$CLUSTER_HERE/on_host.sh" 2 "$BIN/dropk-serve" --checkpoints "$D/shared/run/checkpoints" --watch \
  --watch-interval-ms 100 --address "$(host_addr 2)" --port 0 --port-file "$D/shared/port" \
  --threads 1 >"$D/serve.log" 2>&1 &
disown $!  # cluster_down ends it with the host's other processes
for _ in $(seq 100); do [ -s "$D/shared/port" ] && break; sleep 0.1; done
[ -s "$D/shared/port" ] || { echo "FAIL: dropk-serve did not start:"; cat "$D/serve.log"; exit 1; }
URL="http://$(host_addr 2):$(cat "$D/shared/port")"
from_host0() { "$CLUSTER_HERE/on_host.sh" 0 curl -s --max-time 5 "$@"; }

# step_served N: waits up to 10 s for /readyz (asked from host 0) to report step N.
step_served() {
  for _ in $(seq 100); do
    from_host0 "$URL/readyz" | grep -q "\"checkpoint_step\":$1[,}]" && return 0
    sleep 0.1
  done
  echo "FAIL: host 2 does not serve step $1: $(from_host0 "$URL/readyz")"; cat "$D/serve.log"; exit 1
}
train() {  # train MAX_ITERS [flags]: hosts 0 and 1 train into the shared directory
  local steps=$1
  shift
  cluster_mpirun -np 2 --map-by node "$BIN/dropk-train" --config "$SRC/configs/tiny_smoke.textproto" \
    --data_dir="$D/shared/data" --out_dir="$D/shared/run" --n_layer=1 --n_embd=32 --block_size=32 \
    --batch_size=2 --max_iters="$steps" --save_every=1000 --eval_interval=1000 --eval_iters=1 \
    --log_interval=5 --sample_tokens=0 --num_threads=1 "$@" >>"$D/train.log" 2>&1 ||
    { echo "FAIL: training"; cat "$D/train.log"; exit 1; }
}
train 5
step_served 5
train 10 --resume=latest
step_served 10
code=$(from_host0 -o "$D/completion.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"prompt": "ROMEO:", "max_tokens": 8, "seed": 1}' "$URL/v1/completions")
[ "$code" = 200 ] || { echo "FAIL: completion from host 0: HTTP $code"; cat "$D/completion.json"; exit 1; }
echo "host 2 served steps 5 then 10 written by hosts 0 and 1; completion: $(cut -c1-100 "$D/completion.json")"
