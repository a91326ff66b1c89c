#!/usr/bin/env bash
# Peer benchmark: fetches llama.cpp as vendored in the llama-cpp-python sdist (PyPI), builds its
# CPU tools, converts our checkpoint to GGUF and runs llama-bench at the same contexts.
# Everything lands under third_party/llamacpp and out/bench (both gitignored); nothing is committed.
#
#   bench/peer_llamacpp.sh [MODEL_DIR]     env: CONTEXTS="4096,16384" GEN=8 THREADS=2 OUTTYPE=q8_0 DSA=build-bench/dsa
# Default checkpoint: models/v32-layer1 (v32-layer dims, dense layer only): converting the MoE layer
# (256 experts stacked by the converter) needs more than this machine's 24 GB (OOM-killed).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL_ARG=${1:-$ROOT/models/v32-layer1}
DSA=${DSA:-$ROOT/build-bench/dsa}
if [ ! -d "$MODEL_ARG" ] && [ "$(basename "$MODEL_ARG")" = v32-layer1 ]; then
  "$DSA" make-model --preset v32-layer --layers 1 --no-mtp --shards 2 -o "$MODEL_ARG" || exit 1
fi
MODEL=$(cd "$MODEL_ARG" && pwd)
VER=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
WORK=${LLAMACPP_DIR:-$ROOT/third_party/llamacpp}
OUT=${OUT:-$ROOT/out/bench}
CONTEXTS=${CONTEXTS:-4096}
GEN=${GEN:-8}
THREADS=${THREADS:-$(nproc)}
OUTTYPE=${OUTTYPE:-q8_0}
LOG=$OUT/peer_llamacpp.log
mkdir -p "$WORK" "$OUT"
say() { echo "[peer] $*" | tee -a "$LOG"; }
fail() {  # records the exact error (last lines of the step's log) and stops
  say "FAILED: $1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    grep -E "Error|error|Exception|not supported|NotImplemented" "$2" | tail -5 | tee -a "$LOG" "$OUT/peer_llamacpp_error.txt"
    tail -20 "$2" >> "$OUT/peer_llamacpp_error.txt"
  fi
  exit 1
}
: > "$LOG"
rm -f "$OUT/peer_llamacpp_error.txt"

# 1. Source: the sdist vendors llama.cpp (with convert_hf_to_gguf.py and gguf-py).
SRC_TOP=$WORK/llama_cpp_python-$VER
SRC=$SRC_TOP/vendor/llama.cpp
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  say "downloading llama-cpp-python==$VER sdist"
  ( cd "$WORK" && pip download --no-binary :all: --no-deps "llama-cpp-python==$VER" -d . ) >> "$LOG" 2>&1 \
    || [ -f "$WORK/llama_cpp_python-$VER.tar.gz" ] || fail "pip download" "$LOG"
  tar xzf "$WORK/llama_cpp_python-$VER.tar.gz" -C "$WORK" || fail "unpacking the sdist"
fi
say "llama.cpp source: $SRC"

# 2. Build llama-bench, CPU only (llama-cli needs the server parts, which are off).
BUILD=$WORK/build
if [ ! -x "$BUILD/bin/llama-bench" ]; then
  say "building llama.cpp (CPU) — several minutes on 2 cores"
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF > "$WORK/cmake.log" 2>&1 || fail "cmake configure" "$WORK/cmake.log"
  ninja -C "$BUILD" -j"$THREADS" llama-bench > "$WORK/build.log" 2>&1 || fail "build" "$WORK/build.log"
fi

# 3. Converter environment: a venv reusing the system torch/numpy/safetensors.
VENV=$WORK/venv
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv --system-site-packages "$VENV"; fi
"$VENV/bin/python" -c "import transformers, sentencepiece, safetensors, numpy, torch; assert int(transformers.__version__.split('.')[0]) < 5" 2>/dev/null || \
  "$VENV/bin/pip" install -q "transformers<5" sentencepiece safetensors numpy >> "$LOG" 2>&1 || fail "pip install" "$LOG"

