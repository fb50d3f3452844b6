#!/usr/bin/env bash
# dropk against PyTorch on the CPU, side by side in the same run on the same
# machine, as ratios dropk / PyTorch (> 1: dropk is faster):
#   (a) nanoGPT's CPU recipe (configs/shakespeare_char_cpu.textproto): wall
#       time of the whole training command and the final val loss. dropk 1
#       process x 2 threads and mpirun -np 2 x 1 thread (batch 6 per rank),
#       each in fp32 and with --precision BF16, against PyTorch 1 x 2
#       threads in fp32 (nanoGPT's recipe on a CPU, as published) and
#       against the faster of that and PyTorch DDP (gloo) 2 x 1 thread,
#       batch 6 per rank. Ratios: PyTorch's wall time / dropk's.
#   (b) the "small" config of bench/train_throughput_bench.cc (6 layers, 6
#       heads, 384 wide, T 256, B 8, vocab 256, dropout 0.1), tokens/s.
#       fp32: dropk 1 x 2 threads against the better of PyTorch 1 x 2 threads
#       and DDP (gloo) 2 x 1 thread; bf16: dropk --precision=bf16, 1 x 2
#       threads and mpirun -np 2 x 1, against the better of PyTorch's bf16
#       autocast 1 x 2 threads and DDP 2 x 1 (and the better against the
#       better).
#   (c) the small config, 2 ranks x 1 thread: dropk under mpirun against
#       PyTorch DDP (gloo).
#   (d) serving: batched decode, tokens/s at 1, 4, 16 and 64 rows a step
#       (and a second table: dropk's engine with bf16 weights against
#       PyTorch's model and cache in bf16),
#       2 threads, fp32, for serve_bench's small shape and GPT-2 124M's:
#       dropk's inference engine (dropk-serve-bench --only engine) against
#       the same model in PyTorch with a key/value cache (as HuggingFace's
#       GPT-2 decodes) and nanoGPT's generate() (the whole sequence again
#       each token), step for step alike (bench/torch_decode_cpu.py).
# The PyTorch side is bench/torch_gpt_cpu.py (dropk's model and recipe),
# run by Debian's python3 with Debian's python3-torch, which this script
# installs when it is missing (tools/setup.sh does not). Throughput runs take
# the same warm-up (3 steps, untimed) and the same number of timed steps on
# both sides, the median step of each run, and the median over --repeats
# runs, interleaved so a slow spell of a shared machine hits both sides.
#
# Usage: bench/vs_pytorch.sh [--build DIR] [--iters N] [--steps N]
#            [--repeats N] [--cases abcd] [--decode-shapes small,gpt2]
#   --iters N    steps of the recipe in (a) (default 2000; its cosine decay
#                then ends at N on both sides)
#   --steps N    timed steps per throughput run (default 10)
#   --repeats N  throughput runs per figure, median taken (default 3)
#   --cases abcd which cases to run (default all)
#   --decode-shapes LIST  the shapes of (d) (default small,gpt2)
#   --torch-bf16 run PyTorch's bf16 in (b) on a CPU without AVX-512 too: there
#                PyTorch 1.13's autocast bf16 took 63 s a step against its
#                fp32's 2.2 s (a Zen 3, 2026-12-03), hours for case (b), so
#                by default it is left out there and the table says why
set -euo pipefail

cd "$(dirname "$0")/.."
build=build iters=2000 steps=10 repeats=3 cases=abcd decode_shapes=small,gpt2 torch_bf16=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --decode-shapes) decode_shapes=$2; shift 2 ;;
    --torch-bf16) torch_bf16=always; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "vs_pytorch: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$decode_shapes" =~ ^(small|gpt2)(,(small|gpt2))*$ ]] ||
  { echo "vs_pytorch: --decode-shapes '$decode_shapes': expected small, gpt2 or both, comma-separated" >&2; exit 2; }
