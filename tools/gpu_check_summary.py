#!/usr/bin/env python3
"""The summary of tools/gpu_check.sh: one table of every check, then the
training throughput beside PyTorch's, the goals, the per-op profiles and the
serving figures, all read from the logs the script left in OUT.

Usage: gpu_check_summary.py OUT BUILD_OK BUILD_S TOTAL_S GPU BUILD_WHAT

A row is PASS, FAIL, SKIP or "-" (did not run because the build failed). A
step that crashed or ran out of time counts as FAIL for the tests it did not
finish. Exit status 1 when any row is FAIL.
"""
import re, sys, xml.etree.ElementTree as ET
out, build_ok, build_s, total_s, gpu, build_what = sys.argv[1:7]
rows, failed = [], False

def row(check, result, detail=""):
    global failed
    failed |= result == "FAIL"
    rows.append((check, result, detail))

row(f"build ({build_what})", build_ok, f"{build_s} s")

def cases(path):
    # The log first: after a rerun (see gtest_run) the XML holds only the
    # last attempt's tests.
    from_log = cases_from_log(path[:-len(".xml")] + ".log")
    if from_log:
        return from_log
    try:
        root = ET.parse(path).getroot()
    except Exception as e:
        return None
    result = {}
    for tc in root.iter("testcase"):
        name = f"{tc.get('classname')}.{tc.get('name')}"
        if tc.find("failure") is not None:
            result[name] = "FAIL"
        elif tc.find("skipped") is not None or tc.get("result") == "skipped":
            result[name] = "SKIP"
        else:
            result[name] = "PASS"
    return result

def strip_colour(text):
    # gtest colours its lines when it thinks it writes to a terminal (under
    # mpirun it does): "\x1b[0;32m[  PASSED  ] \x1b[m1 test."
    return re.sub(r"\x1b\[[0-9;]*m", "", text)

def cases_from_log(path):
    # gtest writes its XML only at the end: a binary that aborted (a
    # DROPK_CHECK on a CUDA error) or hit the timeout left none. Its log still
    # says how each test that ran ended; the test it was in is the failure.
    try:
        lines = strip_colour(open(path, errors="replace").read()).splitlines()
    except OSError:
        return None
    result, running = {}, None
    for line in lines:
        m = re.match(r"\[ +(RUN|OK|FAILED|SKIPPED) +\] (\S+)", line)
        if not m:
            continue
        what, name = m.groups()
        if what == "RUN":
            if running is not None:
                result[running] = "FAIL"  # the process died inside it (rerun after)
            running = name
        elif name == running:
            result[name] = {"OK": "PASS", "FAILED": "FAIL", "SKIPPED": "SKIP"}[what]
            running = None
    if running is not None:
        result[running] = "FAIL"  # crashed or timed out inside it
    return result or None

def summarize(check, tests, skip_fails=True):
    # On a machine with a GPU a skipped kernel test means the GPU was unusable.
    if not tests:
        row(check, "FAIL" if build_ok == "PASS" else "-", "did not run")
        return
    bad = [n for n, r in tests.items() if r == "FAIL"]
    skipped = [n for n, r in tests.items() if r == "SKIP"]
    passed = len(tests) - len(bad) - len(skipped)
    result = "FAIL" if bad or (skip_fails and skipped) else ("SKIP" if passed == 0 else "PASS")
    detail = f"{passed} passed, {len(bad)} failed, {len(skipped)} skipped"
    if bad:
        detail += ": " + ", ".join(b.split(".")[-1] for b in bad[:3])
    row(check, result, detail)

model = cases(f"{out}/model_tests.xml") or {}
tols = {"fp32": "1e-5", "tf32": "2e-3", "bf16": "2e-2"}
for p in ("fp32", "tf32", "bf16"):
    summarize(f"kernels vs CPU, {p} (matmul tol {tols[p]})",
              {n: r for n, r in model.items() if n.endswith("/" + p) and "DropoutMasks" not in n})
