#!/bin/bash
# `dropk launch` over 3 simulated hosts; host 2's processes are killed
# mid-run. The launcher drops host 2, resumes from the newest checkpoint on
# the other 2 with gradient_accumulation_steps 2 -> 3 (global batch kept),
# and the job finishes. With PER_SAMPLE dropout the final model equals an
# uninterrupted one-host run (accumulation 6) within 1e-5 relative.
# Prints the time from the kill to the first step after the relaunch.
# Usage: elastic_relaunch.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
. "$(dirname "$0")/lib.sh"
cluster_up 3
D=$DROPK_CLUSTER_DIR
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null
train_args() {  # train_args OUT_DIR ACCUMULATION
  echo "--config $SRC/configs/tiny_smoke.textproto --data_dir=$D/shared/data --out_dir=$1"\
    "--n_layer=1 --n_embd=32 --block_size=32 --batch_size=2 --gradient_accumulation_steps=$2"\
    "--max_iters=40 --warmup_iters=4 --lr_decay_iters=40 --save_every=5 --eval_interval=20"\
    "--eval_iters=2 --log_interval=1 --sample_tokens=0 --num_threads=1 --dropout_stream=PER_SAMPLE"\
    "--comm_timeout_s=5"
}
# shellcheck disable=SC2046
"$BIN/dropk-train" $(train_args "$D/shared/one" 6) 2>"$D/one.log" || { cat "$D/one.log"; exit 1; }
"$BIN/dropk" ckpt export "$D/shared/one/checkpoints" --out "$D/one.exp" >/dev/null

# shellcheck disable=SC2046
"$CLUSTER_HERE/on_host.sh" 0 "$BIN/dropk" launch --hostfile "$D/hostfile" --max-restarts 1 \
  --mpirun-args "$(cluster_mpirun_args) --map-by node" \
  -- "$BIN/dropk-train" $(train_args "$D/shared/elastic" 2) >"$D/launch.log" 2>&1 &
LAUNCH=$!
until grep -q '^step 12/' "$D/launch.log" 2>/dev/null; do
  kill -0 $LAUNCH 2>/dev/null || { echo "FAIL: the job ended early:"; cat "$D/launch.log"; exit 1; }
  sleep 0.05
done
killed=$(now_ms)
ip netns pids "${DROPK_CLUSTER_ID}h2" | xargs -r kill -9
# The first progress line after the resume: training again.
until sed -n '/resumed from/,$p' "$D/launch.log" | grep -q '^step '; do
  kill -0 $LAUNCH 2>/dev/null || break
  sleep 0.05
done
training_again=$(now_ms)
status=0
wait $LAUNCH || status=$?
if [ $status -ne 0 ] || ! grep -q "restart 1 of at most 1: host 10.77.0.3 lost" "$D/launch.log" ||
    ! grep -q "finished on 2 host(s) after 1 restart" "$D/launch.log"; then
  echo "FAIL: dropk launch (exit $status) did not finish on 2 hosts after dropping host 2:"
  cat "$D/launch.log"; exit 1
fi
grep -q "gradient_accumulation_steps: 2 -> 3" "$D/launch.log" ||
  { echo "FAIL: the relaunch did not keep the global batch:"; cat "$D/launch.log"; exit 1; }
grep -m1 "restart 1 of" "$D/launch.log"
echo "$(grep -m1 'resumed from' "$D/launch.log")"
echo "host lost -> training again after the relaunch: $(seconds $((training_again - killed))) s"
"$BIN/dropk" ckpt export "$D/shared/elastic/checkpoints" --out "$D/elastic.exp" >/dev/null
echo -n "elastic (3 hosts, then 2) vs one host: "
params_differ_by "$D/elastic.exp" "$D/one.exp" 1e-5