for n in "$iters" "$steps" "$repeats"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "vs_pytorch: '$n' is not a positive integer" >&2; exit 2; }
done

# Debian's python: a pyenv or virtualenv python earlier on PATH does not see
# Debian's torch.
py=/usr/bin/python3
torch_script=bench/torch_gpt_cpu.py
train_bin=$build/bin/dropk-train
bench_bin=$build/bin/dropk-train-throughput-bench
serve_bench_bin=$build/bin/dropk-serve-bench
decode_script=bench/torch_decode_cpu.py
needed=("$train_bin" "$bench_bin" "$build/bin/dropk")
[[ $cases != *d* ]] || needed+=("$serve_bench_bin")
for b in "${needed[@]}"; do
  [ -x "$b" ] || { echo "vs_pytorch: $b not built (cmake --build $build)" >&2; exit 1; }
done
mpi=(mpirun -np 2 --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)

if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "vs_pytorch: installing Debian's python3-torch (for this benchmark only)"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch >/dev/null ||
    { echo "vs_pytorch: apt-get install python3-torch failed" >&2; exit 1; }
fi

data=data/shakespeare_char
if [ ! -f $data/train.bin ] || [ ! -f $data/val.bin ]; then
  "$build/bin/dropk" data prepare --tokenizer char --out $data data/tinyshakespeare.txt
fi

work=$(mktemp -d -t dropk-vs-pytorch.XXXXXX)
keep_work=0
trap '[ $keep_work = 1 ] || rm -rf "$work"' EXIT

# ---- helpers ---------------------------------------------------------------

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf (b > 0 ? "%.2fx" : "n/a"), a / b}'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN {print (a > b) ? a : b}'; }
fail() {  # fail LOG WHAT: the run failed; keep its log and say where
  keep_work=1
  echo "vs_pytorch: $2 failed; last lines of $1:" >&2
  tail -n 12 "$1" >&2
}

# torch_ddp LOG WORLD ARGS...: bench/torch_gpt_cpu.py as WORLD processes
# (DDP over gloo, a FileStore rendezvous in the work directory).
torch_ddp() {
  local log=$1 world=$2; shift 2
  local store="$work/store.$RANDOM$RANDOM" pids=() rc=0
  for ((r = 0; r < world; ++r)); do
    RANK=$r WORLD_SIZE=$world "$py" "$torch_script" --dist_file "$store" "$@" \
      > "$log.rank$r" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  cat "$log.rank0" > "$log"
  if [ $rc -ne 0 ]; then  # the failing rank may not be rank 0: keep every rank's end
    for ((r = 1; r < world; ++r)); do
      { echo "-- rank $r:"; tail -n 5 "$log.rank$r"; } >> "$log"
    done
  fi
  return $rc
}

# Throughput runs print one figure (tokens/s) on stdout, or nothing on failure.
small=(--n_layer 6 --n_head 6 --n_embd 384 --block_size 256 --batch_size 8 --vocab_size 256
       --dropout 0.1)
dropk_tps() {  # dropk_tps LOG [mpi] ARGS...
  local log=$1; shift
  local cmd=("$bench_bin")
  if [ "$1" = mpi ]; then shift; cmd=("${mpi[@]}" "$bench_bin"); fi
  "${cmd[@]}" --config small --steps "$steps" "$@" > "$log" 2>&1 || return 1
  grep -o '[0-9.]* tokens/s' "$log" | tail -n 1 | cut -d' ' -f1
}
torch_tps() {  # torch_tps LOG WORLD ARGS...
  local log=$1 world=$2; shift 2
  local args=(--mode throughput --warmup_steps 3 --steps "$steps" "${small[@]}" "$@")
  if [ "$world" = 1 ]; then
    "$py" "$torch_script" "${args[@]}" > "$log" 2>&1 || return 1
  else
    torch_ddp "$log" "$world" "${args[@]}" || return 1
  fi
  sed -n 's/^RESULT throughput tokens_per_s=\([0-9.]*\).*/\1/p' "$log"
}