# 4. Staging dir: our checkpoint + DeepSeek's tokenizer (third_party/tokenizer) + tokenizer_config.
NAME=$(basename "$MODEL")
STAGE=$WORK/hf-$NAME
GGUF=$WORK/gguf/$NAME-$OUTTYPE.gguf
mkdir -p "$STAGE" "$WORK/gguf"
for f in "$MODEL"/*; do ln -sf "$f" "$STAGE/$(basename "$f")"; done
TOK=$ROOT/third_party/tokenizer/tokenizer.json
[ -f "$TOK" ] && ln -sf "$TOK" "$STAGE/tokenizer.json"
cat > "$STAGE/tokenizer_config.json" <<'JSON'
{"add_bos_token": true, "add_eos_token": false, "bos_token": "<｜begin▁of▁sentence｜>",
 "eos_token": "<｜end▁of▁sentence｜>", "model_max_length": 131072, "tokenizer_class": "LlamaTokenizerFast"}
JSON
if [ ! -s "$GGUF" ]; then
  say "converting $MODEL to GGUF ($OUTTYPE)"
  ( cd "$SRC" && "$VENV/bin/python" convert_hf_to_gguf.py "$STAGE" --outfile "$GGUF" --outtype "$OUTTYPE" \
      --no-mtp ) > "$WORK/convert-$NAME.log" 2>&1 || { rm -f "$GGUF"; fail "convert_hf_to_gguf.py" "$WORK/convert-$NAME.log"; }
fi
say "GGUF: $GGUF ($(du -h "$GGUF" | cut -f1))"

# 5. llama-bench: prompt processing pp512 on an empty context, then generation (tg) at each depth
#    (= context; llama-bench prefills the depth first). One CSV line per finished test, so a run
#    cut short by a timeout keeps what it measured.
say "llama-bench -p 512 -n 0; llama-bench -p 0 -n $GEN -d $CONTEXTS (-t $THREADS)"
"$BUILD/bin/llama-bench" -m "$GGUF" -t "$THREADS" -p 512 -n 0 -r 1 -o csv 2> "$WORK/llama-bench.log" \
  > "$OUT/llamacpp.csv" || fail "llama-bench (pp512)" "$WORK/llama-bench.log"
stdbuf -oL "$BUILD/bin/llama-bench" -m "$GGUF" -t "$THREADS" -p 0 -n "$GEN" -d "$CONTEXTS" -r 1 -o csv \
  2>> "$WORK/llama-bench.log" | sed -u 1d | tee -a "$OUT/llamacpp.csv" || fail "llama-bench (tg)" "$WORK/llama-bench.log"
cat "$OUT/llamacpp.csv" >> "$LOG"

# 6. Ours on the same checkpoint and contexts (DSA decode, synthetic cache; whole forward incl. LM head).
CTX_K=$(echo "$CONTEXTS" | tr ',' '\n' | awk '{printf "%s%s", (NR>1?",":""), $1}')
say "dsa bench on $MODEL at $CTX_K"
"$DSA" bench -m "$MODEL" --contexts "$CTX_K" --prefill-chunk 0 --no-dense --steps 3 --warmup 1 \
  --roofline-seconds 1 -o "$OUT/peer_ours" > "$OUT/peer_ours.txt" 2>&1 || fail "dsa bench" "$OUT/peer_ours.txt"

python3 - "$OUT" <<'PY' | tee "$OUT/peer_ratio.txt" | tee -a "$LOG"
import csv, sys
out = sys.argv[1]
ours = {int(r["context"]): 1e3 / float(r["step_ms"])
        for r in csv.DictReader(open(f"{out}/peer_ours/decode.csv")) if r["mode"] == "dsa" and r["layer"] == "0"}
print(f"{'context':>8} {'dsa tok/s':>10} {'llama.cpp tg tok/s':>19} {'dsa/llama.cpp':>14}")
for r in csv.DictReader(open(f"{out}/llamacpp.csv")):
    if int(r["n_gen"]) == 0:
        continue
    d, theirs = int(r["n_depth"]), float(r["avg_ts"])
    mine = ours.get(d, float("nan"))
    print(f"{d:>8} {mine:>10.3f} {theirs:>19.3f} {mine / theirs:>13.2f}x")
PY
