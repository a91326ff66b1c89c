#!/usr/bin/env bash
# On the GPU machine: configure (-DDSA_CUDA=ON) into build-cuda, build, run `ctest -L cuda` and the
# kernel benchmarks; logs and CSV go to $OUT (default out/cuda). If the CPU build's dependencies
# (fmt, nlohmann_json, CLI11, pcre2) are missing there, configures src/ops/cuda standalone with
# fmt headers + googletest sources from build-cudadeps/ (carry it with the run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/cuda}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
JOBS=$(nproc)
TESTDIR=build-cuda/src/ops/cuda
if ! cmake -S . -B build-cuda -G Ninja -DDSA_CUDA=ON -DDSA_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
      >"$OUT/configure.log" 2>&1; then
  log "root configure failed (missing CPU deps?): standalone src/ops/cuda"
  rm -rf build-cuda
  cmake -S src/ops/cuda -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DDSA_DEPS_DIR="$PWD/build-cudadeps" >>"$OUT/configure.log" 2>&1 || { log "configure failed"; tail -30 "$OUT/configure.log"; exit 1; }
  TESTDIR=build-cuda
fi
start=$(date +%s)
if ! ninja -C build-cuda -j"$JOBS" cuda_ops_test cuda_bench >"$OUT/build.log" 2>&1; then
  log "build failed"; grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1
fi
log "build ok in $(( $(date +%s) - start )) s"
rc=0
(cd "$TESTDIR" && timeout 400 ctest -L cuda --output-on-failure) >"$OUT/ctest.log" 2>&1 || rc=$?
log "ctest -L cuda rc=$rc"
grep -E "^\[  (FAILED|PASSED|  OK) |tests passed|Failure|Expected|Which is|error" "$OUT/ctest.log" | head -60 | tee -a "$OUT/summary.txt"
BENCH=$(find build-cuda -name cuda_bench -type f | head -1)
timeout 240 "$BENCH" "$OUT/bench.csv" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" || log "bench rc=$?"
exit $rc
