#!/usr/bin/env bash
# On the GPU machine: root build with -DDSA_CUDA=ON into build-cuda (CPU deps from carried .debs),
# `ctest -L cuda`, `dsa run` cuda vs cpu, kernel sweep (`dsa bench --device cuda --no-model`); logs
# to $OUT (default out/cuda; at most 8 files come back from a device run, so configure + build
# share build.log).
#
# The GPU image lacks the CPU build's Debian dependencies and has no network. Here (Debian 12):
#   mkdir -p build-cudadeps/debs && cd build-cudadeps/debs && apt-get download libfmt-dev libfmt9 \
#     nlohmann-json3-dev libcli11-dev libpcre2-dev libpcre2-8-0 libhwy-dev libhwy1 libboost1.81-dev \
#     zlib1g-dev zlib1g libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian pkgconf-bin \
#     libpkgconf3 libsqlite3-dev libsqlite3-0
# then run with carry ["build-cudadeps", "third_party"] (third_party/: the tokenizer the tests use). They are unpacked into $DEPS (never into /), .pc files
# are rewritten to that prefix, and CMake / pkg-config / the loader are pointed at it. If the root
# configure still fails, src/ops/cuda is configured standalone (fmt headers + googletest sources
# from build-cudadeps/) and only the kernel tests run.
# Env: GTEST_FILTER runs only those cuda_ops_test cases (instead of ctest -L cuda); SKIP_RUNS=1
# skips the golden / greedy-token runs; SKIP_BENCH=1 skips the kernel sweep; BENCH_ARGS: extra `dsa bench` options for it (e.g.
# "--batches 1,128 --kernel-sweep roofline,layer"); CUDA_BENCH_ARGS: [SECTIONS] [BATCHES] for the
# cuda_bench fallback; RUN_N (default 64) tokens for the speed runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/cuda}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv 2>&1 | tee -a "$OUT/summary.txt"
{ uname -a; ldd --version 2>&1 | head -1; g++ --version | head -1; cmake --version | head -1; } >>"$OUT/summary.txt" 2>&1
JOBS=$(nproc)

# ---- carried Debian packages → prefix $DEPS (DEPARGS)
source scripts/device_deps.sh

# ---- configure + build
ROOT_BUILD=1
TESTDIR=build-cuda
if ! cmake -S . -B build-cuda -G Ninja -DDSA_CUDA=ON -DCMAKE_BUILD_TYPE=Release "${DEPARGS[@]}" \
      >"$OUT/build.log" 2>&1; then
  log "root configure failed (see build.log): standalone src/ops/cuda, kernel tests only"
  grep -E "CMake Error|not found|Could not" "$OUT/build.log" | head -10 | tee -a "$OUT/summary.txt"
  ROOT_BUILD=0
  rm -rf build-cuda
  cmake -S src/ops/cuda -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DDSA_DEPS_DIR="$PWD/build-cudadeps" >>"$OUT/build.log" 2>&1 || { log "configure failed"; tail -30 "$OUT/build.log"; exit 1; }
fi
TARGETS="cuda_ops_test cuda_bench"
[ $ROOT_BUILD = 1 ] && TARGETS="dsa golden_cuda_test batching_cuda_test train_cuda_test train_indexer_cuda_test rl_cuda_test $TARGETS"
start=$(date +%s)
if ! ninja -C build-cuda -k 0 -j"$JOBS" $TARGETS >>"$OUT/build.log" 2>&1; then
  log "build failed"; grep -E "error|FAILED" "$OUT/build.log" | head -40 | tee -a "$OUT/summary.txt"; exit 1
fi
log "build ok in $(( $(date +%s) - start )) s ($TARGETS)"

# ---- tests (label cuda: kernel tests, golden_cuda_test, cuda_tokens_match_cpu)
rc=0
[ $ROOT_BUILD = 1 ] || TESTDIR=build-cuda
if [ -n "${GTEST_FILTER:-}" ]; then  # quick iteration: only these kernel tests
  T=$(find build-cuda -name cuda_ops_test -type f | head -1)
  timeout 420 "$T" --gtest_filter="$GTEST_FILTER" >"$OUT/ctest.log" 2>&1 || rc=$?
  log "cuda_ops_test --gtest_filter=$GTEST_FILTER rc=$rc"
else
  (cd "$TESTDIR" && timeout 420 ctest -L cuda --output-on-failure -j2) >"$OUT/ctest.log" 2>&1 || rc=$?
  log "ctest -L cuda rc=$rc"
fi
grep -E "Test +#|tests passed|\[  FAILED|Failure|Expected|Which is" "$OUT/ctest.log" | head -60 | tee -a "$OUT/summary.txt"

