#!/usr/bin/env bash
# Training speed on the GPU machine: `dsa train` (CUDA backend) next to the PyTorch peer
# (bench/train_torch.py, eager and torch.compile) on the same shape and batch, in one session.
# Carry ["build-cudadeps", "third_party", "data/bench-corpus"]: the Debian packages of
# scripts/cuda_device_run.sh, the tokenizer, and shards made here with
#   python3 scripts/corpus_text.py /tmp/ctext --sources man && build/dsa corpus build --text /tmp/ctext -o data/bench-corpus
# (2.1 M tokens; the speed does not depend on the text). Runs longer than one device command, so:
#   bench/train_device_bench.sh start   build dsa, start the runs in the background (setsid)
#   bench/train_device_bench.sh poll    progress and, when done, results.json + summary in $OUT
# Env: STEPS (dsa steps, default the config's 60), TORCH_STEPS (default 30).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/train-bench}
W=/tmp/dsa-train-bench
mkdir -p "$OUT" "$W"
log() { echo "== $*" | tee -a "$W/summary.txt"; }

runs() {
  local DSA=build-cuda/dsa
  "$DSA" make-model --preset demo -o "$W/demo" >"$W/make.log" 2>&1 || { log "make-model failed"; return; }
  local steps=()
  [ -n "${STEPS:-}" ] && steps=(--steps "$STEPS")
  t0=$(date +%s)
  "$DSA" train configs/train/bench_h200.json --backend cuda --out "$W/run" "${steps[@]}" >"$W/dsa_train.log" 2>&1
  log "dsa train rc=$? in $(( $(date +%s) - t0 )) s"
  python3 - "$W/run/metrics.jsonl" >"$W/dsa.json" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
recs = [r for r in recs if 'tok_s' in r]
a, b = recs[len(recs) // 5], recs[-1]  # steady state: from 20 % of the steps to the end
rate = (b['tokens'] - a['tokens']) / (b['elapsed'] - a['elapsed'])
print(json.dumps({'mode': 'dsa train (cuda)', 'steps': len(recs), 'tokens_per_s': rate,
                  'step_s': (b['elapsed'] - a['elapsed']) / (b['step'] - a['step']),
                  'tokens_per_s_whole_run': b['tok_s'], 'mfu_whole_run': b.get('mfu'), 'final_loss': b['loss']}))
PY
  log "dsa: $(cat "$W/dsa.json")"
  for mode in eager compile; do
    flag=(); [ $mode = compile ] && flag=(--compile)
    timeout 420 python3 bench/train_torch.py --config "$W/demo/config.json" --batch 16 --seq-len 512 \
      --steps "${TORCH_STEPS:-30}" --warmup 5 "${flag[@]}" --json "$W/torch_$mode.json" >"$W/torch_$mode.log" 2>&1
    log "torch $mode rc=$?: $(cat "$W/torch_$mode.json" 2>/dev/null || tail -5 "$W/torch_$mode.log")"
  done
  python3 -c "import json,sys; print(json.dumps([json.load(open(f)) for f in sys.argv[1:]], indent=1))" \
    "$W/dsa.json" "$W/torch_eager.json" "$W/torch_compile.json" >"$W/results.json" 2>/dev/null
  log "done"
}

case "${1:-}" in
  start)
    rm -rf "$W" && mkdir -p "$W" "$OUT"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$W/summary.txt"
    python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$W/summary.txt"
    source scripts/device_build.sh
    build_dsa_cuda "$W/build.log"
    setsid nohup "$0" _runs >"$W/runs.log" 2>&1 </dev/null &
    sleep 20
    cp "$W"/summary.txt "$OUT/"
    ;;
  poll)
    tail -3 "$W/dsa_train.log" 2>/dev/null
    cat "$W/summary.txt"
    for f in summary.txt results.json dsa_train.log torch_eager.log torch_compile.log runs.log; do
      [ -f "$W/$f" ] && cp "$W/$f" "$OUT/"
    done
    [ -f "$W/run/metrics.csv" ] && cp "$W/run/metrics.csv" "$OUT/"
    ;;
  _runs) runs ;;
  *) echo "usage: train_device_bench.sh start | poll" >&2; exit 2 ;;
esac
