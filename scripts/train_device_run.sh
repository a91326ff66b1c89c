#!/usr/bin/env bash
# Training on the GPU machine (docs/training.md). Carry ["build-cudadeps", "third_party",
# "data/corpus-text.tar.xz"] (the Debian packages of cuda_device_run.sh, the tokenizer, the corpus
# bundle from `scripts/make_corpus.sh bundle`). A run outlives one device command, so it goes in
# steps, each a separate command on the same (warm) machine:
#   scripts/train_device_run.sh start [CONFIG]   build dsa (CUDA) + train_cuda_test, run the test,
#       tokenise the bundle into data/corpus, start `dsa train CONFIG --backend cuda` in the
#       background (setsid) with its run directory in $RUN (default /tmp/dsa-run)
#   scripts/train_device_run.sh poll             progress: the log's tail, metrics.csv, loss.png
#   scripts/train_device_run.sh finish [PROMPT]  wait for the run to end, then greedy text from its
#       export (`dsa run`) and the metrics
# Env: CONFIG (default configs/train/pretrain.json), STEPS (overrides optimizer.steps), WAIT
# (seconds finish waits, default 500). Everything for the caller lands in $OUT (default out/train).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/train}
RUN=${RUN:-/tmp/dsa-run}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
DSA=build-cuda/dsa

collect() {
  [ -f "$RUN.log" ] && tail -c 6000 "$RUN.log" >"$OUT/train_tail.log"
  for f in metrics.csv loss.png train_config.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
  tail -3 "$RUN.log" 2>/dev/null | tee -a "$OUT/summary.txt"
}

case "${1:-}" in
  start)
    CONFIG=${2:-${CONFIG:-configs/train/pretrain.json}}
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/summary.txt"
    source scripts/device_deps.sh
    cmake -S . -B build-cuda -G Ninja -DDSA_CUDA=ON -DCMAKE_BUILD_TYPE=Release "${DEPARGS[@]}" >"$OUT/build.log" 2>&1 \
      || { log "configure failed"; tail -30 "$OUT/build.log"; exit 1; }
    t0=$(date +%s)
    ninja -C build-cuda -k 0 -j"$(nproc)" dsa train_cuda_test >>"$OUT/build.log" 2>&1 \
      || { log "build failed"; grep -E "error|FAILED" "$OUT/build.log" | head -30; exit 1; }
    log "build ok in $(( $(date +%s) - t0 )) s"
    (cd build-cuda && timeout 300 tests/train_cuda_test) >"$OUT/train_cuda_test.log" 2>&1; rc=$?
    log "train_cuda_test rc=$rc: $(grep -E 'decode path|PASSED|FAILED' "$OUT/train_cuda_test.log" | tr '\n' ' ')"
    if [ ! -f data/corpus/manifest.json ]; then
      t0=$(date +%s)
      DSA=$PWD/$DSA scripts/make_corpus.sh tokenize data/corpus-text.tar.xz data/corpus >"$OUT/corpus.log" 2>&1 \
        || { log "tokenize failed"; tail -20 "$OUT/corpus.log"; exit 1; }
      log "corpus tokenised in $(( $(date +%s) - t0 )) s: $(tail -1 "$OUT/corpus.log")"
    fi
    rm -rf "$RUN" "$RUN.log"
    extra=()
    [ -n "${STEPS:-}" ] && extra+=(--steps "$STEPS")
    setsid nohup "$DSA" train "$CONFIG" --backend cuda --out "$RUN" "${extra[@]}" >"$RUN.log" 2>&1 </dev/null &
    echo $! >"$RUN.pid"
    sleep 45
    log "started dsa train $CONFIG --backend cuda (pid $(cat "$RUN.pid"))"
    collect
    ;;
  poll)
    collect
    ;;
  finish)
    WAIT=${WAIT:-500}
    t0=$(date +%s)
    while kill -0 "$(cat "$RUN.pid" 2>/dev/null)" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$WAIT" ]; do sleep 5; done
    if kill -0 "$(cat "$RUN.pid" 2>/dev/null)" 2>/dev/null; then log "still running after ${WAIT} s"; collect; exit 0; fi
    collect
    if [ -f "$RUN/export/config.json" ]; then
      PROMPT=${2:-"The river"}
      timeout 120 "$DSA" run -m "$RUN/export" --backend cuda --prompt "$PROMPT" -n 64 --temperature 0 \
        >"$OUT/sample.txt" 2>>"$OUT/sample.txt" || log "dsa run on the export rc=$?"
      log "sample from the export: $(head -c 400 "$OUT/sample.txt" | tr '\n' ' ')"
    fi
    ;;
  *) echo "usage: train_device_run.sh start [CONFIG] | poll | finish [PROMPT]" >&2; exit 2 ;;
esac