summarize("flash attention kernels vs CPU, tf32 and bf16 (attention 2e-3, GPT 10x matmul tol)",
          cases(f"{out}/flash_tests.xml") or {})
summarize("bf16 tensor-core flash kernels vs CPU (2e-2; dropout zeros == CPU's)",
          cases(f"{out}/flash_bf16_tests.xml") or {})
summarize("dropout masks bitwise CPU == GPU (4 sites, 2 modes)",
          {n: r for n, r in model.items() if "DropoutMasks" in n and n.endswith("/fp32")})
summarize("PyTorch golden fixture on the GPU",
          {n: r for n, r in model.items() if n.endswith("OnTheGpu")})
summarize("CPU oracle still passes (golden, gradcheck)",
          {n: r for n, r in model.items() if n.startswith(("GoldenTest", "KernelGrad")) and
           not n.endswith("OnTheGpu")})

resume = cases(f"{out}/resume_tests.xml") or {}
summarize("bitwise exact resume on the GPU",
          {n: r for n, r in resume.items() if "Bitwise" in n})
summarize("checkpoints CPU -> GPU and GPU -> CPU (params within 1e-4)",
          {n: r for n, r in resume.items() if "BetweenCpuAndGpu" in n})
serving = cases(f"{out}/serving_tests.xml") or {}
# The tests that compare bits (batch invariance; batched prefill against
# each prompt alone; CUDA graphs against separate launches), apart from
# those within a tolerance of the CPU engine and the refusals.
bitwise = ("BatchInvariant", "DeviceCuda", "PrefillMany", "Graphs")
summarize("GPU serving: logits vs CPU engine (tol 1e-5), refusals",
          {n: r for n, r in serving.items() if n.startswith("CudaInferenceTest") and
           not any(b in n for b in bitwise) and "NoGpu" not in n})
summarize("GPU serving: batch invariance, batched prefill, CUDA graphs: bit for bit; "
          "same seed under load",
          {n: r for n, r in serving.items() if any(b in n for b in bitwise)})

def log_of(path, check, missing):
    # The log's text; or None, after a row saying the step did not run, that
    # (the script wrote "not run: no ...") `missing` is not here, or that the
    # budget was spent before it.
    try:
        text = strip_colour(open(path, errors="replace").read())
    except OSError:
        row(check, "-", "did not run")
        return None
    if "not run: no " in text:
        row(check, "SKIP", f"no {missing} on this machine")
        return None
    if "budget is spent" in text:
        row(check, "-", "did not run (budget spent)")
        return None
    return text

def mpi(path, check):
    text = log_of(path, check, "mpirun")
    if text is None:
        return
    # gtest's own counts ("[  PASSED  ] N tests." excludes skipped ones), and
    # mpirun's exit status, which the script appends ("... exit N").
    passed = re.search(r"\[  PASSED  \] (\d+) test", text)
    skipped = re.search(r"\[  SKIPPED \] (\d+) test", text)
    exited_ok = re.search(r" exit 0$", text, re.M) is not None
    n_passed = int(passed.group(1)) if passed else 0
    n_skipped = int(skipped.group(1)) if skipped else 0
    reason = re.search(r"needs [^\n]*", text)
    why = reason.group(0)[:60] if reason else "skipped"
    if not passed or "FAILED" in text or not exited_ok:
        row(check, "FAIL", "" if exited_ok else "mpirun failed or timed out")
    elif n_passed == 0:
        row(check, "SKIP", why)
    else:
        # At 1 rank the stuck-collective test always skips (it needs 2 ranks):
        # the check still passed.
        row(check, "PASS", f"{n_passed} passed" + (f", {n_skipped} skipped: {why}" if n_skipped else ""))

