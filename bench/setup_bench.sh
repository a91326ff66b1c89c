#!/usr/bin/env bash
# Installs what the benchmark scripts need beyond the build (matplotlib for bench/plot_bench.py)
# into a venv under out/ (gitignored). Not used by CI.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${BENCH_VENV:-$ROOT/out/bench-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -c "import matplotlib" 2>/dev/null || "$VENV/bin/pip" install -q matplotlib
echo "$VENV"
