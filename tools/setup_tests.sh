#!/usr/bin/env bash
# Everything the tests need beyond tools/setup.sh: the cluster tests' iproute2,
# python3 and Slurm daemons; Debian's chromium and Node.js for the
# playground's browser test, and playwright-core (pinned in
# tests/browser/package-lock.json; it drives the system chromium and never
# downloads a browser). Idempotent. Usage: tools/setup_tests.sh (as root or with sudo)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/setup.sh"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
# tests/cluster: simulated hosts (iproute2), parameter comparison (python3),
# Slurm for real on one node (slurmd, slurmctld, slurm-client, munge);
# tests/tools/deploy_recipes_test.py reads the Kubernetes manifests
# (python3-yaml); tests/tools/sample_cli_test.cc measures a stream's peak
# memory with GNU time (time).
for p in iproute2 python3 python3-yaml slurmd slurmctld slurm-client munge time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup_tests: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -d "$root/tests/browser/node_modules/playwright-core" ]; then
  echo "setup_tests: npm ci in tests/browser"
  (cd "$root/tests/browser" && npm ci --no-audit --no-fund --loglevel=error) \
    || echo "setup_tests: npm ci failed; the browser test will be skipped"
fi
echo "setup_tests: done"
