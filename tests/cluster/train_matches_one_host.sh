#!/bin/bash
# Data-parallel training over 2 and 3 simulated hosts (TCP only) ends with the
# parameters of the one-host run, within 1e-5 relative: PER_SAMPLE dropout and
# the same global batch (6 sequences) make it the same computation.
# Usage: train_matches_one_host.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
. "$(dirname "$0")/lib.sh"
cluster_up 3
D=$DROPK_CLUSTER_DIR
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null

train() {  # train OUT_DIR BATCH_SIZE: the tiny run every case shares
  echo "--config $SRC/configs/tiny_smoke.textproto --data_dir=$D/shared/data --out_dir=$1"\
    "--n_layer=1 --n_embd=32 --block_size=32 --batch_size=$2 --max_iters=12 --warmup_iters=2"\
    "--eval_interval=6 --eval_iters=2 --log_interval=3 --sample_tokens=0 --num_threads=1"\
    "--dropout_stream=PER_SAMPLE"
}
# shellcheck disable=SC2046
"$BIN/dropk-train" $(train "$D/shared/one" 6) 2>"$D/one.log" || { cat "$D/one.log"; exit 1; }
"$BIN/dropk" ckpt export "$D/shared/one/checkpoints" --out "$D/one.exp" >/dev/null

for hosts in 2 3; do
  # shellcheck disable=SC2046
  cluster_mpirun -np $hosts --map-by node "$BIN/dropk-train" $(train "$D/shared/h$hosts" $((6 / hosts))) \
    >"$D/h$hosts.log" 2>&1 || { cat "$D/h$hosts.log"; exit 1; }
  grep -q "$hosts rank(s) over mpi" "$D/h$hosts.log" || { cat "$D/h$hosts.log"; exit 1; }
  "$BIN/dropk" ckpt export "$D/shared/h$hosts/checkpoints" --out "$D/h$hosts.exp" >/dev/null
  echo -n "$hosts hosts vs one: "
  params_differ_by "$D/h$hosts.exp" "$D/one.exp" 1e-5
done
