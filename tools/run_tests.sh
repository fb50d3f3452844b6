#!/usr/bin/env bash
# Every test: installs dependencies, builds, runs the whole ctest suite.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/setup_tests.sh
bash tools/build.sh
ctest --test-dir "${DROPK_BUILD_DIR:-$root/build}" --output-on-failure