# ---- header ----------------------------------------------------------------

flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { [[ " ${flags#*:} " == *" $1 "* ]] && echo yes || echo no; }
echo "== dropk vs PyTorch, CPU, same run ($(date -u '+%Y-%m-%d %H:%M UTC'), dropk $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) core(s) available;" \
  "AMX (amx_bf16): $(has amx_bf16), avx512_bf16: $(has avx512_bf16), avx512f: $(has avx512f)"
"$py" - <<'EOF'
import torch
print(f"PyTorch {torch.__version__} ({torch.__file__.rsplit('/', 2)[0]}): "
      f"torch.set_num_threads(N) per rank, 1 inter-op thread, oneDNN "
      f"{'available' if torch.backends.mkldnn.is_available() else 'absent'}; DDP over gloo")
EOF
echo "dropk: $train_bin (--num_threads N per rank), $bench_bin (--threads N per rank);" \
  "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
load=$(cut -d' ' -f1 /proc/loadavg)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if awk -v l="$load" 'BEGIN {exit !(l >= 0.5)}'; then
  echo "warning: the machine is busy (load $load on $(nproc) cores); a thread that waits for a" \
    "core slows one side more than the other, so these ratios are not figures to publish"
fi

# ---- (a) nanoGPT's CPU recipe ----------------------------------------------

