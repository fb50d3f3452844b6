#!/bin/bash
# `dropk launch` over 3 simulated hosts, host 2's link cut before the start:
# its daemon never reports back to mpirun, which waited for it for good,
# with no rank started and no output. After --startup-timeout-s the
# launcher kills mpirun's process group; as Open MPI starts no rank until
# every daemon has reported, no host has a started rank, so it runs mpirun
# on each host alone, names host 2 as the one that cannot start, and
# relaunches on the other 2, which finish the job.
# Usage: launch_names_hosts_down_at_start.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
. "$(dirname "$0")/lib.sh"
cluster_up 3
D=$DROPK_CLUSTER_DIR
LIMIT_S=90  # the 10 s timeout, 10 s of probes, the 5 s drain of a killed group, 20 steps
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null
host_link 2 down
start=$(now_ms)
status=0
timeout $((LIMIT_S + 30)) "$CLUSTER_HERE/on_host.sh" 0 "$BIN/dropk" launch --hostfile "$D/hostfile" \
  --max-restarts 1 --startup-timeout-s 10 --mpirun-args "$(cluster_mpirun_args) --map-by node" \
  -- "$BIN/dropk-train" --config "$SRC/configs/tiny_smoke.textproto" --data_dir="$D/shared/data" \
  --out_dir="$D/shared/run" --n_layer=1 --n_embd=32 --block_size=32 --batch_size=2 \
  --gradient_accumulation_steps=2 \
  --max_iters=20 --warmup_iters=4 --lr_decay_iters=20 --eval_interval=1000 --eval_iters=1 \
  --sample_tokens=0 --num_threads=1 --comm_timeout_s=5 >"$D/launch.log" 2>&1 || status=$?
took=$(($(now_ms) - start))
if [ $status -ne 0 ] || [ $took -gt $((LIMIT_S * 1000)) ] ||
    ! grep -q "no rank started on host(s) 10.77.0.1, 10.77.0.2, 10.77.0.3 within 10 s (--startup-timeout-s); mpirun alone cannot start on host(s) 10.77.0.3 either; relaunching on 2 host(s)" "$D/launch.log" ||
    ! grep -q "finished on 2 host(s) after 1 restart" "$D/launch.log"; then
  echo "FAIL: dropk launch (exit $status after $(seconds $took) s) did not drop host 10.77.0.3 and finish on 2 hosts within $LIMIT_S s:"
  cat "$D/launch.log"; exit 1
fi
grep "restart 1" "$D/launch.log"
echo "host down at start -> job finished on 2 hosts after $(seconds $took) s"
