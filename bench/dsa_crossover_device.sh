#!/usr/bin/env bash
# Train-step time of dense vs sparse attention as the context grows, on the GPU machine
# (docs/dsa_conversion.md §4): `dsa train` on the demo preset (random init, top-k 32) for a few
# steps at T = 512 .. 8192 with B x T = 16K tokens per step, dense attention, sparse attention
# (LM loss only) and sparse + indexer KL (the sparse stage); the median step time of the last
# steps from metrics.jsonl. Carry ["build-cudadeps", "third_party", "data/bench-corpus"].
#   OUT=... bench/dsa_crossover_device.sh        (one command, ~4 min; results.csv in $OUT)
# Env: CONTEXTS (default "512 1024 2048 4096 8192"), STEPS (default 8).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/dsa-crossover}
W=/tmp/dsa-crossover
mkdir -p "$OUT" "$W"
source scripts/device_build.sh
build_dsa_cuda "$W/build.log"
build-cuda/dsa make-model --preset demo -o "$W/demo" >/dev/null 2>&1
echo "T,mode,step_s_median,tokens_per_s" | tee "$OUT/results.csv"
for T in ${CONTEXTS:-512 1024 2048 4096 8192}; do
  for mode in dense sparse sparse_kl; do
    python3 - "$T" "$mode" "$W" "${STEPS:-8}" <<'PY'
import json, os, sys
T, mode, w, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = {"model": {"init": f"{w}/demo", "backend": "cuda"},
       "data": {"train": [os.path.abspath("data/bench-corpus")], "seq_len": T, "batch": max(1, 16384 // T), "seed": 1},
       "optimizer": {"steps": steps, "lr": 1e-4, "warmup": 1, "schedule": "cosine"},
       "loss": {"attention": "dense" if mode == "dense" else "sparse", "indexer_kl": 1.0 if mode == "sparse_kl" else 0.0,
                "mtp_weight": 0.3, "balance_alpha": 1e-4},
       "run": {"out": f"{w}/run_{T}_{mode}", "log_every": 1, "eval_every": 0, "eval_batches": 1,
               "checkpoint_every": 0, "export_at_end": False}}
json.dump(cfg, open(f"{w}/cfg_{T}_{mode}.json", "w"))
PY
    timeout 300 build-cuda/dsa train "$W/cfg_${T}_${mode}.json" >"$W/log_${T}_${mode}.txt" 2>&1 || { echo "$T,$mode,failed,"; tail -3 "$W/log_${T}_${mode}.txt"; continue; }
    python3 - "$W/run_${T}_${mode}/metrics.jsonl" "$T" "$mode" <<'PY' | tee -a "$OUT/results.csv"
import json, statistics, sys
r = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
dt = [b['elapsed'] - a['elapsed'] for a, b in zip(r, r[1:])][2:]  # skip the first steps (warm-up)
tok = r[-1]['tokens'] / len(r)
m = statistics.median(dt)
print(f"{sys.argv[2]},{sys.argv[3]},{m:.4f},{tok / m:.0f}")
PY
  done
done
