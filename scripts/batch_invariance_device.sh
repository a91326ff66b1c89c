#!/usr/bin/env bash
# On the GPU machine: where does a decode row (one token per call) round differently from the same
# row computed among many (an absorbed prefill, the trainer's form)? Greedy-decodes N tokens of a
# preset model, prefills the same ids in one absorbed call, dumps every intermediate of both
# (`dsa run --dump`), and lists per intermediate, in forward order, how many rows differ and by
# how much — with the default kernels and with DSA_BATCH_INVARIANT=1. Logs to $OUT (default
# out/invariance). Env: PRESET (demo), N (48 generated tokens), carry ["build-cudadeps", "third_party"].
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/invariance}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
source scripts/device_build.sh
build_dsa_cuda "$OUT/build.log" || exit 1
D=build-cuda/dsa
PRESET=${PRESET:-demo}
N=${N:-48}
M=/tmp/inv-$PRESET
rm -rf "$M" && "$D" make-model --preset "$PRESET" -o "$M" >/dev/null
for inv in 0 1; do
  export DSA_BATCH_INVARIANT=$inv
  # Decode: prompt of one id, N greedy tokens, every row one call of one token.
  "$D" run -m "$M" --backend cuda --prompt-ids 17 -n "$N" --ignore-eos --dump '.*' --dump-file /tmp/dec.st \
      >/tmp/dec.out 2>"$OUT/run_decode_$inv.log" || { log "decode run failed"; tail -5 "$OUT/run_decode_$inv.log"; }
  ids="17,$(tr -d ' \n' </tmp/dec.out)"
  # The same ids prefilled in one call through the absorbed attention (rows 0..N-1 among N).
  pre=$(echo "$ids" | cut -d, -f1-"$N")
  "$D" run -m "$M" --backend cuda --prompt-ids "$pre" -n 1 --ignore-eos --prefill-attention absorbed --dump '.*' \
      --dump-file /tmp/pre.st >/dev/null 2>"$OUT/run_prefill_$inv.log" || { log "prefill run failed"; tail -5 "$OUT/run_prefill_$inv.log"; }
  log "DSA_BATCH_INVARIANT=$inv: rows that differ between decode and prefill, per intermediate"
  python3 - "$N" <<'PY' | tee -a "$OUT/summary.txt"
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); base = 8 + n; out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; out[k] = np.frombuffer(b[base + s: base + e], dtype=np.float32).reshape(v["shape"])
    return out, [k for k in h if k != "__metadata__"]
n = int(sys.argv[1])
d, order = load("/tmp/dec.st"); p, _ = load("/tmp/pre.st")
for k in order:
    if k not in p: continue
    a, b = d[k][:n], p[k][:n]
    if a.shape != b.shape: print(f"{k:40s} shapes {a.shape} vs {b.shape}"); continue
    same = (a == b) | (np.isnan(a) & np.isnan(b))  # -inf pads compare equal, NaN never occurs twice
    rows = int((~same.reshape(a.shape[0], -1)).any(axis=1).sum())
    fin = np.isfinite(a) & np.isfinite(b)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))[fin]
    print(f"{k:40s} {rows:3d} of {a.shape[0]} rows differ, max finite |diff| {diff.max() if diff.size else 0:.3g}")
PY
done
