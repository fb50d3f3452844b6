#!/usr/bin/env bash
# The one GPU check. From a clean checkout on a machine with one NVIDIA GPU:
# builds the CUDA parts for that GPU, runs every GPU test and the GPU
# benchmark beside PyTorch's, and prints one summary table. Meant to finish
# in under 8 minutes on an H100/H200 host with 16 cores.
#
#   bash tools/gpu_check.sh            # logs and XML in build-gpu/gpu_check/,
#                                      # packed into $OUT/gpu_check_logs.tar.gz where OUT is set
#   DROPK_GPU_CHECK_BUDGET_S=900 bash tools/gpu_check.sh   # more than 570 s in all
#   bash tools/gpu_check.sh --prebuilt gpu_bundle/dropk-gpu.tar.xz
#   DROPK_GPU_CHECK_STEP_CAP_S=60 bash tools/gpu_check.sh  # no step over 60 s
#
# --prebuilt: the binaries come from tools/gpu_bundle.sh's archive, built on
# a machine with dropk's Debian packages, instead of from a build here. The
# lent GPU machines have CUDA and PyTorch but none of those packages and no
# way to fetch them. Without mpirun on the machine the two MPI rows do not run.
#
# What it checks (each row of the table):
#   - build of the CUDA targets (sm_XY of the GPU found)
#   - every CUDA kernel, forward and backward, against the CPU kernel on
#     random inputs, per matmul precision (tolerances in
#     tests/model/cuda_kernels_test.cc), and a whole GPT's loss and gradients
#   - dropout masks bitwise equal CPU vs GPU, all four sites, both stream modes
#   - the PyTorch golden fixture (tests/data/gpt_golden.bin) on the GPU
#   - GPU collectives: MPI staging CUDA buffers (2 ranks on the one GPU) and
#     NCCL (1 rank; NCCL refuses 2 ranks on one GPU)
#   - bitwise exact resume on the GPU; a checkpoint resumed on the other
#     device (CPU -> GPU, GPU -> CPU) continuing the CPU run's trajectory
#   - serving on the GPU: the CUDA inference engine's logits against the CPU
#     engine's, its batch invariance, batched prefill and decode CUDA graphs
#     bit for bit, its memory refusal, and dropk-serve --device cuda giving a
#     seeded request the same text alone and among 15 others
#   - serving tokens/s on the GPU at 1, 4, 16 and 64 concurrent streams, GPT-2 124M shape
#   - 200 steps of the shakespeare_char shape on the GPU tracking the CPU's losses
#   - dropk-train as a user runs it, with configs/shakespeare_char_cuda.textproto:
#     60 steps (flash attention), resumed to 90, and 60 with the materialised
#     kernels (attention_kernels), each run's newest checkpoint verified; the
#     resumed run's safetensors export read back by --init_from (same val
#     loss); 30 steps with comm_backend=nccl (one rank)
#   - GPT-2 124M training tokens/s and MFU at fp32/tf32/bf16, dropout 0 and
#     0.1, against PyTorch eager and torch.compile on the same GPU in the same run,
#     and where a bf16 step with dropout 0.1 goes, op by op
# Exit status: 0 when every check passed, 1 otherwise, 2 without a GPU or
# with a budget setting that is not a whole number of seconds.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
prebuilt=""
if [ "${1:-}" = "--prebuilt" ]; then
  prebuilt=$(cd "$(dirname "${2:?--prebuilt needs the archive of tools/gpu_bundle.sh}")" &&
             pwd)/$(basename "$2")
  [ -f "$prebuilt" ] || { echo "gpu_check: --prebuilt $2: no such file"; exit 1; }
