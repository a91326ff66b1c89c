#!/usr/bin/env bash
# Runs the C++ tokenizer bench and the HF tokenizers bench on the same corpus, same machine, and
# prints the MB/s ratio. Usage: bench/tokenizer_bench.sh <path to tokenizer_bench binary> [repeats]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:?path to the tokenizer_bench binary}"
REPEATS="${2:-3}"
TOK="${ROOT}/third_party/tokenizer/tokenizer.json"
CORPUS="${ROOT}/tests/fixtures/text/corpus.bin.xz"
dsa_out="$("${BIN}" "${TOK}" "${CORPUS}" "${REPEATS}")"
hf_out="$(RAYON_NUM_THREADS=1 python3 "${ROOT}/bench/tokenizer_bench.py" "${TOK}" "${CORPUS}" "${REPEATS}")"
echo "${dsa_out}"; echo "${hf_out}"
dsa=$(echo "${dsa_out}" | grep '^dsa,' | cut -d, -f5)
hf=$(echo "${hf_out}" | grep '^hf,' | cut -d, -f5)
mkdir -p "${ROOT}/out"
echo "impl,MB_per_s" > "${ROOT}/out/tokenizer_bench.csv"
echo "dsa,${dsa}" >> "${ROOT}/out/tokenizer_bench.csv"
echo "hf_tokenizers,${hf}" >> "${ROOT}/out/tokenizer_bench.csv"
python3 -c "print(f'| impl | MB/s |\n|---|---|\n| dsa | ${dsa} |\n| HF tokenizers (1 thread) | ${hf} |\nratio dsa/hf = {${dsa}/${hf}:.2f}x')"
