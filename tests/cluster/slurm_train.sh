#!/bin/bash
# Slurm for real: starts munged, slurmctld and slurmd (one node, 2 CPUs) from
# a temporary configuration and submits deploy/slurm/train.sbatch (2 ranks on
# the one node) with a two-minute time limit. The job trains; Slurm's own
# time-limit warning (--signal=B:TERM@90) makes it save and exit 75, and the
# recipe requeues the job itself (no scontrol requeue here); the requeued job
# resumes from LATEST and finishes, COMPLETED. Skips (exit 77) where the
# daemons are missing or cannot start.
# Usage: slurm_train.sh BIN_DIR SOURCE_DIR
set -eu
BIN=$1 SRC=$2
for tool in munged slurmctld slurmd sbatch scontrol; do
  command -v $tool >/dev/null || { echo "SKIP: $tool not found (tools/setup.sh installs slurm)" >&2; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: the Slurm daemons need root here" >&2; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
T=$(mktemp -d /tmp/dropk-slurm.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() {
  set +e
  # slurmstepd outlives slurmd: end this configuration's ones first.
  for pid in $(pgrep -x slurmstepd); do
    { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$T/slurm.conf" &&
      kill -9 "$pid"
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  [ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
skip() { echo "SKIP: $1" >&2; tail -5 "$2" >&2 2>/dev/null; exit 77; }
fail() { echo "FAIL: $1"; shift; for f in "$@"; do echo "== $f"; cat "$f"; done; exit 1; }

# munge with a private key and socket.
mkdir -m 700 "$T/munge"
head -c 1024 /dev/urandom >"$T/munge/key" && chmod 400 "$T/munge/key"
munged --force --key-file="$T/munge/key" --socket="$T/munge/sock" --pid-file="$T/munge/pid" \
  --log-file="$T/munge/log" --seed-file="$T/munge/seed" 2>"$T/munge/err" ||
  skip "munged cannot start" "$T/munge/err"
PIDS+=("$(cat "$T/munge/pid")")

# Ports from the PID, so parallel runs differ.
port=$((20000 + ($$ % 5000) * 2))
node=$(hostname -s)
mkdir -p "$T/state" "$T/spool"
export SLURM_CONF=$T/slurm.conf
cat >"$SLURM_CONF" <<CONF
ClusterName=dropktest
SlurmctldHost=$node
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/sock,cred_expire=10
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdTimeout=30
NodeName=$node CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -D -i >"$T/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D >"$T/slurmd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  sinfo -h -o %t 2>/dev/null | grep -qx idle && break
  sleep 0.2
done
sinfo -h -o %t 2>/dev/null | grep -qx idle ||
  skip "slurmd did not become idle" "$T/slurmd.log"

"$BIN/dropk" data prepare --tokenizer char --out "$T/data" "$SRC/data/tinyshakespeare.txt" >/dev/null
# The first run cannot end before the warning: its config asks for 10^6
# steps. The requeued run goes 300 steps past the checkpoint it first
# resumes from: DROPK_BIN is a directory whose dropk-train adds that
# --max_iters when the run directory has a checkpoint (read at the start of
# each run, so nothing here races the requeue; kept in $T/final, so that
# every run after the first stop aims at the same step).
grep -v '^max_iters:' "$SRC/configs/tiny_smoke.textproto" > "$T/job.textproto"
echo 'max_iters: 1000000' >> "$T/job.textproto"
mkdir "$T/bin"
cat >"$T/bin/dropk-train" <<WRAPPER
#!/bin/bash
latest=\$(cat "$T/run/checkpoints/LATEST" 2>/dev/null || true)
if [ -n "\$latest" ] && [ ! -s "$T/final" ]; then  # both ranks may: same value, renamed whole
  echo \$((10#\${latest#step-}0 / 10 + 300)) > "$T/final.\$\$" && mv -f "$T/final.\$\$" "$T/final"
fi
if [ -s "$T/final" ]; then set -- "\$@" --max_iters=\$(cat "$T/final"); fi
exec "$BIN/dropk-train" "\$@"
WRAPPER
chmod 755 "$T/bin/dropk-train"
submit() {  # the recipe, shrunk to this one 2-CPU node and a 2-minute limit
  sbatch --parsable --chdir="$SRC" --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 \
    --time=2 --signal=B:TERM@90 --open-mode=append \
    --output="$T/job-%j.out" --export=ALL,DROPK_BIN="$T/bin",OMPI_MCA_rmaps_base_oversubscribe=1 \
    "$SRC/deploy/slurm/train.sbatch" "$T/job.textproto" --data_dir="$T/data" \
    --out_dir="$T/run" --n_layer=2 --n_embd=64 --block_size=64 --batch_size=4 \
    --lr_decay_iters=10000 --save_every=0 --eval_interval=10000 --eval_iters=1 --log_interval=10 \
    --sample_tokens=0
}
job=$(submit)
out="$T/job-$job.out"
# slurmctld checks time limits every 30 s: the warning comes 30 to 60 s in,
# leaving a requeued run at least 30 s to finish before its own.
for _ in $(seq 750); do  # bounded: 150 s
  grep -q 'requeued job' "$out" 2>/dev/null && break
  sleep 0.2
done
grep -q '^step 50/' "$out" || fail "job $job did not start training" "$out" "$T/slurmd.log"
grep -q "requeued job $job" "$out" ||
  fail "job $job did not requeue itself after the time-limit warning" "$out" "$T/slurmctld.log"
# Saved on the signal: save_every=0 schedules no save before the end.
latest=$(cat "$T/run/checkpoints/LATEST" 2>/dev/null || true)
[ -n "$latest" ] || fail "the warning did not make job $job save (no LATEST)" "$out"
step=$((10#${latest#step-}0 / 10))
final=$((step + 300))
echo "signalled: job $job saved $latest on the time-limit warning and requeued itself"

for _ in $(seq 900); do  # bounded: 180 s
  state=$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z]*' || true)
  [ "$state" = JobState=COMPLETED ] && break
  case $state in JobState=FAILED | JobState=CANCELLED | JobState=TIMEOUT) break ;; esac
  sleep 0.2
done
grep -q "resumed from $T/run/checkpoints/$latest" "$out" && grep -q "done, $final steps" "$out" &&
  [ "$state" = JobState=COMPLETED ] ||
  fail "the requeued job $job did not resume and finish at step $final ($state)" "$out"
# One requeue: Slurm sends the requeued run the warning's SIGTERM again as
# it starts, which the recipe must not take for a stop (each run would
# stop and requeue itself anew).
restarts=$(scontrol show job "$job" | grep -o 'Restarts=[0-9]*')
[ "$restarts" = Restarts=1 ] || fail "job $job: $restarts, expected one requeue" "$out"
echo "requeued: $(grep -m1 'resumed from' "$out"), then COMPLETED"
grep -m1 'ignored a SIGTERM' "$out" || true
