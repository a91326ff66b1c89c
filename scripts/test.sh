#!/usr/bin/env bash
# README command 2: install, build and run the whole test suite (ctest), then the bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
if [ -x scripts/fuzz.sh ]; then
  scripts/fuzz.sh
fi
