#!/usr/bin/env python3
"""tools/gpu_check_summary.py on canned logs, without a GPU.

The logs of the first H200 run (tests/data/gpu_check_h200) give the rows that
run had; added logs stand for the steps written since (flash attention, the
compute-sanitizer steps) and for the ways a step goes wrong: a crash inside a
test, a sanitizer error, a step the budget cut. A GPU lease is short and
rare: a summary that misreads a log wastes one.

Usage: gpu_check_summary_test.py SOURCE_DIR
"""
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

SOURCE = pathlib.Path(sys.argv[1])
SUMMARY = SOURCE / "tools" / "gpu_check_summary.py"
FIXTURE = SOURCE / "tests" / "data" / "gpu_check_h200"
failures = []


def run(out_dir):
    """(exit status, {check: (result, detail)}, whole output) of the summary."""
    p = subprocess.run([sys.executable, str(SUMMARY), str(out_dir), "PASS", "2", "170",
                        "NVIDIA H200, 9.0", "prebuilt test"],
                       capture_output=True, text=True, timeout=60)
    rows = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\| (.+?) +\| (PASS|FAIL|SKIP|-) +\| ?(.*)$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return p.returncode, rows, p.stdout + p.stderr


def expect(what, condition, output=""):
    if not condition:
        failures.append(what + ("\n" + output if output else ""))


def result_of(rows, prefix):
    """The one row named prefix, or else the one row whose name starts with it."""
    if prefix in rows:
        return rows[prefix]
    hits = [r for check, r in rows.items() if check.startswith(prefix)]
    return hits[0] if len(hits) == 1 else (None, f"{len(hits)} rows start with {prefix!r}")


def write(path, text):
    path.write_text(text)


FLASH_TESTS_PASSED = """[==========] Running 2 tests from 1 test suite.
[ RUN      ] Flash/CudaKernelsFlashTest.AttentionMatchesTheCpuAtEveryHeadSize/tf32_flash
[       OK ] Flash/CudaKernelsFlashTest.AttentionMatchesTheCpuAtEveryHeadSize/tf32_flash (40 ms)
[ RUN      ] Flash/CudaKernelsFlashTest.AttentionIsReproducible/bf16_flash
[       OK ] Flash/CudaKernelsFlashTest.AttentionIsReproducible/bf16_flash (3 ms)
[  PASSED  ] 2 tests.
"""


FLASH_BF16_TESTS_PASSED = """[==========] Running 2 tests from 1 test suite.
[ RUN      ] FlashBf16/CudaKernelsFlashBf16Test.DropoutZerosAreTheCpus/bf16_tensor_cores
[       OK ] FlashBf16/CudaKernelsFlashBf16Test.DropoutZerosAreTheCpus/bf16_tensor_cores (40 ms)
[ RUN      ] FlashBf16/CudaKernelsFlashBf16Test.AttentionIsReproducible/bf16_tensor_cores
[       OK ] FlashBf16/CudaKernelsFlashBf16Test.AttentionIsReproducible/bf16_tensor_cores (3 ms)
[  PASSED  ] 2 tests.
"""