def sanitizer(tool):
    check = f"compute-sanitizer {tool}, flash kernels"
    text = log_of(f"{out}/sanitizer_{tool}.log", check, "compute-sanitizer")
    if text is None:
        return
    # memcheck ends with "ERROR SUMMARY: N errors", racecheck with
    # "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)"; the
    # exit status (3 on any error, --error-exitcode) decides.
    summary = re.search(r"(ERROR|RACECHECK) SUMMARY: [^\n]*", text)
    said = summary.group(0) if summary else "no summary line"
    passed = re.search(r"sanitizer exit 0$", text, re.M) is not None
    row(check, "PASS" if passed else "FAIL", said + ("" if passed else f" (see sanitizer_{tool}.log)"))

def train(name, check, steps, must=(), must_not=()):
    # One dropk-train run of the script's train_run: its log ends with
    # "train exit N" and then "verify exit N" (dropk ckpt verify).
    text = log_of(f"{out}/{name}.log", check, "dropk-train")
    if text is None:
        return
    done = re.search(r"dropk-train: done, (\d+) steps(, val loss [\d.]+)?", text)
    wrong = [f"no {m!r}" for m in must if m not in text]
    wrong += [f"says {m!r}" for m in must_not if m in text]
    if re.search(r"^train exit 0$", text, re.M) is None:
        wrong.append("dropk-train failed or timed out")
    elif not done or done.group(1) != str(steps):
        wrong.append(f"did not end at step {steps}")
    if re.search(r"^verify exit 0$", text, re.M) is None:
        wrong.append("newest checkpoint does not verify")
    said = done.group(0)[len("dropk-train: "):] if done else "no closing line"
    if wrong:
        row(check, "FAIL", "; ".join(wrong) + f" (see {name}.log)")
    else:
        row(check, "PASS", said + "; newest checkpoint verifies")

flash_said = "flash attention at head sizes"
train("train_flash", "dropk-train, CUDA recipe config, flash attention, 60 steps", 60,
      must=("cuda:", flash_said))
train("train_flash_resumed", "dropk-train, the same run resumed to 90 steps", 90,
      must=("cuda:", "at step 60", flash_said))
train("train_materialised", "dropk-train, attention_kernels: MATERIALISED, 60 steps", 60,
      must=("cuda:",), must_not=(flash_said,))
def init_from(check):
    # The script's init_from step: the resumed run's export read back by a
    # run of 0 steps, whose val loss must be the resumed run's (to 1%: the
    # same weights through the same kernels; untrained weights give ln 65).
    text = log_of(f"{out}/train_init_from.log", check, "dropk-train")
    if text is None:
        return
    got = re.search(r"dropk-train: done, 0 steps, val loss ([\d.]+)", text)
    try:
        trained = re.search(r"dropk-train: done, 90 steps, val loss ([\d.]+)",
                            open(f"{out}/train_flash_resumed.log", errors="replace").read())
    except OSError:
        trained = None
    wrong = []
    if re.search(r"^export exit 0$", text, re.M) is None:
        wrong.append("dropk ckpt export failed")
    if re.search(r"^train exit 0$", text, re.M) is None or not got:
        wrong.append("dropk-train --init_from failed or timed out")
    elif not trained:
        wrong.append("no val loss of the resumed run to compare with")
    elif abs(float(got.group(1)) - float(trained.group(1))) > 0.01 * float(trained.group(1)):
        wrong.append(f"val loss {got.group(1)}, the exported run's {trained.group(1)}")
    if wrong:
        row(check, "FAIL", "; ".join(wrong) + " (see train_init_from.log)")
    else:
        row(check, "PASS", f"val loss {got.group(1)}, the exported run's {trained.group(1)}")

init_from("dropk-train --init_from the resumed run's safetensors export, 0 steps: its val loss")
train("train_nccl", "dropk-train, comm_backend: NCCL, 1 rank, 30 steps", 30,
      must=("cuda:", "over nccl"))
sanitizer("memcheck")
sanitizer("racecheck")
mpi(f"{out}/mpi_np2.log", "MPI staging CUDA buffers, 2 ranks, bitwise equal")
mpi(f"{out}/mpi_np1.log", "NCCL allreduce, 1 rank")

track = ""
for name in ("track.log", "track_flash.log"):
    try:
        track += open(f"{out}/{name}").read()
    except OSError:
        pass
