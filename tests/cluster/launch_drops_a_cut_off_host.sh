#!/bin/bash
# `dropk launch` over 3 simulated hosts; host 2's link is cut mid-run. A
# reachable rank records rank 2 unreachable after the collective timeout
# (5 s) and its 2 s probe, and leaves ending the job to mpirun; mpirun,
# told to notice a lost daemon only after minutes (TCP keepalive from
# 300 s idle), would wait on host 2's daemon that long. The launcher ends
# mpirun itself --lost-host-grace-s (5) after the record, names why, and
# resumes on the other 2 hosts, which finish the job. The job is kept short
# (120 steps, about 95 after the relaunch): comm_timeout_s=5 also ends a job
# whose rank is starved 5 s, which a 2-core machine running tests in
# parallel did once in 370 steps after the relaunch.
# Usage: launch_drops_a_cut_off_host.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
. "$(dirname "$0")/lib.sh"
cluster_up 3
D=$DROPK_CLUSTER_DIR
LIMIT_S=60  # from the cut to the first step of the relaunch: 5 + 2 + 5 s, and a margin
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null
# The mpirun options of lib.sh, with keepalive from 300 s idle instead of 10.
mpirun_args=$(cluster_mpirun_args | sed 's/oob_tcp_keepalive_time 10/oob_tcp_keepalive_time 300/')
"$CLUSTER_HERE/on_host.sh" 0 "$BIN/dropk" launch --hostfile "$D/hostfile" --max-restarts 1 \
  --mpirun-args "$mpirun_args --map-by node" -- "$BIN/dropk-train" \
  --config "$SRC/configs/tiny_smoke.textproto" --data_dir="$D/shared/data" \
  --out_dir="$D/shared/run" --n_layer=1 --n_embd=32 --block_size=32 --batch_size=2 \
  --gradient_accumulation_steps=2 --max_iters=120 --warmup_iters=4 --lr_decay_iters=120 \
  --save_every=5 --eval_interval=1000 --eval_iters=1 --log_interval=1 --sample_tokens=0 \
  --num_threads=1 --comm_timeout_s=5 >"$D/launch.log" 2>&1 &
LAUNCH=$!
until grep -q '^step 12/' "$D/launch.log" 2>/dev/null && [ -f "$D/shared/run/checkpoints/LATEST" ]; do
  kill -0 $LAUNCH 2>/dev/null || { echo "FAIL: the job ended early:"; cat "$D/launch.log"; exit 1; }
  sleep 0.1
done
cut=$(now_ms)
host_link 2 down
until sed -n '/resumed from/,$p' "$D/launch.log" | grep -q '^step '; do
  kill -0 $LAUNCH 2>/dev/null || break
  if [ "$(now_ms)" -gt $((cut + LIMIT_S * 1000)) ]; then
    echo "FAIL: not training again on 2 hosts $LIMIT_S s after host 2's link was cut:"
    cat "$D/launch.log"; exit 1
  fi
  sleep 0.1
done
training_again=$(now_ms)
status=0
wait $LAUNCH || status=$?
if [ $status -ne 0 ] ||
    ! grep -q "after a rank recorded host 10.77.0.3 lost in $D/shared/run/failures" "$D/launch.log" ||
    ! grep -q "restart 1 of at most 1: host 10.77.0.3 lost (mpirun killed by dropk launch" "$D/launch.log" ||
    ! grep -q "finished on 2 host(s) after 1 restart" "$D/launch.log"; then
  echo "FAIL: dropk launch (exit $status) did not end mpirun and finish on 2 hosts:"
  cat "$D/launch.log"; exit 1
fi
grep -m1 "mpirun still running" "$D/launch.log"
echo "link cut -> training again after the relaunch: $(seconds $((training_again - cut))) s"
"$BIN/dropk" ckpt verify "$D/shared/run/checkpoints" >/dev/null ||
  { echo "FAIL: LATEST does not verify"; exit 1; }