def added_steps(out):
    """Logs of the steps written after the H200 run, each passing."""
    write(out / "flash_tests.log", FLASH_TESTS_PASSED)
    write(out / "flash_bf16_tests.log", FLASH_BF16_TESTS_PASSED)
    write(out / "track_flash.log",
          "track tf32_flash 200 steps, dropout 0.1: max |gpu - cpu| loss 0.0004 (bound 0.05) PASS\n"
          "track bf16_flash 200 steps, dropout 0.1: max |gpu - cpu| loss 0.0006 (bound 0.10) PASS\n"
          "track bf16_flash_tc 200 steps, dropout 0.1: max |gpu - cpu| loss 0.0020 (bound 0.10) PASS\n")
    write(out / "bench_flash.log",
          "dropk bf16_flash dropout 0.0 | GPT-2 124M B=16 T=1024 | step    70.0 ms (median of 10) |"
          "    234057 tokens/s |  201.4 TFLOP/s | MFU  20.4% | loss 8.949\n"
          "dropk bf16_flash dropout 0.1 | GPT-2 124M B=16 T=1024 | step    72.0 ms (median of 10) |"
          "    227555 tokens/s |  195.8 TFLOP/s | MFU  19.8% | loss 7.977\n"
          "profile bf16_flash dropout 0.1 (10 steps, a device wait after each op):\n"
          "op                          ms/step calls/step  % step\n"
          "AttentionBackward             9.000       12.0   12.0%\n"
          "step                         75.000             100.0%\n")
    write(out / "sanitizer_memcheck.log",
          "========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\nsanitizer exit 0\n")
    write(out / "sanitizer_racecheck.log",
          "========= COMPUTE-SANITIZER\n"
          "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"
          "sanitizer exit 0\n")
    for name, text in TRAIN_RUNS_PASSED.items():
        write(out / f"{name}.log", text)
    write(out / "train_init_from.log", INIT_FROM_PASSED)


INIT_FROM_PASSED = ("OK: wrote x/flash.safetensors\nexport exit 0\n"
                    "dropk-train: initialised from init_from=x/flash.safetensors\n"
                    "dropk-train: done, 0 steps, val loss 2.3, 1.0 s\ntrain exit 0\n")

HEADER = ("dropk-train: 10745472 parameters (6 layers, 6 heads, 384 embd, vocab 65, context 256), "
          "16384 tokens/step, 1 rank(s) over single-process, cuda:0 NVIDIA H200 (sm_90, 132 SMs, "
          "139.8 GiB), bf16 matmuls, CUDA runtime 13.0, cuBLASLt 130000")
FLASH = ", flash attention at head sizes 16, 32, 64"
CLOSING = "train exit 0\nOK x/checkpoints/step-{0:08d}: step {0}, every CRC32C matches\nverify exit 0\n"
TRAIN_RUNS_PASSED = {
    "train_flash": HEADER + FLASH + "\ndropk-train: done, 60 steps, val loss 2.4, 3.1 s\n" +
                   CLOSING.format(60),
    "train_flash_resumed": "dropk-train: resumed from x/checkpoints/step-00000060 at step 60\n" +
                           HEADER + FLASH + "\ndropk-train: done, 90 steps, val loss 2.3, 2.0 s\n" +
                           CLOSING.format(90),
    "train_materialised": HEADER + "\ndropk-train: done, 60 steps, val loss 2.4, 3.5 s\n" +
                          CLOSING.format(60),
    "train_nccl": HEADER.replace("over single-process", "over nccl+single-process") + FLASH +
                  "\ndropk-train: done, 30 steps, val loss 2.6, 2.2 s\n" + CLOSING.format(30),
}