if [ $ROOT_BUILD = 1 ] && [ "${SKIP_RUNS:-0}" != 1 ]; then
  # Golden figures (the test prints them); run directly so that the output is kept in full.
  (cd build-cuda && env -u GTEST_FILTER timeout 300 tests/golden_cuda_test) >"$OUT/golden_cuda.log" 2>&1 || log "golden_cuda_test rc=$?"
  grep -E "top-k:|experts:|logits\.|cos diff|PASSED|FAILED" "$OUT/golden_cuda.log" | tee -a "$OUT/summary.txt"
  # The same with the Hopper FP8 wgmma kernels (DSA_FP8_WGMMA=1, opt-in, faster): shows
  # what their ~14-bit accumulation does to the reference comparison (appended to the same log).
  { echo "=== DSA_FP8_WGMMA=1"
    (cd build-cuda && env -u GTEST_FILTER DSA_FP8_WGMMA=1 timeout 300 tests/golden_cuda_test); } >>"$OUT/golden_cuda.log" 2>&1
  # Greedy tokens and speed, cuda vs cpu, on the tiny and demo presets.
  DSA=build-cuda/dsa
  ids=1,17,42,7,99,3,250,11,5,64,128,9,300,2,77,500
  for preset in tiny demo; do
    dir=build-cuda/models/$preset
    rm -rf "$dir"; "$DSA" make-model --preset $preset -o "$dir" >/dev/null 2>&1 || { log "make-model $preset failed"; continue; }
    for be in cpu cuda; do
      timeout 120 "$DSA" run -m "$dir" --prompt-ids $ids -n "${RUN_N:-64}" --ignore-eos --backend $be \
        >"$OUT/run_${preset}_$be.out" 2>"$OUT/run_${preset}_$be.err" || log "run $preset $be rc=$?"
      log "$preset $be: $(grep -E '^(prefill|decode):' "$OUT/run_${preset}_$be.err" | tr '\n' ' ')"
    done
    if cmp -s "$OUT/run_${preset}_cpu.out" "$OUT/run_${preset}_cuda.out"; then log "$preset: greedy tokens equal"
    else
      log "$preset: greedy tokens DIFFER"
      head -c 600 "$OUT/run_${preset}_cpu.out" "$OUT/run_${preset}_cuda.out" | tee -a "$OUT/summary.txt"
    fi
  done
  tail -n +1 "$OUT"/run_*.err >"$OUT/runs.log" 2>/dev/null; cat "$OUT"/run_*.out >>"$OUT/runs.log"
  rm -f "$OUT"/run_*.err "$OUT"/run_*.out  # $OUT returns at most 8 files
fi

# Kernel sweep at V3.2 dims: GPU roofline (HBM streams, mma.sync peaks, datasheet), indexer / top-k
# / sparse MLA / attention layer at 4K-128K x batch 1-128, sparse MHA prefill, fp8 GEMM (~30 s).
# Table to $OUT/bench.log, CSV to $OUT/bench.csv (written row by row, so a timeout keeps the rows).
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  start=$(date +%s)
  if [ $ROOT_BUILD = 1 ] && [ -x build-cuda/dsa ]; then
    rm -rf /tmp/dsa-kernels
    timeout 240 build-cuda/dsa bench --device cuda --no-model -o /tmp/dsa-kernels ${BENCH_ARGS:-} \
        >"$OUT/bench.log" 2>&1 || log "dsa bench --device cuda (kernel sweep) rc=$?"
    cp /tmp/dsa-kernels/gpu_kernels.csv "$OUT/bench.csv" 2>/dev/null || log "kernel sweep wrote no CSV"
  else
    BENCH=$(find build-cuda -name cuda_bench -type f | head -1)
    timeout 240 "$BENCH" "$OUT/bench.csv" ${CUDA_BENCH_ARGS:-} >"$OUT/bench.log" 2>&1 || log "cuda_bench rc=$?"
  fi
  log "kernel sweep: $(( $(date +%s) - start )) s, table in bench.log, CSV in bench.csv"
  grep -E "^(GPU |Datasheet|  HBM |  cudaMemcpy|  mma.sync|error|.*FAILED)" "$OUT/bench.log" | tee -a "$OUT/summary.txt"
fi
# Nsight Compute on one kernel of the sweep (NCU_KERNEL=regex of the kernel name; NCU_BENCH_ARGS:
# `dsa bench` options picking the shape, e.g. "--kernel-sweep indexer --batches 64 --kernel-contexts 128K";
# NCU_SKIP launches skipped first, default 2). Details to $OUT/ncu.txt; NCU_SOURCE=1 adds the
# per-SASS-line stall samples as CSV ($OUT/ncu_sass.csv).
if [ -n "${NCU_KERNEL:-}" ] && [ -x build-cuda/dsa ]; then
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  rm -rf /tmp/dsa-ncu*
  timeout 400 "$NCU" --set full --import-source no -k "regex:$NCU_KERNEL" --launch-skip "${NCU_SKIP:-2}" \
      --launch-count 1 -o /tmp/dsa-ncu build-cuda/dsa bench --device cuda --no-model -o /tmp/dsa-ncu-bench \
      ${NCU_BENCH_ARGS:-} >"$OUT/ncu_run.log" 2>&1 || log "ncu rc=$?"
  "$NCU" --import /tmp/dsa-ncu.ncu-rep --page details --print-details all >"$OUT/ncu.txt" 2>&1
  [ "${NCU_SOURCE:-0}" = 1 ] && "$NCU" --import /tmp/dsa-ncu.ncu-rep --page source --print-source sass --csv \
      >"$OUT/ncu_sass.csv" 2>&1
  log "ncu $NCU_KERNEL: $(grep -cE '^ +[A-Z]' "$OUT/ncu.txt") lines of metrics in ncu.txt"
fi
# `dsa bench --device cuda` on the real V3.2 layer dims (DSA_BENCH=1; one dense layer, ~4.3 GB made
# on the fly; DSA_BENCH_CONTEXTS picks the contexts). Table to $OUT/dsa_bench.txt.
if [ "${DSA_BENCH:-0}" = 1 ] && [ -x build-cuda/dsa ]; then
  M=/tmp/dsa-v32-layer1
  [ -f $M/config.json ] || build-cuda/dsa make-model --preset v32-layer --layers 1 --no-mtp --shards 4 -o $M \
      >"$OUT/dsa_bench.txt" 2>&1
  timeout 400 build-cuda/dsa bench -m $M --device cuda --no-kernels --contexts "${DSA_BENCH_CONTEXTS:-4K,32K,128K}" \
      --prefill-chunk 0 --steps 5 --warmup 2 -o /tmp/dsa-bench >>"$OUT/dsa_bench.txt" 2>&1 || log "dsa bench rc=$?"
  log "dsa bench --device cuda: $OUT/dsa_bench.txt"
fi
exit $rc
