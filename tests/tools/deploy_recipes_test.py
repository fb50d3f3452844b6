#!/usr/bin/env python3
"""The deploy recipes against the binaries they launch.

Nothing here starts a cluster. What it does catch is what breaks a recipe
silently when the code moves on: every Kubernetes manifest must parse, and
every flag a recipe passes to dropk-train, dropk-serve or dropk must be one
that binary's --help lists today; every config a recipe names must exist,
and every script a Dockerfile runs, and the build context\nmust leave out what .gitignore leaves out. The Slurm script must pass `bash -n`.

Usage: deploy_recipes_test.py SOURCE_DIR BINARY_DIR
"""
import pathlib
import re
import subprocess
import sys

import yaml

DROPK_BINARIES = ("dropk-train", "dropk-serve", "dropk")


def help_text(bin_dir, name, cache={}):
    if name not in cache:
        out = subprocess.run([str(bin_dir / name), "--help"], capture_output=True, text=True,
                             timeout=60)
        cache[name] = out.stdout + out.stderr
    return cache[name]


def check_command(tokens, where, src, bin_dir, errors):
    """Checks the flags after each dropk binary in one command line."""
    binary = None
    for token in tokens:
        token = str(token)
        name = pathlib.PurePosixPath(token).name
        if name in DROPK_BINARIES and ("/" in token or token == name):
            binary = name
            continue
        if binary is None or not token.startswith("--"):
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


def main():
    src, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]) / "bin"
    errors, checked = [], 0
    for manifest in sorted((src / "deploy" / "k8s").glob("*.yaml")):
        try:
            docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d is not None]
        except yaml.YAMLError as e:
            errors.append(f"{manifest.name}: not valid YAML: {e}")
            continue
        for doc in docs:
            if "apiVersion" not in doc or "kind" not in doc:
                errors.append(f"{manifest.name}: a document without apiVersion or kind")
            for c in containers(doc):
                where = f"{manifest.name} container {c.get('name')}"
                if not c.get("image"):
                    errors.append(f"{where}: no image")
                check_command(c.get("command", []) + c.get("args", []), where, src, bin_dir, errors)
                checked += 1
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
        for line in sbatch.read_text().splitlines():
            if "dropk-train" in line:
                check_command(re.findall(r'[^\s"]+', line), sbatch.name, src, bin_dir, errors)
        checked += 1
    for e in errors:
        print("deploy recipes:", e)
    print(f"deploy recipes: {checked} containers, Dockerfiles and batch scripts checked, "
          f"{len(errors)} problem(s)")
    return 1 if errors or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
