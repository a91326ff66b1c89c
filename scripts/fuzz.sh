#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DDSA_FUZZ=ON; ASan + UBSan) and runs each for a bounded time.
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
ninja -C "${BUILD}" -j"${DSA_JOBS:-2}" fuzz_tokenizer fuzz_completion_parser fuzz_json
CORPUS="${BUILD}/fuzz-corpus"
mkdir -p "${CORPUS}/tokenizer" "${CORPUS}/parser" "${CORPUS}/json"
# Seeds: a few spec strings and our own chat test case (prompt and messages).
printf 'Hello! 毕老师！1 + 1 = 2' > "${CORPUS}/tokenizer/seed1"
printf 'a   b\r\n\t 12345 👩🏽‍💻 <｜User｜><think>' > "${CORPUS}/tokenizer/seed2"
cp "${ROOT}/tests/fixtures/text/chat_case_expected.txt" "${CORPUS}/parser/seed_prompt"
printf 'r</think>c\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a" string="true">x</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>' \
  > "${CORPUS}/parser/seed_call"
cp "${ROOT}/tests/fixtures/text/chat_case_input.json" "${CORPUS}/parser/seed_json"
# JSON seeds far beyond 4 KB: deep nesting (arrays, objects, inside a request's unknown field),
# wide objects and arrays, a real request, a config.json and a safetensors-like header.
python3 - "${CORPUS}/json" "${ROOT}" <<'PY'
import json, os, sys
d, root = sys.argv[1], sys.argv[2]
def put(name, s):
    with open(os.path.join(d, name), "w") as f:
        f.write(s)
put("deep_array", "[" * 60000 + "]" * 60000)
put("deep_object", '{"a":' * 30000 + "1" + "}" * 30000)
put("deep_in_request", '{"messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * 50000 + "]" * 50000 + "}")
put("wide_object", json.dumps({f"k{i}": i for i in range(40000)}))
put("wide_request", json.dumps({"messages": [{"role": "user", "content": "x" * 20000}] * 50, "max_tokens": 4,
                                "logit_bias": {str(i): 1 for i in range(2000)}}))
put("chat", json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Hello"}],
                        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                        "stream": True, "seed": 1, "stop": ["a", "b"]}))
put("completion", json.dumps({"prompt": list(range(300)), "max_tokens": 3}))
with open(os.path.join(root, "tests/fixtures/text/chat_case_input.json")) as f:
    put("messages", f.read())
put("header", json.dumps({"__metadata__": {"a": "b"}, "t": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}))
put("config", json.dumps({"model_type": "deepseek_v32", "vocab_size": 1000, "hidden_size": 256,
                          "num_hidden_layers": 2, "n_routed_experts": 16, "n_group": 4, "topk_group": 2}))
PY
status=0
for t in tokenizer parser json; do
  bin="${BUILD}/fuzz/fuzz_${t}"
  max_len=4096
  [[ "${t}" == parser ]] && bin="${BUILD}/fuzz/fuzz_completion_parser"
  [[ "${t}" == json ]] && max_len=1000000
  echo "== ${bin##*/} for ${SECS}s"
  "${bin}" -max_total_time="${SECS}" -max_len="${max_len}" -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="${BUILD}/fuzz-artifact-${t}-" "${CORPUS}/${t}" 2>&1 | tail -4 || status=1
done
exit "${status}"
