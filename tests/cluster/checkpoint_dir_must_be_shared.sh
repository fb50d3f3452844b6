#!/bin/bash
# Checkpoints across hosts. With checkpoint_dir on a directory every host
# shares, a 2-host run saves checkpoints that verify. With checkpoint_dir on
# each host's own disk, the run refuses at start, before any step, saying the
# directory must be shared; no host is left with a checkpoint.
# Usage: checkpoint_dir_must_be_shared.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
. "$(dirname "$0")/lib.sh"
cluster_up 2
D=$DROPK_CLUSTER_DIR
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null
train() {
  echo "$BIN/dropk-train --config $SRC/configs/tiny_smoke.textproto --data_dir=$D/shared/data"\
    "--out_dir=$1 --checkpoint_dir=$2 --n_layer=1 --n_embd=32 --block_size=32 --batch_size=3"\
    "--max_iters=6 --save_every=3 --eval_interval=6 --eval_iters=2 --log_interval=3"\
    "--sample_tokens=0 --num_threads=1"
}

# Shared: works, and the newest checkpoint verifies.
# shellcheck disable=SC2046
cluster_mpirun -np 2 --map-by node $(train "$D/shared/run" "$D/shared/ckpt") >"$D/shared.log" 2>&1 ||
  { cat "$D/shared.log"; exit 1; }
"$BIN/dropk" ckpt verify "$D/shared/ckpt" >/dev/null
echo "shared checkpoint_dir: saved and verified"

# Each host's own disk: refused at start.
status=0
# shellcheck disable=SC2046
cluster_mpirun -np 2 --map-by node $(train "$D/local/run" "$D/local/ckpt") >"$D/local.log" 2>&1 || status=$?
if [ $status -eq 0 ] || ! grep -q "checkpoint_dir=$D/local/ckpt.*must be shared" "$D/local.log"; then
  echo "FAIL: a checkpoint_dir that only one host sees was not refused (exit $status):"
  cat "$D/local.log"
  exit 1
fi
if grep -q "step 0 " "$D/local.log" || ls "$D"/disk/h*/ckpt/step-* >/dev/null 2>&1; then
  echo "FAIL: training or saving started before the refusal:"; cat "$D/local.log"; exit 1
fi
echo "per-host checkpoint_dir refused: $(grep -m1 'must be shared' "$D/local.log")"