if [[ $cases == *a* ]]; then
  echo
  echo "== (a) nanoGPT's CPU recipe: 4 layers, 4 heads, 128 wide, block 64, batch 12, $iters iters" \
    "(cosine to $iters), eval 20 iters every 250; wall time of the whole command"
  recipe=(--config configs/shakespeare_char_cpu.textproto --max_iters "$iters"
          --lr_decay_iters "$iters" --sample_tokens 0 --save_every 0)
  declare -A wall loss
  run_recipe() {  # run_recipe NAME LOG COMMAND...
    local name=$1 log=$2; shift 2
    local t0; t0=$(now)
    if "$@" > "$log" 2>&1; then
      wall[$name]=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
      case $name in
        torch*) loss[$name]=$(sed -n 's/^RESULT train .*val_loss=\([0-9.]*\).*/\1/p' "$log") ;;
        *) loss[$name]=$(sed -n 's/^dropk-train: done, .*val loss \([0-9.]*\),.*/\1/p' "$log") ;;
      esac
    else
      fail "$log" "$name"
      wall[$name]="" loss[$name]=""
    fi
  }
  run_recipe dropk_1x2 "$work/a_dropk_1x2.log" \
    "$train_bin" "${recipe[@]}" --out_dir "$work/a_dropk_1x2" --num_threads 2
  run_recipe dropk_2x1 "$work/a_dropk_2x1.log" \
    "${mpi[@]}" "$train_bin" "${recipe[@]}" --out_dir "$work/a_dropk_2x1" --num_threads 1 \
    --batch_size 6
  # bf16 (matmul inputs; a build without the CPU's bf16 fails these runs,
  # which are then reported and left out).
  run_recipe dropk_bf16_1x2 "$work/a_dropk_bf16_1x2.log" \
    "$train_bin" "${recipe[@]}" --out_dir "$work/a_dropk_bf16_1x2" --num_threads 2 \
    --precision BF16
  run_recipe dropk_bf16_2x1 "$work/a_dropk_bf16_2x1.log" \
    "${mpi[@]}" "$train_bin" "${recipe[@]}" --out_dir "$work/a_dropk_bf16_2x1" --num_threads 1 \
    --batch_size 6 --precision BF16
  run_recipe torch_1x2 "$work/a_torch_1x2.log" \
    "$py" "$torch_script" --mode train --threads 2 --data_dir $data --iters "$iters" \
    --lr_decay_iters "$iters"
  # Not nanoGPT's recipe (one process), but what a user could run instead:
  # DDP over gloo, 2 ranks x 1 thread, batch 6 each. Every ratio is taken
  # against the faster of the two PyTorch runs.
  run_recipe torch_2x1 "$work/a_torch_2x1.log" \
    torch_ddp "$work/a_torch_2x1.log" 2 --mode train --threads 1 --data_dir $data \
    --iters "$iters" --lr_decay_iters "$iters" --batch_size 6
  torch_best="" torch_runs=0
  for name in torch_1x2 torch_2x1; do
    [ -z "${wall[$name]}" ] || torch_runs=$((torch_runs + 1))
    [ -n "${wall[$name]}" ] || continue
    if [ -z "$torch_best" ] || awk -v a="${wall[$name]}" -v b="$torch_best" 'BEGIN {exit !(a < b)}'; then
      torch_best=${wall[$name]}
    fi
  done
  echo "ratios: PyTorch's wall time / dropk's, against nanoGPT's recipe as published (PyTorch" \
    "1 x 2) and against the faster of PyTorch's two runs"
  [ $torch_runs -eq 2 ] ||
    echo "(only $torch_runs PyTorch run(s) succeeded: 'vs faster' is against what ran)"
  printf '%-34s %10s %10s %14s %16s\n' run "wall s" "val loss" "vs 1 x 2" "vs faster"
  printf '%-34s %10s %10s %14s %16s\n' "PyTorch 1 x 2 threads" "${wall[torch_1x2]:-failed}" \
    "${loss[torch_1x2]:--}" "-" "-"
  printf '%-34s %10s %10s %14s %16s\n' "PyTorch DDP 2 x 1 (batch 6)" \
    "${wall[torch_2x1]:-failed}" "${loss[torch_2x1]:--}" "-" "-"
  for name in dropk_1x2 dropk_2x1 dropk_bf16_1x2 dropk_bf16_2x1; do
    case $name in
      dropk_1x2) label="dropk 1 x 2 threads" ;;
      dropk_2x1) label="dropk mpirun -np 2 x 1 (batch 6)" ;;
      dropk_bf16_1x2) label="dropk bf16 1 x 2 threads" ;;
      dropk_bf16_2x1) label="dropk bf16 mpirun -np 2 x 1" ;;
    esac
    r1="-" rb="-"
    if [ -n "${wall[$name]}" ]; then
      [ -z "${wall[torch_1x2]}" ] || r1=$(ratio "${wall[torch_1x2]}" "${wall[$name]}")
      [ -z "$torch_best" ] || rb=$(ratio "$torch_best" "${wall[$name]}")
    fi
    printf '%-34s %10s %10s %14s %16s\n' "$label" "${wall[$name]:-failed}" "${loss[$name]:--}" \
      "$r1" "$rb"
  done
fi

# ---- (b) and (c) the small config, tokens/s --------------------------------

