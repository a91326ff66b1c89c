#!/usr/bin/env bash
# Runs the whole benchmark: builds dsa, creates models/v32-layer if missing, runs `dsa bench`
# (roofline, DSA vs dense decode per layer, prefill), plots, then the llama.cpp peer.
# Results go to out/bench/ (gitignored).
#
#   bench/run_bench.sh     env: CONTEXTS=4K,16K,32K,64K,128K PREFILL_CONTEXTS=4K,16K PREFILL_CHUNK=512
#                               STEPS=3 BACKEND=<name> SKIP_PEER=1 PEER_CONTEXTS=4096 BENCH_TIMEOUT=900
#                               PEER_MODEL=models/v32-layer1 (dense layer only: the MoE layer cannot be
#                               converted to GGUF within 24 GB of RAM)
# With the scalar "ref" backend a 512-token prefill chunk costs ~1 TFLOP at ~6 GFLOP/s: use
# PREFILL_CHUNK=16 PREFILL_CONTEXTS=1K,2K there.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out/bench}
BUILD=${BUILD:-$ROOT/build-bench}
MODEL=${MODEL:-$ROOT/models/v32-layer}
mkdir -p "$OUT"
cd "$ROOT"

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null && ninja -C "$BUILD" -j2 dsa || exit 1
if [ ! -d "$MODEL" ]; then
  echo "creating $MODEL (v32-layer preset: real V3.2 layer dims, 2 layers, ~12 GB, no MTP layer) — this takes a while"
  "$BUILD/dsa" make-model --preset v32-layer --no-mtp --shards 8 -o "$MODEL" || exit 1
fi

ARGS=(-m "$MODEL" -o "$OUT" --contexts "${CONTEXTS:-4K,16K,32K,64K,128K}"
      --prefill-contexts "${PREFILL_CONTEXTS:-4K,16K}" --prefill-chunk "${PREFILL_CHUNK:-512}"
      --steps "${STEPS:-3}" --warmup "${WARMUP:-1}")
[ -n "${BACKEND:-}" ] && ARGS+=(--backend "$BACKEND")
[ -n "${PREFILL_FULL:-}" ] && ARGS+=(--prefill-full "$PREFILL_FULL")
[ -n "${MAX_DENSE:-}" ] && ARGS+=(--max-dense-context "$MAX_DENSE")
echo "dsa bench ${ARGS[*]}"
timeout "${BENCH_TIMEOUT:-900}" "$BUILD/dsa" bench "${ARGS[@]}" 2> "$OUT/bench.log" | tee "$OUT/bench.txt"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "dsa bench failed (rc $rc), see $OUT/bench.log"; tail -5 "$OUT/bench.log"; exit "$rc"; }

VENV=$(bash "$ROOT/bench/setup_bench.sh" | tail -1)
"$VENV/bin/python" "$ROOT/bench/plot_bench.py" "$OUT"

if [ -z "${SKIP_PEER:-}" ]; then
  CONTEXTS="${PEER_CONTEXTS:-4096}" OUT="$OUT" DSA="$BUILD/dsa" timeout "${PEER_TIMEOUT:-2400}" \
    bash "$ROOT/bench/peer_llamacpp.sh" "${PEER_MODEL:-$ROOT/models/v32-layer1}" \
    || echo "peer benchmark did not complete: see $OUT/peer_llamacpp.log and $OUT/peer_llamacpp_error.txt"
fi
echo "results: $OUT"
