#!/usr/bin/env bash
# The DSA conversion on the GPU machine (docs/dsa_conversion.md): dense pretraining (stage 0),
# indexer warm-up (1), sparse training (2), each `dsa train` on the CUDA backend, then
# `dsa eval-context` of the dense, warmed-up and converted models on the same held-out batches.
# Carry ["build-cudadeps", "third_party", "data/bench-corpus"] (see bench/train_device_bench.sh).
#   bench/dsa_conversion_device.sh start   build dsa, start the stages in the background (setsid)
#   bench/dsa_conversion_device.sh poll    progress; metrics, eval JSON and the summary into $OUT
#   bench/dsa_conversion_device.sh bench   the inference crossover alone (demo architecture)
# Then the control: the dense model trained on as long as the sparse stage with dense attention.
# Last, the inference crossover: `dsa bench` (decode and a prefill chunk, DSA vs dense, per layer)
# on the converted model at growing contexts (CSVs into $OUT/bench).
# Env: STEPS0 / STEPS1 / STEPS2 override the stages' optimizer.steps; EVAL_BATCHES (default 16);
# SKIP_DENSE=1 keeps stage 0 of a previous run on the same machine; CONTEXTS (bench decode),
# PREFILL_CONTEXTS (bench prefill chunk; the dense MHA prefill kernel refuses 16K keys).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/dsa-conversion}
W=/tmp/dsa-conversion
mkdir -p "$OUT" "$W"
log() { echo "== $(date +%T) $*" | tee -a "$W/summary.txt"; }

stage() {  # name config steps-override init
  local args=(--backend cuda --out "$W/$1")
  [ -n "$3" ] && args+=(--steps "$3")
  [ -n "$4" ] && args+=(--init "$4")
  t0=$(date +%s)
  build-cuda/dsa train "$2" "${args[@]}" >"$W/$1.log" 2>&1
  log "$1: rc=$? in $(( $(date +%s) - t0 )) s; $(grep -E '^step' "$W/$1.log" | tail -1)"
}

evaluate() {  # name model
  build-cuda/dsa eval-context -m "$2" --data data/bench-corpus --seq-len 512 --batch 4 \
    --batches "${EVAL_BATCHES:-16}" --backend cuda --json "$W/eval_$1.json" >"$W/eval_$1.txt" 2>&1
  log "eval $1 rc=$?: $(grep -E '^ +all' "$W/eval_$1.txt")"
  grep -E "recall|KL" "$W/eval_$1.txt" | tee -a "$W/summary.txt"
}

inference_bench() {  # model
  t0=$(date +%s)
  build-cuda/dsa bench -m "$1" --backend cuda --no-kernels --contexts "${CONTEXTS:-1K,2K,4K,8K,16K,32K,64K}" \
    --prefill-contexts "${PREFILL_CONTEXTS:-1K,2K,4K,8K}" --prefill-chunk 512 --steps 10 --warmup 3 -o "$W/bench" >"$W/bench.log" 2>&1
  log "bench rc=$? in $(( $(date +%s) - t0 )) s"
}

source scripts/device_build.sh
build() { build_dsa_cuda "$W/build.log"; }

runs() {
  if [ "${SKIP_DENSE:-0}" = 1 ] && [ -d "$W/dense/export" ]; then
    log "stage 0 kept from the previous run ($W/dense/export)"
  else
    stage dense configs/train/dsa_dense_h200.json "${STEPS0:-}" ""
    evaluate dense "$W/dense/export"
  fi
  stage warmup configs/train/dsa_warmup_h200.json "${STEPS1:-}" "$W/dense/export"
  evaluate warmup "$W/warmup/export"
  stage sparse configs/train/dsa_sparse_h200.json "${STEPS2:-}" "$W/warmup/export"
  evaluate sparse "$W/sparse/export"
  # Control: the dense model trained on as long as the sparse stage, dense attention.
  stage densecont configs/train/dsa_densecont_h200.json "${STEPS2:-}" "$W/dense/export"
  evaluate densecont "$W/densecont/export"
  inference_bench "$W/sparse/export"
  log "done"
}

case "${1:-}" in
  start)
    if [ "${SKIP_DENSE:-0}" = 1 ]; then rm -rf "$W"/warmup "$W"/sparse "$W"/densecont; else rm -rf "$W"; fi
    mkdir -p "$W" "$OUT"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$W/summary.txt"
    build
    setsid nohup "$0" _runs >"$W/runs.log" 2>&1 </dev/null &
    sleep 20
    cp "$W"/summary.txt "$OUT/"
    ;;
  poll)
    for s in dense warmup sparse; do [ -f "$W/$s.log" ] && tail -c 300 "$W/$s.log" | tr '\r' '\n' | tail -2; done
    cat "$W/summary.txt"
    cp "$W"/summary.txt "$OUT/" 2>/dev/null
    for s in warmup sparse; do [ -f "$W/$s/metrics.jsonl" ] && cp "$W/$s/metrics.jsonl" "$OUT/metrics_$s.jsonl"; done
    for s in dense warmup sparse densecont; do [ -f "$W/eval_$s.json" ] && cp "$W/eval_$s.json" "$OUT/"; done
    if [ -d "$W/bench" ]; then mkdir -p "$OUT/bench"; cp "$W"/bench/decode.csv "$W"/bench/prefill.csv "$W/bench.log" "$OUT/bench/" 2>/dev/null; fi
    ;;
  bench)  # the inference crossover alone, in the foreground, on the demo architecture (weights do not change timing)
    build
    [ -f "$W/demo/config.json" ] || build-cuda/dsa make-model --preset demo -o "$W/demo" >/dev/null
    inference_bench "$W/demo"
    mkdir -p "$OUT/bench"
    cp "$W"/bench/decode.csv "$W"/bench/prefill.csv "$W/bench.log" "$OUT/bench/"
    tail -25 "$W/bench.log"
    ;;
  _runs) runs ;;
  *) echo "usage: dsa_conversion_device.sh start | poll | bench" >&2; exit 2 ;;
esac