if [[ $cases == *b* || $cases == *c* ]]; then
  echo
  echo "== small config: 6 layers, 6 heads, 384 wide, T 256, B 8 per rank, vocab 256, dropout 0.1;" \
    "tokens/s, median step of $steps after 3 warm-up steps, median of $repeats run(s)"
  declare -A tps
  bf16_note=""
  # PyTorch's bf16 on a CPU without AVX-512: see --torch-bf16.
  torch_bf16_note=""
  if [ "$torch_bf16" = auto ] && [ "$(has avx512f)" = no ]; then
    torch_bf16_note="left out: no AVX-512 here, where PyTorch 1.13's bf16 ran ~29x slower than its fp32 (--torch-bf16 runs it)"
  fi
  # measure KEY LABEL FN LOG ARGS...: one run of FN (dropk_tps or torch_tps),
  # its figure appended to tps[KEY]; a failed run is reported and skipped.
  measure() {
    local key=$1 label=$2 fn=$3 log=$4 v
    shift 4
    if v=$("$fn" "$log" "$@") && [ -n "$v" ]; then
      tps[$key]="${tps[$key]:-} $v"
    else
      fail "$log" "$label"
    fi
  }
  for ((rep = 1; rep <= repeats; ++rep)); do
    if [[ $cases == *b* ]]; then
      measure dropk_fp32 "dropk fp32 1 x 2" dropk_tps "$work/b_dropk_fp32.$rep.log" --threads 2
      measure torch_fp32 "PyTorch fp32 1 x 2" torch_tps "$work/b_torch_fp32.$rep.log" 1 --threads 2
      # dropk's CPU bf16 is new: a build without it refuses the flag, and
      # then the later repeats do not ask again.
      if [ -z "$bf16_note" ]; then
        log="$work/b_dropk_bf16.$rep.log"
        if v=$(dropk_tps "$log" --threads 2 --precision=bf16) && [ -n "$v" ]; then
          tps[dropk_bf16]="${tps[dropk_bf16]:-} $v"
        else
          bf16_note="not supported by this build ($(grep -m1 -v '^$' "$log" || true))"
        fi
      fi
      if [ -z "$torch_bf16_note" ]; then
        measure torch_bf16 "PyTorch bf16 1 x 2" torch_tps "$work/b_torch_bf16.$rep.log" 1 \
          --threads 2 --precision bf16
        # bf16 as 2 ranks x 1 thread on both sides too, so that the bf16 ratio
        # compares each side's better layout, as fp32's does.
        measure torch_bf16_ddp "PyTorch bf16 DDP 2 x 1" torch_tps \
          "$work/b_torch_bf16_ddp.$rep.log" 2 --threads 1 --precision bf16
      fi
      if [ -z "$bf16_note" ]; then
        measure dropk_bf16_2x1 "dropk bf16 mpirun -np 2 x 1" dropk_tps \
          "$work/b_dropk_bf16_2x1.$rep.log" mpi --threads 1 --precision=bf16
      fi
    fi
    measure torch_ddp "PyTorch DDP 2 x 1" torch_tps "$work/b_torch_ddp.$rep.log" 2 --threads 1
    if [[ $cases == *c* ]]; then
      measure dropk_2x1 "dropk mpirun -np 2 x 1" dropk_tps "$work/c_dropk_2x1.$rep.log" mpi \
        --threads 1
    fi
  done
  fig() {  # fig KEY: the median of KEY's runs, or nothing when none succeeded
    local runs
    read -ra runs <<< "${tps[$1]:-}"
    if [ ${#runs[@]} -gt 0 ]; then median "${runs[@]}"; fi
  }
  show() {  # show LABEL KEY RATIO
    local m; m=$(fig "$2")
    [ -z "$m" ] || m=$(printf '%.0f' "$m")
    printf '%-40s %12s %20s   %s\n' "$1" "${m:-failed}" "$3" "${tps[$2]:-}"
  }
  r() {  # r KEY BASELINE: KEY's median / BASELINE, or "-" when either is missing
    local a; a=$(fig "$1")
    if [ -n "$a" ] && [ -n "$2" ]; then ratio "$a" "$2"; else echo "-"; fi
  }
  if [[ $cases == *b* ]]; then
    best() {  # best KEY...: the largest median among the KEYs that have runs, or nothing
      local b="" k v
      for k in "$@"; do
        v=$(fig "$k")
        [ -n "$v" ] || continue
        if [ -z "$b" ]; then b=$v; else b=$(max "$b" "$v"); fi
      done
      echo "$b"
    }
    torch_fp32_best=$(best torch_fp32 torch_ddp)
    echo
    echo "-- (b) fp32 and bf16, 1 process x 2 threads and 2 ranks x 1 thread; each ratio against PyTorch's better layout"
    printf '%-40s %12s %20s   %s\n' run "tokens/s" "dropk/PyTorch" "runs"
    show "PyTorch fp32 1 x 2 threads" torch_fp32 "-"
    show "PyTorch fp32 DDP gloo 2 x 1 thread" torch_ddp "-"
    show "dropk fp32 1 x 2 threads" dropk_fp32 "$(r dropk_fp32 "$torch_fp32_best") (vs better)"
    # A layout that failed is left out (and reported above); the ratios then
    # compare what ran.
    torch_bf16_best=$(best torch_bf16 torch_bf16_ddp)
    dropk_bf16_best=$(best dropk_bf16 dropk_bf16_2x1)
    if [ -n "$torch_bf16_note" ]; then
      printf '%-40s %s\n' "PyTorch bf16 autocast" "$torch_bf16_note"
    else
      show "PyTorch bf16 autocast 1 x 2 threads" torch_bf16 "-"
      show "PyTorch bf16 autocast DDP 2 x 1 thread" torch_bf16_ddp "-"
    fi
    if [ -n "$bf16_note" ]; then
      printf '%-40s %s\n' "dropk bf16" "$bf16_note"
    else
      show "dropk bf16 1 x 2 threads" dropk_bf16 "$(r dropk_bf16 "$torch_bf16_best") (vs better)"
      show "dropk bf16 mpirun -np 2 x 1 thread" dropk_bf16_2x1 \
        "$(r dropk_bf16_2x1 "$torch_bf16_best") (vs better)"
      if [ -n "$dropk_bf16_best" ] && [ -n "$torch_bf16_best" ]; then
        printf '%-40s %12s %20s\n' "bf16, better against better" "" \
          "$(ratio "$dropk_bf16_best" "$torch_bf16_best")"
      fi
    fi
  fi
  if [[ $cases == *c* ]]; then
    echo
    echo "-- (c) fp32, 2 ranks x 1 thread"
    printf '%-40s %12s %20s   %s\n' run "tokens/s" "dropk/PyTorch" "runs"
    show "PyTorch DDP gloo 2 x 1 thread" torch_ddp "-"
    show "dropk mpirun -np 2 x 1 thread" dropk_2x1 "$(r dropk_2x1 "$(fig torch_ddp)")"
  fi
fi

# ---- (d) serving: batched decode -------------------------------------------

if [[ $cases == *d* ]]; then
  declare -A dec  # dec[SIDE.MODEL.ROWS]: that side's tokens/s, one per run
  # dropk_decode LOG MODEL: "ROWS FP32_TOKENS/S BF16_TOKENS/S" lines of the
  # engine's batched table (fp32 weights, and bf16 weights, in one run).
  dropk_decode() {
    "$serve_bench_bin" --model "$2" --only engine --threads 2 > "$1" 2>&1 || return 1
    awk '/^batch rows/ {on = 1; next} on && $1 ~ /^[0-9]+$/ {print $1, $2, $5}' "$1"
  }
  # torch_decode LOG MODEL MODE [DTYPE]: the same lines from
  # bench/torch_decode_cpu.py (one figure each).
  torch_decode() {
    "$py" "$decode_script" --model "$2" --mode "$3" --threads 2 --dtype "${4:-fp32}" > "$1" 2>&1 ||
      return 1
    sed -n 's/^RESULT decode mode=[a-z]* rows=\([0-9]*\) tokens_per_s=\([0-9.]*\)$/\1 \2/p' "$1"
  }
  # keep SIDE MODEL: "ROWS TOKENS/S" lines on stdin into dec[].
  keep() {
    local rows v
    while read -r rows v; do dec[$1.$2.$rows]="${dec[$1.$2.$rows]:-} $v"; done
  }
  for model in ${decode_shapes//,/ }; do
    # The PyTorch KV-cache decode must give the full forward's logits before
    # its speed means anything.
    log="$work/d_torch_check_$model.log"
    "$py" "$decode_script" --model "$model" --check > "$log" 2>&1 || fail "$log" "PyTorch decode check ($model)"
    for ((rep = 1; rep <= repeats; ++rep)); do
      log="$work/d_dropk_$model.$rep.log"
      if out=$(dropk_decode "$log" $model) && [ -n "$out" ]; then
        keep dropk $model <<< "$(cut -d' ' -f1,2 <<< "$out")"
        keep dropk_bf16 $model <<< "$(cut -d' ' -f1,3 <<< "$out")"
      else fail "$log" "dropk decode ($model)"; fi
      for mode in kv recompute; do
        log="$work/d_torch_${mode}_$model.$rep.log"
        if out=$(torch_decode "$log" $model $mode) && [ -n "$out" ]; then keep $mode $model <<< "$out"
        else fail "$log" "PyTorch decode $mode ($model)"; fi
      done
      log="$work/d_torch_kv_bf16_$model.$rep.log"
      if out=$(torch_decode "$log" $model kv bf16) && [ -n "$out" ]; then keep kv_bf16 $model <<< "$out"
      else fail "$log" "PyTorch decode kv bf16 ($model)"; fi
    done
  done
  dmed() {  # dmed KEY: the median of dec[KEY]'s runs, or nothing
    local runs
    read -ra runs <<< "${dec[$1]:-}"
    if [ ${#runs[@]} -gt 0 ]; then median "${runs[@]}"; fi
  }
  echo
  echo "== (d) serving: batched decode, tokens/s (every row one token a step, logits over the" \
    "whole vocabulary), 2 threads, fp32, median of $repeats run(s); a 4-token prompt, then 40" \
    "steps (1 and 4 rows) or 16; ratios dropk / PyTorch"
  printf '%-7s %5s %12s %18s %18s %12s %14s\n' shape rows dropk "PyTorch KV cache" \
    "nanoGPT generate" "vs KV cache" "vs generate"
  for model in ${decode_shapes//,/ }; do
    for rows in 1 4 16 64; do
      d=$(dmed dropk.$model.$rows) kv=$(dmed kv.$model.$rows) re=$(dmed recompute.$model.$rows)
      r_kv="-" r_re="-"
      [ -z "$d" ] || [ -z "$kv" ] || r_kv=$(ratio "$d" "$kv")
      [ -z "$d" ] || [ -z "$re" ] || r_re=$(ratio "$d" "$re")
      printf '%-7s %5s %12s %18s %18s %12s %14s\n' $model $rows "${d:-failed}" "${kv:-failed}" \
        "${re:-failed}" "$r_kv" "$r_re"
    done
  done
  echo
  echo "-- (d) bf16 weights: dropk-serve --weights bf16 (weights rounded to bf16, activations," \
    "sums and KV cache fp32) against PyTorch's model and KV cache in bf16 (model.to(bfloat16))," \
    "same runs"
  printf '%-7s %5s %12s %18s %14s %14s\n' shape rows "dropk bf16" "PyTorch bf16 KV" \
    "vs PyTorch" "dropk bf16/fp32"
  for model in ${decode_shapes//,/ }; do
    for rows in 1 4 16 64; do
      b=$(dmed dropk_bf16.$model.$rows) kb=$(dmed kv_bf16.$model.$rows) d=$(dmed dropk.$model.$rows)
      r_kb="-" r_bd="-"
      [ -z "$b" ] || [ -z "$kb" ] || r_kb=$(ratio "$b" "$kb")
      [ -z "$b" ] || [ -z "$d" ] || r_bd=$(ratio "$b" "$d")
      printf '%-7s %5s %12s %18s %14s %14s\n' $model $rows "${b:-failed}" "${kb:-failed}" \
        "$r_kb" "$r_bd"
    done
  done
fi

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $keep_work = 1 ]; then
  echo "vs_pytorch: logs of the failed runs kept in $work"
  exit 1
fi
