#!/bin/bash
# `dropk launch` over a hostfile of bare host names (no slots=), which is
# one rank per host to dropk. Open MPI gives such a line the host's core
# count, so both ranks started on host 0; the launcher, waiting for a rank
# on host 1, dropped it after --startup-timeout-s and finished on one host.
# The job's hostfile now states each host's slots: one rank starts on each
# host and the job finishes on both without a restart. (The training runs
# past --startup-timeout-s, so that ranks piled onto host 0 are seen.)
# Usage: launch_bare_host_names.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
. "$(dirname "$0")/lib.sh"
cluster_up 2
D=$DROPK_CLUSTER_DIR
printf '%s\n%s\n' "$(host_addr 0)" "$(host_addr 1)" >"$D/hostfile"
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null
status=0
# No --map-by: Open MPI's default mapping fills a host's slots first.
timeout 100 "$CLUSTER_HERE/on_host.sh" 0 "$BIN/dropk" launch --hostfile "$D/hostfile" \
  --max-restarts 1 --startup-timeout-s 2 --mpirun-args "$(cluster_mpirun_args)" \
  -- "$BIN/dropk-train" --config "$SRC/configs/tiny_smoke.textproto" --data_dir="$D/shared/data" \
  --out_dir="$D/shared/run" --n_layer=1 --n_embd=32 --block_size=32 --batch_size=2 \
  --max_iters=3000 --warmup_iters=4 --lr_decay_iters=3000 --eval_interval=1000 --eval_iters=1 \
  --sample_tokens=0 --num_threads=1 --comm_timeout_s=5 >"$D/launch.log" 2>&1 || status=$?
if [ $status -ne 0 ] || ! grep -q "finished on 2 host(s) after 0 restart(s)" "$D/launch.log"; then
  echo "FAIL: dropk launch exited $status, not finishing on 2 hosts without a restart:"
  cat "$D/launch.log"; exit 1
fi
echo "bare host names -> one rank on each of 2 hosts, finished without a restart"
