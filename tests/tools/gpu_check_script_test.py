#!/usr/bin/env python3
"""tools/gpu_check.sh end to end without a GPU: a fake nvidia-smi and a fake
prebuilt bundle whose binaries print a line and exit at once.

A lent GPU machine sends back only what is under $OUT, at most 8 files, and
runs a command for at most 600 s. So the check must leave its logs there as
one archive, packed again after every step (a run stopped at the limit
still returns them), cut any huge log, print the summary table, and run
what has never run on a GPU (the bf16 flash kernels, the serving engine's
graphs and prefill, dropk-train's runs) before the speed figures earlier
leases measured already (PyTorch's baseline, dropk's throughput).

Usage: gpu_check_script_test.py SOURCE_DIR
"""
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time

SOURCE = pathlib.Path(sys.argv[1])
failures = []


def expect(what, condition, output=""):
    if not condition:
        failures.append(what + ("\n" + output[-4000:] if output else ""))


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    fake_bin = tmp / "fake_path"
    fake_bin.mkdir()
    executable(fake_bin / "nvidia-smi",
               "#!/bin/sh\necho 'NVIDIA H200, 9.0, 143771 MiB, 580.159.04'\n")
    # The bundle: every binary gpu_check.sh starts, printing its arguments.
    # The GPU benchmark writes 5 MiB, which the archive must cut.
    stage = tmp / "stage"
    (stage / "bin").mkdir(parents=True)
    (stage / "lib").mkdir()
    for name in ["dropk_model_tests", "dropk_mpi_tests", "dropk_sampler_tests",
                 "dropk_trainer_tests", "dropk", "dropk-train", "dropk-serve",
                 "dropk-serve-bench"]:
        executable(stage / "bin" / name, "#!/bin/sh\necho \"fake $0 $*\"\nexit 0\n")
    executable(stage / "bin" / "dropk-gpu-train-bench",
               "#!/bin/sh\necho \"fake $0 $*\"\n"
               "case \"$*\" in *track*) [ -z \"$FAKE_HANG\" ] || exec sleep 300 ;; esac\n"
               "head -c 5242880 /dev/zero | tr '\\0' x\necho\necho the end\n")
    (stage / "paths").write_text("commit=0123456789abcdef\ncuda_arch=90\n")
    bundle = tmp / "dropk-gpu.tar.xz"
    subprocess.run(["tar", "-C", str(stage), "-cJf", str(bundle), "bin", "lib", "paths"],
                   check=True)

    # PyTorch's benchmark fails at once, also where torch is installed.
    fake_py = tmp / "fake_py"
    (fake_py / "torch").mkdir(parents=True)
    (fake_py / "torch" / "__init__.py").write_text("raise ImportError('no torch in this test')\n")

    out = tmp / "OUT"
    out.mkdir()
    env = dict(os.environ)
    env.update({"PATH": f"{fake_bin}:{env['PATH']}", "OUT": str(out), "PYTHONPATH": str(fake_py),
                "DROPK_GPU_BUILD_DIR": str(tmp / "build-gpu"),
                "DROPK_GPU_CHECK_STEP_CAP_S": "30"})
    env.pop("DROPK_GPU_CHECK_KEEP_DIR", None)
    p = subprocess.run(["bash", str(SOURCE / "tools" / "gpu_check.sh"), "--prebuilt",
                        str(bundle)], cwd=SOURCE, env=env, capture_output=True, text=True,
                       timeout=600)
    output = p.stdout + p.stderr
    # Fake tests report nothing: rows fail, and the exit status says so.
    expect("exit status 1 with failing rows", p.returncode == 1, output)
    expect("the summary table is printed", "| build (prebuilt 0123456789ab, sm_90)" in p.stdout,
           output)

    sent = sorted(f.name for f in out.iterdir())
    expect(f"at most 8 files under $OUT (a lent machine returns no more): {sent}",
           len(sent) <= 8)
    archive = out / "gpu_check_logs.tar.gz"
    expect("$OUT/gpu_check_logs.tar.gz written", archive.is_file(), output)
    if archive.is_file():
        with tarfile.open(archive) as tar:
            members = {pathlib.PurePath(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for log in ["build.log", "model_tests.log", "flash_bf16_tests.log", "serving_tests.log",
                        "resume_tests.log", "track_flash.log", "bench_flash.log",
                        "train_flash.log", "train_materialised.log", "train_nccl.log", "train_init_from.log", "bench_torch.log",
                        "serve_bench.log", "track.log", "bench_dropk.log", "summary.txt"]:
                expect(f"{log} in the archive (has {sorted(members)})", log in members)
            big = members.get("bench_dropk.log")
            if big is not None:
                expect(f"a 5 MiB log is cut to 1 MiB in the archive ({big.size} bytes)",
                       big.size <= 1048576 + 100)
                text = tar.extractfile(big).read().decode()
                expect("a cut log keeps its end and says where it was cut",
                       text.rstrip().endswith("the end") and "cut here" in text)
            summary = members.get("summary.txt")
            if summary is not None:
                expect("the archive's summary is the printed table",
                       tar.extractfile(summary).read().decode() in p.stdout)

    # Never run on a GPU first, speed measured before last.
    order = ["gpu_check: the flash attention kernels", "gpu_check: serving on the GPU",
             "gpu_check: flash attention: 200 steps", "gpu_check: dropk-train with",
             "gpu_check: PyTorch GPT-2 124M throughput", "gpu_check: dropk GPT-2 124M throughput"]
    at = [p.stdout.find(line) for line in order]
    expect(f"steps in the order {order} (found at {at})", -1 not in at and at == sorted(at),
           output)

    # Stopped from outside (a lent machine's limit sends SIGTERM to the
    # command's process group) while a step hangs: the step ends, the table
    # of what ran prints and the logs are packed.
    shutil.rmtree(tmp / "build-gpu")
    archive.unlink(missing_ok=True)
    hang = dict(env, FAKE_HANG="1")
    proc = subprocess.Popen(["bash", str(SOURCE / "tools" / "gpu_check.sh"), "--prebuilt",
                             str(bundle)], cwd=SOURCE, env=hang, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = ""
    for line in proc.stdout:
        seen += line
        if line.startswith("gpu_check: flash attention: 200 steps"):
            break
    time.sleep(1)  # into the hanging step
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        expect("a stopped check ends within 60 s", False, seen + rest)
    seen += rest
    expect("a stopped check exits 1", proc.returncode == 1, seen)
    expect("a stopped check says so", "gpu_check: stopped by a signal" in seen, seen)
    expect("a stopped check prints the table", "| build (prebuilt" in seen, seen)
    expect("a stopped check packs its logs", archive.is_file(), seen)
    if archive.is_file():
        with tarfile.open(archive) as tar:
            names = {pathlib.PurePath(m.name).name for m in tar.getmembers()}
        expect(f"the stopped step's log is kept ({sorted(names)})",
               {"track_flash.log", "summary.txt", "serving_tests.log"} <= names)

    # Without OUT (and DROPK_GPU_CHECK_KEEP_DIR) nothing is packed.
    env.pop("OUT")
    shutil.rmtree(tmp / "build-gpu")
    p = subprocess.run(["bash", str(SOURCE / "tools" / "gpu_check.sh"), "--prebuilt",
                        str(bundle)], cwd=SOURCE, env=env, capture_output=True, text=True,
                       timeout=600)
    expect("without OUT no archive is mentioned", "gpu_check_logs" not in p.stdout,
           p.stdout + p.stderr)
    expect("without OUT the table still prints", "| build (prebuilt" in p.stdout)

if failures:
    print("FAILED:\n- " + "\n- ".join(failures))
    sys.exit(1)
print("gpu_check_script_test: all checks passed")