fi
build=${DROPK_GPU_BUILD_DIR:-$root/build-gpu}
out=$build/gpu_check
mkdir -p "$out"
# A previous run's logs would pass for this run's where a step does not run.
rm -f "$out"/*.log "$out"/*.xml "$out"/summary.txt
# A lent device machine sends back only what is under $OUT (this
# workplace's name for it), and only a few files there (8, 16 MiB each):
# so the logs go there as one archive, gpu_check_logs.tar.gz, packed again
# after every step, and a run stopped at the machine's limit still returns
# what it did. DROPK_GPU_CHECK_KEEP_DIR names another folder; empty: no archive.
keep=${DROPK_GPU_CHECK_KEEP_DIR-${OUT-}}
# keep_logs: packs $out into $keep/gpu_check_logs.tar.gz, each log cut to
# its first 256 KiB and last 768 KiB (a sanitizer that finds errors can write
# gigabytes), so that the archive stays under the 16 MiB a file may have.
keep_logs() {
  [ -n "$keep" ] || return 0
  local cut=$build/gpu_check_kept f size
  rm -rf "$cut" && mkdir -p "$cut" "$keep" || return 0
  for f in "$out"/*; do
    [ -f "$f" ] || continue
    size=$(stat -c %s "$f")
    if [ "$size" -gt 1048576 ]; then
      { head -c 262144 "$f"; printf '\n[gpu_check: %s bytes, cut here]\n' "$size"; tail -c 786432 "$f"; } \
        > "$cut/${f##*/}"
    else
      cp "$f" "$cut/"
    fi
  done
  tar -C "$cut" -czf "$keep/gpu_check_logs.tar.gz.part" . &&
    mv -f "$keep/gpu_check_logs.tar.gz.part" "$keep/gpu_check_logs.tar.gz"
}
t_start=$(date +%s)
elapsed() { echo $(( $(date +%s) - t_start )); }
# The device machines run one command for at most 600 s. Past this budget the
# remaining steps are not run (their rows read "did not run") and the summary
# table is still printed. DROPK_GPU_CHECK_BUDGET_S=0: no budget.
budget=${DROPK_GPU_CHECK_BUDGET_S:-570}
# At most this many seconds for any one step (0: each step's own limit). A
# first run on a new machine can set it low, so that one hanging step leaves
# time for the others.
step_cap=${DROPK_GPU_CHECK_STEP_CAP_S:-0}
for setting in "DROPK_GPU_CHECK_BUDGET_S=$budget" "DROPK_GPU_CHECK_STEP_CAP_S=$step_cap"; do
  case "${setting#*=}" in
    '' | *[!0-9]*)
      echo "gpu_check: ${setting%%=*}=${setting#*=}: must be a whole number of seconds (0: no limit)"
      exit 2
      ;;
  esac
done
# Seconds of the budget left for a step (15 s are kept for the summary).
budget_left() {
  if [ "$budget" -le 0 ]; then echo 1000000; else echo $((budget - $(elapsed) - 15)); fi
}
# bounded SECONDS CMD...: CMD under `timeout`, clipped to what is left of the
# budget; not run (exit 124) when less than 15 s are left.
bounded() {
  local secs=$1 left
  shift
  left=$(budget_left)
  if [ "$left" -lt 15 ]; then
    echo "gpu_check: not run, the ${budget} s budget is spent (DROPK_GPU_CHECK_BUDGET_S): $*"
    return 124
  fi
  [ "$left" -lt "$secs" ] && secs=$left
  [ "$step_cap" -gt 0 ] && [ "$step_cap" -lt "$secs" ] && secs=$step_cap
  # -k: a step that ignores SIGTERM is killed 10 s later, so the table prints.
  # In the background, waited for: `timeout` leads its own process group, so
  # a stop sent to the script's group reaches only the script, and a shell
  # runs its trap (stopped, below) only once a foreground command ends.
  timeout -k 10 "$secs" "$@" &
  step_pid=$!
  local rc=0
  wait "$step_pid" || rc=$?
  step_pid=""
  return $rc
}
step_pid=""

# summarize: the table (tools/gpu_check_summary.py; its own test,
# gpu_check_summary, runs it on canned logs without a GPU) from the logs so
# far, printed and kept with them; its exit status, 1 when a row failed.
summarize() {
  python3 "$root/tools/gpu_check_summary.py" "$out" "${build_ok:-FAIL}" "${build_s:-$(elapsed)}" \
    "$(elapsed)" "${gpu:-no GPU found}" "${build_what:-CUDA targets}" > "$out/summary.txt" 2>&1
  local rc=$?
  cat "$out/summary.txt"
  keep_logs
  [ -z "$keep" ] || echo "gpu_check: logs packed into $keep/gpu_check_logs.tar.gz"
  return $rc
}
# A stop from outside (a lent machine's time limit sends SIGTERM first):
# the step running is stopped, and the table of what ran still prints.
exec 3>&1 4>&2  # the script's own output, for stopped
stopped() {
  trap - TERM INT
  exec 1>&3 2>&4  # not the log the step in progress writes
  [ -z "$step_pid" ] || kill -TERM "$step_pid" 2> /dev/null
  echo "gpu_check: stopped by a signal after $(elapsed) s; the table of what ran:"
  summarize
  exit 1
}
trap stopped TERM INT