tracked = set()
for m in re.finditer(r"track (\w+)\s+(\d+) steps, dropout 0.1: max \|gpu - cpu\| loss ([\d.]+|inf) "
                     r"\(bound ([\d.]+)\) (PASS|FAIL)", track):
    tracked.add(m.group(1))
    row(f"{m.group(2)} steps track CPU losses, {m.group(1)}", m.group(5),
        f"max loss difference {m.group(3)} (bound {m.group(4)})")
# A run that stopped early (a crash, the timeout) has no line for the
# precisions it did not reach: each of them is a failure too.
for p in ("fp32", "tf32", "bf16", "tf32_flash", "bf16_flash", "bf16_flash_tc"):
    if p not in tracked:
        row(f"200 steps track CPU losses, {p}", "FAIL" if build_ok == "PASS" else "-",
            "did not finish (see track.log, track_flash.log)")

def bench(path, pattern):
    found = {}
    try:
        for line in open(path):
            m = re.match(pattern, line)
            if m:
                found[(m.group(1).strip(), m.group(2))] = (float(m.group(3)), float(m.group(4)))
    except OSError:
        pass
    return found

tail = r".*\| +([\d.]+) tokens/s \| +[\d.]+ TFLOP/s \| MFU +([\d.]+)%"
dropk = {}
for name in ("bench_dropk.log", "bench_flash.log"):
    dropk.update(bench(f"{out}/{name}", r"dropk (\w+)\s+dropout ([\d.]+)" + tail))
torch = bench(f"{out}/bench_torch.log", r"(torch[\w. ]+?) +dropout ([\d.]+)" + tail)

width = max(len(r[0]) for r in rows)
print()
print(f"GPU check on {gpu.strip()}, {total_s} s in all")
print(f"| {'check'.ljust(width)} | result | detail")
print(f"|{'-' * (width + 2)}|--------|-------")
for check, result, detail in rows:
    print(f"| {check.ljust(width)} | {result.ljust(6)} | {detail}")
print()
print("| GPT-2 124M training, B=16 T=1024 | dropout | tokens/s | MFU (vs 989 TFLOP/s bf16) |")
print("|---|---|---|---|")
for (name, d), (tps, mfu) in sorted(dropk.items()):
    print(f"| dropk {name} | {d} | {tps:,.0f} | {mfu:.1f}% |")
for (name, d), (tps, mfu) in sorted(torch.items()):
    print(f"| {name} | {d} | {tps:,.0f} | {mfu:.1f}% |")
goal = torch.get(("torch.compile bf16", "0.1"))
for name in ("bf16", "bf16_flash", "bf16_flash_tc"):
    mine = dropk.get((name, "0.1"))
    if goal and mine:
        print(f"dropk {name} / torch.compile bf16, dropout 0.1: {mine[0] / goal[0]:.2f}x "
              "(goal >= 1.00)")
    if (name, "0.0") in dropk and mine:
        cost = 1 - mine[0] / dropk[(name, "0.0")][0]
        print(f"dropk {name} dropout cost (0.1 vs 0): {100 * cost:.1f}% (goal <= 5%)")
# Where a bf16 step with dropout goes, op by op (the bench's --profile).
for log, name in (("bench_dropk.log", "bf16"), ("bench_flash.log", "bf16_flash"),
                  ("bench_flash.log", "bf16_flash_tc")):
    try:
        profile = open(f"{out}/{log}", errors="replace").read()
    except OSError:
        continue
    start = profile.find(f"profile {name} dropout 0.1")
    if start >= 0:
        print()
        print(profile[start:].split("\ndropk ")[0].split("\nprofile ")[0].rstrip())
try:
    serve = [l.rstrip() for l in open(f"{out}/serve_bench.log") if l.strip()]
except OSError:
    serve = []
if serve:
    print()
    print("dropk-serve on the GPU (bench/serve_bench.cc --device cuda, GPT-2 124M shape, streamed HTTP):")
    for line in serve:
        print("    " + line)
sys.exit(1 if failed else 0)
