#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DDSA_FUZZ=ON) and runs each for a bounded time.
# Usage: scripts/fuzz.sh [seconds per target, default 60]. Needs: clang, libclang-rt-dev (Debian:
# apt-get install -y clang libclang-rt-14-dev or the clang version's libclang-rt-N-dev), plus
# the normal build deps, and the tokenizer (scripts/fetch_tokenizer.sh).
set -euo pipefail
SECS="${1:-60}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${DSA_FUZZ_BUILD:-${ROOT}/build-fuzz}"
"${ROOT}/scripts/fetch_tokenizer.sh"
cmake -S "${ROOT}" -B "${BUILD}" -G Ninja -DDSA_FUZZ=ON -DDSA_TESTS=OFF \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "${BUILD}" -j"${DSA_JOBS:-2}" fuzz_tokenizer fuzz_completion_parser
CORPUS="${BUILD}/fuzz-corpus"
mkdir -p "${CORPUS}/tokenizer" "${CORPUS}/parser"
# Seeds: a few spec strings and our own chat test case (prompt and messages).
printf 'Hello! 毕老师！1 + 1 = 2' > "${CORPUS}/tokenizer/seed1"
printf 'a   b\r\n\t 12345 👩🏽‍💻 <｜User｜><think>' > "${CORPUS}/tokenizer/seed2"
cp "${ROOT}/tests/fixtures/text/chat_case_expected.txt" "${CORPUS}/parser/seed_prompt"
printf 'r</think>c\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a" string="true">x</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>' \
  > "${CORPUS}/parser/seed_call"
cp "${ROOT}/tests/fixtures/text/chat_case_input.json" "${CORPUS}/parser/seed_json"
status=0
for t in tokenizer parser; do
  bin="${BUILD}/fuzz/fuzz_${t}"
  [[ "${t}" == parser ]] && bin="${BUILD}/fuzz/fuzz_completion_parser"
  echo "== ${bin##*/} for ${SECS}s"
  "${bin}" -max_total_time="${SECS}" -max_len=4096 -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="${BUILD}/fuzz-artifact-${t}-" "${CORPUS}/${t}" 2>&1 | tail -4 || status=1
done
exit "${status}"