with tempfile.TemporaryDirectory() as tmp:
    # The H200 run as it was: its rows pass; the steps it did not have fail
    # as "did not run", so the run as a whole fails.
    out = pathlib.Path(tmp) / "h200"
    shutil.copytree(FIXTURE, out)
    status, rows, text = run(out)
    expect("the b35e29d run fails for its missing flash steps", status == 1, text)
    for check in ("kernels vs CPU, fp32", "kernels vs CPU, tf32", "kernels vs CPU, bf16",
                  "dropout masks bitwise", "PyTorch golden fixture on the GPU",
                  "bitwise exact resume", "GPU serving: logits", "GPU serving: batch invariance",
                  "MPI staging CUDA buffers", "NCCL allreduce",
                  "200 steps track CPU losses, fp32", "200 steps track CPU losses, bf16"):
        expect(f"{check}: PASS", result_of(rows, check)[0] == "PASS", text)
    expect("flash tests: did not run",
           result_of(rows, "flash attention kernels") == ("FAIL", "did not run"), text)
    expect("flash tracking: did not finish",
           result_of(rows, "200 steps track CPU losses, tf32_flash")[0] == "FAIL", text)
    expect("bf16 tensor-core flash tests: did not run",
           result_of(rows, "bf16 tensor-core flash kernels") == ("FAIL", "did not run"), text)
    expect("sanitizer rows: did not run",
           result_of(rows, "compute-sanitizer memcheck") == ("-", "did not run"), text)
    expect("throughput table", "| dropk bf16 | 0.1 | 132,408 | 11.5% |" in text, text)
    expect("the serving table", "single-stream decode (engine on the GPU, no HTTP): 634.9" in text,
           text)

    # With the steps written since, all passing: every row passes.
    added_steps(out)
    status, rows, text = run(out)
    bad = {c: r for c, r in rows.items() if r[0] != "PASS"}
    expect(f"every row passes (not: {bad})", status == 0 and not bad, text)
    expect("racecheck's own summary is read",
           "RACECHECK SUMMARY: 0 hazards" in result_of(rows, "compute-sanitizer racecheck")[1],
           text)
    expect("the flash throughput and its goal lines",
           "| dropk bf16_flash | 0.1 | 227,555 | 19.8% |" in text and
           "dropk bf16_flash dropout cost (0.1 vs 0): 2.8% (goal <= 5%)" in text, text)
    expect("the flash profile", "profile bf16_flash dropout 0.1" in text and
           "AttentionBackward             9.000" in text, text)

    expect("a dropk-train run's row quotes its closing line",
           result_of(rows, "dropk-train, the same run resumed") ==
           ("PASS", "done, 90 steps, val loss 2.3; newest checkpoint verifies"), text)

    # The materialised run using flash anyway, the resumed run's checkpoints
    # failing to verify, the first run cut by the budget.
    write(out / "train_materialised.log", TRAIN_RUNS_PASSED["train_flash"])
    write(out / "train_flash_resumed.log",
          TRAIN_RUNS_PASSED["train_flash_resumed"].replace("verify exit 0", "verify exit 1"))
    write(out / "train_flash.log",
          "gpu_check: not run, the 570 s budget is spent (DROPK_GPU_CHECK_BUDGET_S): x\n"
          "train exit 124\nverify exit 2\n")
    status, rows, text = run(out)
    r = result_of(rows, "dropk-train, attention_kernels: MATERIALISED")
    expect("flash named in the materialised run fails it",
           status == 1 and r[0] == "FAIL" and "says 'flash attention" in r[1], text)
    r = result_of(rows, "dropk-train, the same run resumed")
    expect("checkpoints that do not verify fail the row",
           r[0] == "FAIL" and "newest checkpoint does not verify" in r[1], text)
    expect("a run the budget cut did not run",
           result_of(rows, "dropk-train, CUDA recipe config") == ("-", "did not run (budget spent)"),
           text)
    # init_from: weights that did not arrive (an untrained val loss) fail,
    # as does an export that failed.
    write(out / "train_init_from.log", INIT_FROM_PASSED.replace("val loss 2.3", "val loss 4.17"))
    status, rows, text = run(out)
    r = result_of(rows, "dropk-train --init_from")
    expect("an init_from run far from the exported run's val loss fails",
           status == 1 and r[0] == "FAIL" and "val loss 4.17, the exported run's 2.3" in r[1], text)
    write(out / "train_init_from.log", INIT_FROM_PASSED.replace("export exit 0", "export exit 2"))
    status, rows, text = run(out)
    r = result_of(rows, "dropk-train --init_from")
    expect("a failed export fails the init_from row", r[0] == "FAIL" and "export failed" in r[1],
           text)
    write(out / "train_init_from.log", INIT_FROM_PASSED)
    status, rows, text = run(out)
    expect("init_from row passes", result_of(rows, "dropk-train --init_from") ==
           ("PASS", "val loss 2.3, the exported run's 2.3"), text)
    # A run that fell back from NCCL (its header names another backend) fails.
    write(out / "train_nccl.log", TRAIN_RUNS_PASSED["train_flash"])
    status, rows, text = run(out)
    r = result_of(rows, "dropk-train, comm_backend: NCCL")
    expect("a run not over NCCL fails the NCCL row", r[0] == "FAIL" and "over nccl" in r[1], text)
    # A run on the CPU (no "cuda:" in its header) does not pass for the GPU's.
    write(out / "train_materialised.log",
          TRAIN_RUNS_PASSED["train_materialised"].replace("cuda:0", "cpu"))
    status, rows, text = run(out)
    r = result_of(rows, "dropk-train, attention_kernels: MATERIALISED")
    expect("a run that did not name the GPU fails", r[0] == "FAIL" and "no 'cuda:'" in r[1], text)
    for name, text in TRAIN_RUNS_PASSED.items():
        write(out / f"{name}.log", text)

    # The serving tests written since the H200 run: a failure of the CUDA
    # graphs' bit comparison shows in the bit-for-bit row, not in the row of
    # logits within a tolerance of the CPU's.
    serving_log = (out / "serving_tests.log").read_text()
    write(out / "serving_tests.log", serving_log.replace(
        "[ RUN      ] ServeE2eTest.",
        "[ RUN      ] CudaInferenceTest.PrefillManyGivesEachPromptItsOwnBits\n"
        "[       OK ] CudaInferenceTest.PrefillManyGivesEachPromptItsOwnBits (9 ms)\n"
        "[ RUN      ] CudaInferenceTest.GraphsGiveTheBitsOfSeparateLaunches\n"
        "[  FAILED  ] CudaInferenceTest.GraphsGiveTheBitsOfSeparateLaunches (8 ms)\n"
        "[ RUN      ] ServeE2eTest.", 1))
    status, rows, text = run(out)
    r = result_of(rows, "GPU serving: batch invariance")
    expect("a graphs test failing fails the bit-for-bit serving row, named",
           status == 1 and r[0] == "FAIL" and "GraphsGiveTheBitsOfSeparateLaunches" in r[1] and
           r[1].startswith("3 passed, 1 failed"), text)
    expect("the serving row of logits within a tolerance is not the one that fails",
           result_of(rows, "GPU serving: logits")[0] == "PASS", text)
    write(out / "serving_tests.log", serving_log)

    # A flash test that died inside (an illegal address ends the process):
    # that test fails, named.
    write(out / "flash_tests.log",
          FLASH_TESTS_PASSED.split("[  PASSED")[0].rsplit("[       OK ]", 1)[0] +
          "gpu_check: flash_tests: exit 134 inside a test; running the rest again\n")
    status, rows, text = run(out)
    r = result_of(rows, "flash attention kernels")
    expect("a crash inside a test fails it, named",
           status == 1 and r[0] == "FAIL" and "AttentionIsReproducible" in r[1], text)

    # racecheck finding a hazard (exit 3), memcheck cut by the budget.
    write(out / "flash_tests.log", FLASH_TESTS_PASSED)
    write(out / "sanitizer_racecheck.log",
          "========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)\n"
          "sanitizer exit 3\n")
    write(out / "sanitizer_memcheck.log",
          "gpu_check: not run, the 570 s budget is spent (DROPK_GPU_CHECK_BUDGET_S): x\n"
          "sanitizer exit 124\n")
    status, rows, text = run(out)
    expect("a racecheck hazard fails its row",
           status == 1 and result_of(rows, "compute-sanitizer racecheck")[0] == "FAIL", text)
    expect("a step the budget cut did not run",
           result_of(rows, "compute-sanitizer memcheck") == ("-", "did not run (budget spent)"),
           text)

    # No compute-sanitizer on the machine: SKIP, saying so.
    write(out / "sanitizer_racecheck.log",
          "gpu_check: not run: no compute-sanitizer on this machine\n")
    status, rows, text = run(out)
    expect("a missing tool is a SKIP that names it",
           result_of(rows, "compute-sanitizer racecheck") ==
           ("SKIP", "no compute-sanitizer on this machine"), text)

for f in failures:
    print("FAIL:", f[:3000])
print(f"gpu_check_summary: {'FAILED' if failures else 'passed'}")
sys.exit(1 if failures else 0)
