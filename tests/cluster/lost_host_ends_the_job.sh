#!/bin/bash
# A host lost mid-training ends the whole job, mpirun included, by itself:
#  1. host 2's link cut: rank 0 or 1 names the stalled operation and rank 2
#     as unreachable after the collective timeout (5 s here), on stderr and
#     in its failure record in the run directory, and mpirun exits within
#     that plus a margin;
#  2. host 2's processes SIGKILLed: the job ends the same way.
# Either way the newest checkpoint still verifies.
# Usage: lost_host_ends_the_job.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
. "$(dirname "$0")/lib.sh"
cluster_up 3
D=$DROPK_CLUSTER_DIR
TIMEOUT_S=5 MARGIN_S=45
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null

# start_job NAME: a long 3-host run in the background; returns once it has
# trained past step 15 and committed a checkpoint (saves are asynchronous: on
# a slow machine step 10's could still be in flight at step 15).
start_job() {
  cluster_mpirun -np 3 --map-by node "$BIN/dropk-train" --config "$SRC/configs/tiny_smoke.textproto" \
    --data_dir="$D/shared/data" --out_dir="$D/shared/$1" --n_layer=1 --n_embd=32 --block_size=32 \
    --batch_size=2 --max_iters=1000000 --lr_decay_iters=1000000 --save_every=10 \
    --eval_interval=1000000 --eval_iters=1 --log_interval=5 --sample_tokens=0 --num_threads=1 \
    --comm_timeout_s=$TIMEOUT_S >"$D/$1.log" 2>&1 &
  JOB=$!
  until grep -q '^step 15/' "$D/$1.log" 2>/dev/null && [ -f "$D/shared/$1/checkpoints/LATEST" ]; do
    kill -0 $JOB 2>/dev/null || { echo "FAIL: $1 ended early:"; cat "$D/$1.log"; exit 1; }
    sleep 0.2
  done
}
# reports NAME: the failure reports of job NAME's ranks: those each rank
# keeps in the run directory (OUT_DIR/failures/rank-N.log), then mpirun's
# output, which can lose a report still in flight when mpirun ends the job.
reports() {
  cat "$D/shared/$1/failures/"rank-*.log 2>/dev/null || true
  cat "$D/$1.log"
}
# wait_job NAME T0: mpirun must exit non-zero within TIMEOUT_S + MARGIN_S of
# T0; sets REPORTED_AFTER (a rank's timeout report) and ENDED_AFTER.
wait_job() {
  local limit=$(($2 + (TIMEOUT_S + MARGIN_S) * 1000))
  REPORTED_AFTER="no report"
  while kill -0 $JOB 2>/dev/null; do
    if [ "$REPORTED_AFTER" = "no report" ] && reports "$1" | grep -q "did not complete within"; then
      REPORTED_AFTER="$(seconds $(($(now_ms) - $2))) s"
    fi
    if [ "$(now_ms)" -gt $limit ]; then
      echo "FAIL: $1: mpirun still running $((TIMEOUT_S + MARGIN_S)) s after the host was lost:"
      cat "$D/$1.log"; exit 1
    fi
    sleep 0.2
  done
  local status=0
  wait $JOB || status=$?
  [ $status -ne 0 ] || { echo "FAIL: $1: mpirun exited 0"; exit 1; }
  ENDED_AFTER=$(seconds $(($(now_ms) - $2)))
  for i in 0 1; do  # the reachable hosts keep no rank behind
    if ip netns pids "${DROPK_CLUSTER_ID}h$i" | xargs -r ps -o cmd= -p | grep -q dropk-train; then
      echo "FAIL: $1: a rank outlived the job on host $i"; exit 1
    fi
  done
  "$BIN/dropk" ckpt verify "$D/shared/$1/checkpoints" >/dev/null ||
    { echo "FAIL: $1: LATEST does not verify"; exit 1; }
}

# 1. Cut link.
start_job cut
t0=$(now_ms)
host_link 2 down
wait_job cut "$t0"
# Rank 0 or rank 1 reports first: both wait on rank 2, and the first to
# report ends the job, so Open MPI may kill the other before it prints (a
# CI run saw rank 1's report alone). Either must name the operation and
# rank 2, never a reachable rank, as the one lost.
report=$(reports cut | grep -m1 -E "rank [01] of 3: .* #[0-9]+ .*did not complete within $TIMEOUT_S s" || true)
if [ -z "$report" ] || ! grep -q "rank 2 (10.77.0.3) is unreachable" <<<"$report" ||
    grep -qE "rank [01] \([0-9.]+\) is unreachable" <<<"$report"; then
  echo "FAIL: no reachable rank named the operation and the unreachable rank 2:"; reports cut
  exit 1
fi
# Each reachable rank that reported kept its line in the run directory.
for r in 0 1; do
  record="$D/shared/cut/failures/rank-0000$r.log"
  if grep -q "rank $r of 3: .*did not complete within" "$D/cut.log" &&
      ! grep -q "rank $r of 3: .*did not complete within" "$record" 2>/dev/null; then
    echo "FAIL: rank $r reported on stderr but kept no line in $record"; reports cut; exit 1
  fi
done
echo "cut link: a rank reported ${REPORTED_AFTER} and the job ended ${ENDED_AFTER} s after the cut"
echo "$report"
# The cut-off host's rank and daemon could not be told (they stop after
# their own timeout and grace): a fresh cluster for the second case.
cluster_down
DROPK_CLUSTER_DIR=$(mktemp -d /tmp/dropk-cluster.XXXXXX)
D=$DROPK_CLUSTER_DIR
cluster_up 3
"$BIN/dropk" data prepare --tokenizer char --out "$D/shared/data" "$SRC/data/tinyshakespeare.txt" >/dev/null

# 2. Host 2's processes killed (its daemon and rank).
start_job killed
t0=$(now_ms)
ip netns pids "${DROPK_CLUSTER_ID}h2" | xargs -r kill -9
wait_job killed "$t0"
echo "killed host: job ended ${ENDED_AFTER} s after the kill"
