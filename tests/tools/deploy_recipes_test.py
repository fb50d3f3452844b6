#!/usr/bin/env python3
"""The deploy recipes against the binaries they launch.

Nothing here starts a cluster. What it does catch is what breaks a recipe
silently when the code moves on: every Kubernetes manifest must parse, and
every flag a recipe passes to dropk-train, dropk-serve or dropk must be one
that binary's --help lists today; every config a recipe names must exist,
and every script a Dockerfile runs, and the build context
must leave out what .gitignore leaves out. The Slurm script and every shell
script a container runs must pass `bash -n`. Beyond flags, what loses work or
never starts on a real cluster: an MPIJob whose worker does not run sshd, whose
-np is not its workers' slots, whose pods do not pass SIGTERM on to the ranks
as SIGUSR1 (mpirun kills them a second after its own SIGTERM, too soon to
save) with a grace period to save in, or whose --num_threads is not the
worker's CPU limit; an mpirun without the keepalive options (a lost host
hangs it); a dropk-serve whose probes hit a route it lacks or one that needs
the key without sending it, that has no startup probe, whose grace period is
shorter than --drain-ms, or whose --checkpoints no training recipe writes.
Run on a stop (SIGTERM to its shell, stand-ins for mpirun and scontrol), an
MPIJob launcher must exit 75 as its ranks do (0 would make the Job count a
preempted run done, never to resume), and the Slurm script must requeue
itself after the time-limit warning (then exit 0), and otherwise exit 75,
never requeueing a preempted job that Slurm requeues itself, and ignore a
SIGTERM in a run's first seconds (Slurm repeats the warning then).
The command lines in deploy/README.md's and README.md's sh blocks are
checked for flags as the recipes are (`dropk SUBCOMMAND` against its own
--help).

Usage: deploy_recipes_test.py SOURCE_DIR BINARY_DIR
"""
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import yaml

DROPK_BINARIES = ("dropk-train", "dropk-serve", "dropk")


def help_text(bin_dir, name, cache={}):
    """--help of a binary, or of `dropk SUBCOMMAND` when name has a space."""
    if name not in cache:
        binary, *sub = name.split(" ")
        out = subprocess.run([str(bin_dir / binary), *sub, "--help"], capture_output=True,
                             text=True, timeout=60)
        cache[name] = out.stdout + out.stderr
    return cache[name]


SHELL_OPERATORS = {"&", "&&", ";", "|", "||"}
KEEPALIVE = "oob_tcp_keepalive_time"
MIN_GRACE_S = 60  # to finish a step and write a checkpoint
STOPPED = 75  # kExitStopped (base/include/base/exit_codes.h): saved on a signal, not done

# Stand-ins on PATH for a recipe run on a stop signal: an mpirun that exits
# 75 at once when SIGUSR1 reaches it (as dropk-train's ranks do), and a scontrol
# that logs its calls and answers `show job` with STANDIN_SHOW_JOB (what
# Slurm 22.05 prints: no PreemptTime where preemption is not configured).
STANDIN_MPIRUN = """#!/bin/bash
trap 'exit 75' USR1
# Started once the recipe's shell traps SIGTERM (bit 15 of SigCgt): a
# signal before that would kill the shell, not test it.
for _ in $(seq 200); do
  caught=$(awk '/^SigCgt:/ {print $2}' /proc/$PPID/status)
  (( 0x$caught & 0x4000 )) && break
  sleep 0.05
done
touch "$STANDIN_DIR/mpirun-started"
# In the background, so that the trap runs (and exits) the moment SIGUSR1
# comes, as a rank's exit can come before the recipe's trap has returned.
sleep "$STANDIN_RUN_S" &
wait $!
"""
STANDIN_SCONTROL = """#!/bin/bash
echo "$*" >> "$STANDIN_DIR/scontrol.log"
case $1 in
  show) echo "JobId=$3 JobName=dropk-train $STANDIN_SHOW_JOB" ;;
  requeue) exit "$STANDIN_REQUEUE_RC" ;;
esac
"""