if ! gpu=$(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version \
             --format=csv,noheader 2>/dev/null | head -1) || [ -z "$gpu" ]; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi found none); nothing to check"
  exit 2
fi
arch=$(echo "$gpu" | cut -d, -f2 | tr -d ' .')
echo "gpu_check: $gpu (sm_$arch), $(nproc) cores"

status=0
build_what="CUDA targets"
if [ -n "$prebuilt" ]; then
  build_ok=FAIL
  echo "gpu_check: unpacking $prebuilt"
  rm -rf "${build:?}/bin" "${build:?}/lib" "${build:?}/paths"
  if tar -C "$build" -xJf "$prebuilt" > "$out/build.log" 2>&1; then
    # The tests have the bundle's source and build paths compiled in (data
    # files, the binaries they start): make both lead here.
    link_here() {
      local want=$1 have=$2
      [ -n "$want" ] || return 0
      if [ -e "$want" ]; then
        [ "$(cd "$want" && pwd -P)" = "$(cd "$have" && pwd -P)" ] ||
          echo "gpu_check: warning: $want exists and is not $have; tests may read the wrong files"
        return 0
      fi
      mkdir -p "$(dirname "$want")" && ln -s "$have" "$want"
    }
    source_dir=$(sed -n 's/^source_dir=//p' "$build/paths")
    link_here "$source_dir" "$root"
    link_here "$(sed -n 's/^binary_dir=//p' "$build/paths")" "$build"
    # The bundle's libraries, and the machine's own NCCL and cuBLAS (dropk
    # opens them at run time) where PyTorch's wheels put them: CUDA 13's
    # wheels (nvidia-cublas, no -cu13 suffix) put cuBLAS in nvidia/cu13/lib,
    # with no nvidia.cublas package; NCCL's stays in nvidia/nccl/lib; CUDA
    # 12's are in nvidia/<name>/lib. Then the toolkit's own folders.
    libs="$build/lib"
    wheel_dirs=$(python3 -c '
import os, nvidia
for base in nvidia.__path__:
    for sub in ("cu13/lib", "cublas/lib", "nccl/lib"):
        if os.path.isdir(os.path.join(base, sub)):
            print(os.path.join(base, sub))' 2>/dev/null)
    for dir in $wheel_dirs /usr/local/cuda/lib64 /usr/local/cuda/lib; do
      if compgen -G "$dir/libcublas.so.*" > /dev/null || compgen -G "$dir/libnccl.so.*" > /dev/null; then
        libs="$libs:$dir"
      fi
    done
    # For dropk's binaries; PyTorch runs with the machine's own path (below),
    # so it never loads the bundle's libraries in place of its wheels'.
    machine_ld_path=${LD_LIBRARY_PATH-}
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # Which cuBLAS and NCCL the binaries will open (none found: every GPU
    # test skips with "cannot load cuBLAS", and the rows say so).
    for lib in libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
      found=""
      for dir in ${libs//:/ }; do
        [ -e "$dir/$lib" ] && { found="$dir/$lib"; break; }
      done
      echo "gpu_check: $lib: ${found:-not in LD_LIBRARY_PATH, left to the system loader}"
    done
    bundle_arch=$(sed -n 's/^cuda_arch=//p' "$build/paths")
    [ "$bundle_arch" = "$arch" ] ||
      echo "gpu_check: warning: the bundle is built for sm_$bundle_arch, this GPU is sm_$arch"
    build_what="prebuilt $(sed -n 's/^commit=//p' "$build/paths" | cut -c1-12), sm_$bundle_arch"
    if "$build/bin/dropk-train" --help > /dev/null 2>> "$out/build.log"; then
      build_ok=PASS
    else
      echo "gpu_check: the bundle's binaries do not start here:"
      tail -3 "$out/build.log"
      status=1
    fi
  else
    tail -3 "$out/build.log"
    status=1
  fi
else
  # Dependencies: a no-op where present; installs from Debian where it can.
  # Where it cannot (a GPU image without dropk's packages and no way to fetch
  # them), go on: the build says what is really missing, and the PyTorch
  # benchmark and the summary table still run, rather than nothing at all.
  if ! bounded 600 bash tools/setup.sh > "$out/setup.log" 2>&1; then
    echo "gpu_check: tools/setup.sh could not install dropk's dependencies (see $out/setup.log); trying anyway"
    tail -3 "$out/setup.log"
    status=1
  fi

  echo "gpu_check: building (log $out/build.log)"
  build_ok=FAIL
  if bounded 300 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDROPK_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES="$arch" > "$out/build.log" 2>&1 &&
     bounded 3600 cmake --build "$build" -j "$(nproc)" --target dropk_model_tests dropk_mpi_tests \
         dropk_sampler_tests dropk_trainer_tests dropk dropk-train dropk-serve dropk-serve-bench dropk-gpu-train-bench \
         >> "$out/build.log" 2>&1; then
    build_ok=PASS
  else
    tail -20 "$out/build.log"
    status=1
  fi
fi
build_s=$(elapsed)
keep_logs

# gtest_run NAME SECONDS BINARY FILTER: runs the tests into $out/NAME.log.
# A binary that dies inside a test (a DROPK_CHECK abort on a CUDA error, the
# timeout) writes no XML and skips every later test, so it is run again
# without the tests it started, at most twice more, within the same SECONDS
# in all: one broken kernel does not hide the others' results. The summary
# reads the log.
gtest_run() {
  local name=$1 secs=$2 bin=$3 filter=$4 started="" attempt rc crashed=0 left
  [ "$step_cap" -gt 0 ] && [ "$step_cap" -lt "$secs" ] && secs=$step_cap
  local until=$((SECONDS + secs))
  # The tests already started are excluded on a rerun: after the filter's own
  # negative part, if it has one, else as one.
  local sep="-"
  case "$filter" in *-*) sep=":" ;; esac
  : > "$out/$name.log"
  for attempt in 1 2 3; do
    left=$((until - SECONDS))
    [ $left -ge 10 ] || break
    [ "$(budget_left)" -ge 15 ] || break
    rm -f "$out/$name.xml"
    bounded "$left" "$bin" --gtest_filter="$filter${started:+$sep$started}" \
      --gtest_output="xml:$out/$name.xml" >> "$out/$name.log" 2>&1
    rc=$?
    if [ -s "$out/$name.xml" ]; then
      [ $crashed = 0 ] && return $rc
      return 1
    fi
    crashed=1
    echo "gpu_check: $name: exit $rc inside a test; running the rest again" >> "$out/$name.log"
    started=$(sed -n 's/^\[ RUN      \] //p' "$out/$name.log" | tr '\n' ':' | sed 's/:$//')
  done
  return 1
}

# The order: first what has never run on a GPU, correctness before speed,
# so that a step that hangs, or a budget cut short, costs the figures that
# earlier leases measured already (PyTorch's baseline, dropk's throughput,
# the tf32 tracking run), not the verdicts nobody has yet: the bf16
# tensor-core flash kernels, the decode CUDA graphs and batched prefill, the
# engine's and dropk-train's memory checks. Every step is bounded, and each
# one's log is packed for $OUT (keep_logs) as soon as it ends.
if [ $build_ok = PASS ]; then
  echo "gpu_check: kernel tests"
  gtest_run model_tests 300 "$build/bin/dropk_model_tests" \
    '*CudaKernels*:GoldenTest.*:KernelGrad*:-Flash/*:FlashBf16/*' || status=1
  keep_logs
  # The flash attention kernels (KernelOptions::flash_attention; what
  # training uses at TF32 and BF16) in their own processes: a kernel fault
  # there leaves the other rows intact. The bf16 tensor-core kernels
  # (attention_kernels: FLASH_BF16_TENSOR_CORES) have never run on a GPU,
  # and whether they pass, and how fast they are, is what this check most
  # has to tell. Each family is bounded (90 s).
  echo "gpu_check: the flash attention kernels (TF32, then bf16 tensor cores)"
  gtest_run flash_tests 90 "$build/bin/dropk_model_tests" 'Flash/*' || status=1
  gtest_run flash_bf16_tests 90 "$build/bin/dropk_model_tests" 'FlashBf16/*' || status=1
  keep_logs
  # Seconds each, and the CUDA graphs and batched prefill in them have never
  # run on a GPU.
  echo "gpu_check: serving on the GPU (engine vs CPU, batch invariance, graphs, prefill, dropk-serve under load)"
  gtest_run serving_tests 180 "$build/bin/dropk_sampler_tests" \
    'CudaInferenceTest.*:ServeE2eTest.DeviceCuda*' || status=1
  echo "gpu_check: resume on the GPU, checkpoints between CPU and GPU"
  gtest_run resume_tests 180 "$build/bin/dropk_trainer_tests" 'GpuResumeTest.*' || status=1
  keep_logs
  if command -v mpirun > /dev/null; then
    echo "gpu_check: collectives (MPI staging, 2 ranks; NCCL, 1 rank)"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    bounded 120 mpirun -np 2 --oversubscribe "$build/bin/dropk_mpi_tests" \
      --gtest_filter='GpuCollectivesTest.Mpi*' > "$out/mpi_np2.log" 2>&1
    echo "mpi_np2 exit $?" >> "$out/mpi_np2.log"
    bounded 120 mpirun -np 1 "$build/bin/dropk_mpi_tests" \
      --gtest_filter='GpuCollectivesTest.Nccl*' > "$out/mpi_np1.log" 2>&1
    echo "mpi_np1 exit $?" >> "$out/mpi_np1.log"
  else
    for n in np2 np1; do
      echo "gpu_check: not run: no mpirun on this machine" > "$out/mpi_$n.log"
    done
  fi
  keep_logs
  echo "gpu_check: flash attention: 200 steps tracking the CPU, and throughput"
  bounded 150 "$build/bin/dropk-gpu-train-bench" --mode=track --steps=200 --precisions=tf32,bf16 \
    --attention=flash,flash_bf16_tensor_cores --corpus=data/tinyshakespeare.txt \
    > "$out/track_flash.log" 2>&1 || status=1
  bounded 150 "$build/bin/dropk-gpu-train-bench" --mode=throughput --batch=16 --steps=10 \
    --precisions=tf32,bf16 --attention=flash,flash_bf16_tensor_cores --profile \
    > "$out/bench_flash.log" 2>&1 || status=1
  keep_logs
  # The flash kernels under compute-sanitizer: out-of-bounds accesses
  # (memcheck: every head size, partial tiles) and shared-memory races
  # (racecheck, slower: one case). --error-exitcode makes the exit status
  # the verdict.
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  for tool in memcheck racecheck; do
    if [ -n "$sanitizer" ]; then
      echo "gpu_check: compute-sanitizer --tool $tool on the flash kernels"
      case_filter='Flash/CudaKernelsFlashTest.AttentionMatchesTheCpuAtEveryHeadSize/tf32_flash'
      case_filter+=':FlashBf16/CudaKernelsFlashBf16Test.AttentionMatchesTheCpuAtEveryHeadSize/*'
      [ $tool = racecheck ] && case_filter='Flash/CudaKernelsFlashTest.AttentionIsReproducible/tf32_flash:FlashBf16/CudaKernelsFlashBf16Test.AttentionIsReproducible/*'
      bounded 120 "$sanitizer" --tool "$tool" --error-exitcode 3 "$build/bin/dropk_model_tests" \
        --gtest_filter="$case_filter" > "$out/sanitizer_$tool.log" 2>&1
      echo "sanitizer exit $?" >> "$out/sanitizer_$tool.log"
    else
      echo "gpu_check: not run: no compute-sanitizer on this machine" > "$out/sanitizer_$tool.log"
    fi
    keep_logs
  done
  # dropk-train itself on the GPU, as a user runs it: the CUDA recipe config
  # (its memory check, flash attention by default), a resume from its
  # checkpoint, the materialised kernels through the config field, NCCL, and
  # the newest checkpoint of each run verified. Short runs: 60 steps, then 30
  # more. The runs' directories (checkpoints of ~130 MB each) stay out of
  # $out, whose logs are what a lent machine sends back.
  echo "gpu_check: dropk-train with configs/shakespeare_char_cuda.textproto (flash, resume, materialised, init_from, nccl)"
  runs=$build/gpu_check_runs
  train_data=$runs/data
  rm -rf "$runs"
  if ! bounded 60 "$build/bin/dropk" data prepare --tokenizer char --out "$train_data" \
      data/tinyshakespeare.txt > "$out/train_prepare.log" 2>&1; then
    echo "gpu_check: dropk data prepare failed (see $out/train_prepare.log)"
    status=1
  fi
  # train_run NAME RUN_DIR SECONDS ARGS...: one dropk-train run into
  # $out/NAME.log, which ends with its exit status and then the verdict of
  # `dropk ckpt verify` on RUN_DIR's newest checkpoint.
  train_run() {
    local name=$1 run_dir=$2 secs=$3
    shift 3
    bounded "$secs" "$build/bin/dropk-train" --config configs/shakespeare_char_cuda.textproto \
      --data_dir="$train_data" --out_dir="$run_dir" --eval_interval=30 --eval_iters=5 \
      --save_every=30 --sample_tokens=40 "$@" > "$out/$name.log" 2>&1
    echo "train exit $?" >> "$out/$name.log"
    bounded 60 "$build/bin/dropk" ckpt verify "$run_dir/checkpoints" >> "$out/$name.log" 2>&1
    echo "verify exit $?" >> "$out/$name.log"
    keep_logs
  }
  train_run train_flash "$runs/flash" 90 --max_iters=60
  train_run train_flash_resumed "$runs/flash" 60 --max_iters=90 --resume=latest
  # init_from on the GPU: the resumed run's weights, exported as safetensors,
  # read back by a run of 0 steps, which must evaluate them to its val loss.
  {
    bounded 60 "$build/bin/dropk" ckpt export "$runs/flash" --out "$runs/flash.safetensors" \
      --format safetensors
    echo "export exit $?"
    bounded 60 "$build/bin/dropk-train" --config configs/shakespeare_char_cuda.textproto \
      --data_dir="$train_data" --out_dir="$runs/init_from" --eval_iters=5 --sample_tokens=0 \
      --max_iters=0 --init_from="$runs/flash.safetensors"
    echo "train exit $?"
  } > "$out/train_init_from.log" 2>&1
  keep_logs
  train_run train_materialised "$runs/materialised" 90 --max_iters=60 \
    --attention_kernels=materialised
  # NCCL under dropk-train, one rank (NCCL refuses two on one GPU): the
  # communicator's start, the parameters' broadcast through it, its end.
  train_run train_nccl "$runs/nccl" 60 --max_iters=30 --comm_backend=nccl
fi
# Speed, measured on earlier leases: PyTorch's baseline and dropk beside it.
echo "gpu_check: PyTorch GPT-2 124M throughput"
LD_LIBRARY_PATH=${machine_ld_path-${LD_LIBRARY_PATH-}} \
  bounded 300 python3 bench/torch_gpt2_bench.py --batch=16 --steps=10 \
  > "$out/bench_torch.log" 2>&1
keep_logs
if [ $build_ok = PASS ]; then
  echo "gpu_check: serving tokens/s on the GPU (1 to 64 streams)"
  bounded 180 "$build/bin/dropk-serve-bench" --device cuda --model gpt2 --threads 4 \
    > "$out/serve_bench.log" 2>&1 || status=1
  keep_logs
  echo "gpu_check: 200 steps tracking the CPU"
  bounded 240 "$build/bin/dropk-gpu-train-bench" --mode=track --steps=200 \
    --corpus=data/tinyshakespeare.txt > "$out/track.log" 2>&1 || status=1
  keep_logs
  echo "gpu_check: dropk GPT-2 124M throughput"
  bounded 240 "$build/bin/dropk-gpu-train-bench" --mode=throughput --batch=16 --steps=10 \
    --profile > "$out/bench_dropk.log" 2>&1 || status=1
  keep_logs
fi

summarize || status=1
exit $status