RUNNING_JOB = ("JobState=RUNNING Reason=None Requeue=1 Restarts=0 RunTime=00:01:50 "
               "TimeLimit=00:04:00 SuspendTime=None")


def run_stopped(argv, env_extra=None):
    """Runs a recipe's script (argv) with the stand-ins, sends its shell
    SIGTERM (what Kubernetes and Slurm's --signal=B:TERM send) once mpirun
    runs, and returns (exit status, scontrol's calls)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("mpirun", STANDIN_MPIRUN), ("scontrol", STANDIN_SCONTROL)):
            path = pathlib.Path(tmp) / name
            path.write_text(text)
            path.chmod(0o755)
        env = dict(os.environ, PATH=f"{tmp}:{os.environ['PATH']}", STANDIN_DIR=tmp,
                   STANDIN_SHOW_JOB=RUNNING_JOB, STANDIN_REQUEUE_RC="0", STANDIN_RUN_S="30",
                   SLURM_SUBMIT_DIR=tmp, SLURM_JOB_ID="42", SLURM_NTASKS_PER_NODE="2",
                   SLURM_CPUS_PER_TASK="1")
        env.update(env_extra or {})
        proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not (pathlib.Path(tmp) / "mpirun-started").exists() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log = pathlib.Path(tmp) / "scontrol.log"
        return code, log.read_text() if log.exists() else ""


def check_sbatch_stop(sbatch, errors):
    """On its SIGTERM (the time-limit warning) the batch script must end
    stopped (75), not done, or requeue itself and only then exit 0; never
    requeue a preempted job, which Slurm requeues itself."""
    argv = ["bash", str(sbatch), "job.textproto"]
    code, calls = run_stopped(argv)
    if "requeue 42" not in calls or code != 0:
        errors.append(f"{sbatch.name}: stopped on the time-limit warning (mpirun exit {STOPPED}), "
                      f"it exits {code} with scontrol calls {calls.splitlines()}: it must "
                      "`scontrol requeue $SLURM_JOB_ID` and then exit 0, so the job resumes")
    for show in (RUNNING_JOB + " PreemptEligibleTime=2026-12-03T10:00:00 "
                 "PreemptTime=2026-12-03T10:05:00",
                 "JobState=COMPLETING Reason=None Requeue=1 Restarts=1"):
        code, calls = run_stopped(argv, {"STANDIN_SHOW_JOB": show})
        if "requeue" in calls or code != STOPPED:
            errors.append(f"{sbatch.name}: stopped while Slurm ends the job itself ({show}), it "
                          f"exits {code} with scontrol calls {calls.splitlines()}: Slurm "
                          f"requeues a preempted job itself; it must exit {STOPPED} and not "
                          "requeue it a second time")
    code, calls = run_stopped(argv, {"STANDIN_REQUEUE_RC": "1"})
    if code != STOPPED:
        errors.append(f"{sbatch.name}: stopped, and `scontrol requeue` failed, it exits {code}: "
                      f"it must exit {STOPPED} (stopped, not done)")
    # Slurm 22.05 repeats the warning as the requeued job starts: taken as
    # a stop, every run would stop and requeue itself again, for good.
    code, calls = run_stopped(argv, {"STANDIN_SHOW_JOB": RUNNING_JOB.replace(
        "RunTime=00:01:50", "RunTime=00:00:01"), "STANDIN_RUN_S": "2"})
    if "requeue" in calls or code != 0:
        errors.append(f"{sbatch.name}: a SIGTERM 1 s into a run (Slurm repeating the warning as "
                      f"a requeued job starts) made it exit {code} with scontrol calls "
                      f"{calls.splitlines()}: it must be ignored, the run go on (here mpirun "
                      "ends 0 after 2 s) and the job not be requeued again")


def check_command(tokens, where, src, bin_dir, errors):
    """Checks the flags after each dropk binary in one command line."""
    binary = None
    for token in tokens:
        token = str(token)
        if token in SHELL_OPERATORS:
            binary = None
            continue
        name = pathlib.PurePosixPath(token).name
        if name in DROPK_BINARIES and ("/" in token or token == name):
            binary = name
            continue
        if binary is not None and binary.split(" ")[0] == "dropk" and \
                re.search(r"^Subcommands:\n(  .*\n)*  " + re.escape(token) + " ",
                          help_text(bin_dir, binary), re.M):
            binary = f"{binary} {token}"  # a subcommand, whose own --help lists its flags
            continue
        # A flag, not a value that starts with -- (`--mpirun-args "--map-by node"`)
        if binary is None or not re.fullmatch(r"--[\w-]+(=.*)?", token, re.S):
            continue
        flag = token.split("=", 1)[0]
        if not re.search(re.escape(flag) + r"(?![\w-])", help_text(bin_dir, binary)):
            errors.append(f"{where}: {binary} has no flag {flag}")
        if flag == "--config" and "=" in token:
            config = pathlib.PurePosixPath(token.split("=", 1)[1]).name
            if not (src / "configs" / config).exists():
                errors.append(f"{where}: configs/{config} does not exist")


def containers(doc):
    """Every container spec in a manifest, wherever its pod template sits."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "containers" and isinstance(value, list):
                yield from value
            else:
                yield from containers(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from containers(item)


def check_docker_context(src, errors):
    """The Dockerfiles COPY the whole tree: everything .gitignore keeps out of
    git (a host's build directory, run outputs, generated data) must stay out
    of the build context too, or a host's CMakeCache.txt breaks the image."""
    ignore = src / ".dockerignore"
    if not ignore.exists():
        errors.append(".dockerignore: missing; COPY . would send build/ and out/ to the image")
        return
    docker = {line.strip().rstrip("/") for line in ignore.read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    for line in (src / ".gitignore").read_text().splitlines():
        pattern = line.strip().lstrip("/").rstrip("/")
        if not pattern or line.startswith("#"):
            continue
        wanted = {pattern, "**/" + pattern}
        if not docker & wanted:
            errors.append(f".dockerignore: does not exclude {pattern} (in .gitignore)")


def command_tokens(c, where, errors):
    """A container's command as words: a `bash -c`/`sh -c` script is checked
    with `bash -n` and split like a shell would (comments dropped)."""
    words = [str(w) for w in c.get("command", []) + c.get("args", [])]
    if len(words) >= 3 and pathlib.PurePosixPath(words[0]).name in ("bash", "sh") \
            and words[1] == "-c":
        script = words[2]
        syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        if syntax.returncode != 0:
            errors.append(f"{where}: bash -n: {syntax.stderr.strip()}")
        lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            return words[:2] + list(lexer), script
        except ValueError as e:
            errors.append(f"{where}: cannot split its script: {e}")
            return words, script
    return words, " ".join(words)


def forwards_term_as_usr1(script):
    return re.search(r"^\s*trap\s.*\bTERM\s*$", script, re.M) is not None and "-USR1" in script


def non_string_commands(doc, path=""):
    """Paths of command/args items that are not strings: an unquoted item
    with ": " in it parses as a mapping, which the API server refuses."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("command", "args") and isinstance(value, list):
                for i, item in enumerate(value):
                    if not isinstance(item, str):
                        yield f"{path}.{key}[{i}]"
            else:
                yield from non_string_commands(value, f"{path}.{key}")
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from non_string_commands(item, f"{path}[{i}]")


def flag_value(tokens, flag):
    for i, token in enumerate(tokens):
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
        if token == flag and i + 1 < len(tokens):
            return tokens[i + 1]
    return None


def check_mpijob(doc, name, errors):
    """The MPI Operator runs the launcher's mpirun over ssh into the workers."""
    specs = doc["spec"]["mpiReplicaSpecs"]
    workers = specs["Worker"]
    slots = workers.get("replicas", 1) * doc["spec"].get("slotsPerWorker", 1)
    worker_cpu = None
    for role, spec in specs.items():
        pod = spec["template"]["spec"]
        for c in pod["containers"]:
            where = f"{name} {role.lower()} {c.get('name')}"
            tokens, script = command_tokens(c, where, errors)
            if role == "Worker":
                worker_cpu = c.get("resources", {}).get("limits", {}).get("cpu")
                if "sshd" not in script or "/run/sshd" not in script:
                    errors.append(f"{where}: does not run sshd (with /run/sshd made), so mpirun "
                                  "cannot start ranks there")
            if not forwards_term_as_usr1(script):
                errors.append(f"{where}: does not pass SIGTERM on as SIGUSR1: a deleted or "
                              "preempted pod kills the ranks before they save")
            if pod.get("terminationGracePeriodSeconds", 30) < MIN_GRACE_S:
                errors.append(f"{where}: terminationGracePeriodSeconds under {MIN_GRACE_S}: "
                              "too short to finish a step and save")
            if role == "Launcher":
                code, _ = run_stopped(["bash", "-c", script])
                if code != STOPPED:
                    errors.append(f"{where}: exits {code} after the ranks stopped on its SIGTERM "
                                  f"(mpirun exit {STOPPED}): must be {STOPPED}, so that the Job "
                                  "counts a preempted run as not done and restarts it")
                np = flag_value(tokens, "-np")
                if np is None or int(np) != slots:
                    errors.append(f"{where}: mpirun -np {np}, but the workers have {slots} slots")
                if KEEPALIVE not in script:
                    errors.append(f"{where}: mpirun without --mca {KEEPALIVE}: a lost node hangs it")
    for c in specs["Launcher"]["template"]["spec"]["containers"]:
        tokens, _ = command_tokens(c, name, [])
        threads = flag_value(tokens, "--num_threads")
        if worker_cpu is not None and str(threads) != str(worker_cpu):
            errors.append(f"{name}: dropk-train --num_threads={threads}, but a worker (one rank) "
                          f"has cpu {worker_cpu}: unset, a rank takes every core of its node")


def training_checkpoint_dirs(manifests):
    """(claim, path) of each checkpoint directory a training MPIJob writes:
    --out_dir's checkpoints/ on the worker volume mounted above it."""
    found = set()
    for doc in manifests:
        if doc.get("kind") != "MPIJob":
            continue
        specs = doc["spec"]["mpiReplicaSpecs"]
        workers = specs["Worker"]["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in workers.get("volumes", []) if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: claims.get(m["name"])
                  for c in workers["containers"] for m in c.get("volumeMounts", [])}
        for c in specs["Launcher"]["template"]["spec"]["containers"]:
            tokens, _ = command_tokens(c, "", [])
            out_dir = (flag_value(tokens, "--out_dir") or "").rstrip("/")
            claim = next((claim for mount, claim in mounts.items()
                          if out_dir.startswith(mount + "/")), None)
            if out_dir:
                found.add((claim, out_dir + "/checkpoints"))
    return found


def check_serve(doc, name, trained, errors):
    """A dropk-serve Deployment: probes, drain, and what it reads."""
    pod = doc["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
    for c in pod["containers"]:
        where = f"{name} container {c.get('name')}"
        tokens, _ = command_tokens(c, where, errors)
        if not any(pathlib.PurePosixPath(t).name == "dropk-serve" for t in tokens):
            continue
        keyed = flag_value(tokens, "--api-key-file") is not None
        if "startupProbe" not in c:
            errors.append(f"{where}: no startupProbe: it listens only once a checkpoint is "
                          "loaded, and liveness would restart a slow load")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = c.get(probe)
            if spec is None:
                continue
            if "httpGet" in spec:
                path = spec["httpGet"]["path"]
                if path not in ("/healthz", "/readyz"):
                    errors.append(f"{where}: {probe} {path} is no probe route of dropk-serve")
                elif keyed and path != "/healthz":
                    errors.append(f"{where}: {probe} {path} needs the API key, which httpGet "
                                  "cannot send")
            else:
                text = " ".join(map(str, spec.get("exec", {}).get("command", [])))
                if not re.search(r"/(healthz|readyz)\b", text):
                    errors.append(f"{where}: {probe} hits no probe route of dropk-serve")
                if keyed and "/readyz" in text and "Authorization: Bearer" not in text:
                    errors.append(f"{where}: {probe} does not send the API key")
        drain_s = int(flag_value(tokens, "--drain-ms") or 10000) / 1000
        if pod.get("terminationGracePeriodSeconds", 30) <= drain_s:
            errors.append(f"{where}: terminationGracePeriodSeconds is not above --drain-ms")
        checkpoints = (flag_value(tokens, "--checkpoints") or "").rstrip("/")
        claim = next((claims.get(m["name"]) for m in c.get("volumeMounts", [])
                      if checkpoints.startswith(m["mountPath"] + "/")), None)
        if (claim, checkpoints) not in trained and \
                (claim, checkpoints + "/checkpoints") not in trained:
            errors.append(f"{where}: --checkpoints={checkpoints} (volume {claim}) is no "
                          f"checkpoint directory a training recipe writes: {sorted(trained)}")


def main():
    # Absolute: the recipes' scripts run from a temporary directory.
    src = pathlib.Path(sys.argv[1]).resolve()
    bin_dir = pathlib.Path(sys.argv[2]).resolve() / "bin"
    errors, checked = [], 0
    manifests = []
    for manifest in sorted((src / "deploy" / "k8s").glob("*.yaml")):
        try:
            docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d is not None]
        except yaml.YAMLError as e:
            errors.append(f"{manifest.name}: not valid YAML: {e}")
            continue
        for doc in docs:
            if "apiVersion" not in doc or "kind" not in doc:
                errors.append(f"{manifest.name}: a document without apiVersion or kind")
            for bad in non_string_commands(doc):
                errors.append(f"{manifest.name}: {bad} is not a string (quote it)")
            for c in containers(doc):
                where = f"{manifest.name} container {c.get('name')}"
                if not c.get("image"):
                    errors.append(f"{where}: no image")
                tokens, _ = command_tokens(c, where, errors)
                check_command(tokens, where, src, bin_dir, errors)
                checked += 1
            manifests.append((manifest.name, doc))
    trained = training_checkpoint_dirs([doc for _, doc in manifests])
    for name, doc in manifests:
        if doc.get("kind") == "MPIJob":
            check_mpijob(doc, name, errors)
        if doc.get("kind") == "Deployment":
            check_serve(doc, name, trained, errors)
    check_docker_context(src, errors)
    for dockerfile in sorted((src / "deploy" / "docker").glob("Dockerfile*")):
        for script in re.findall(r"bash (tools/[\w./-]+)", dockerfile.read_text()):
            if not (src / script).exists():
                errors.append(f"{dockerfile.name}: runs {script}, which does not exist")
        checked += 1
    for sbatch in sorted((src / "deploy" / "slurm").glob("*.sbatch")):
        syntax = subprocess.run(["bash", "-n", str(sbatch)], capture_output=True, text=True)
        if syntax.returncode != 0:
            errors.append(f"{sbatch.name}: bash -n: {syntax.stderr.strip()}")
        text = sbatch.read_text()
        if KEEPALIVE not in text:
            errors.append(f"{sbatch.name}: mpirun without --mca {KEEPALIVE}: a lost node hangs it")
        if not forwards_term_as_usr1(text):
            errors.append(f"{sbatch.name}: does not pass Slurm's SIGTERM on to mpirun as SIGUSR1")
        check_sbatch_stop(sbatch, errors)
        for line in text.splitlines():
            if "dropk-train" in line:
                check_command(re.findall(r'[^\s"]+', line), sbatch.name, src, bin_dir, errors)
        checked += 1
    for doc in ("deploy/README.md", "README.md"):
        for block in re.findall(r"^```sh\n(.*?)^```", (src / doc).read_text(), re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:
                    continue  # not a command line
                check_command(tokens, doc, src, bin_dir, errors)
        checked += 1
    for e in errors:
        print("deploy recipes:", e)
    print(f"deploy recipes: {checked} containers, Dockerfiles and batch scripts checked, "
          f"{len(errors)} problem(s)")
    return 1 if errors or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
