#!/usr/bin/env bash
# The training corpus from Debian packages (docs/data.md), in two steps that can run on two machines:
#   scripts/make_corpus.sh bundle [BUNDLE]         (needs the package registry) apt-get installs the
#       source packages, renders their text (scripts/corpus_text.py) and packs it reproducibly into
#       BUNDLE (default data/corpus-text.tar.xz), licences included
#   scripts/make_corpus.sh tokenize BUNDLE [OUT]   (no network) unpacks BUNDLE and tokenises it with
#       `dsa corpus build` into OUT (default data/corpus): shard-NNNNN.dsatok, manifest.json, LICENSES.md
#   scripts/make_corpus.sh all [OUT]               both, on one machine: the one reproducible command
# Env: DSA (the dsa binary, default build/dsa), THREADS (default nproc), SHARD_TOKENS, XZ_LEVEL
# (default 9), SOURCES (comma list, default all of corpus_text.py), CORPUS_ROOT (read the sources
# from this file tree instead of /, and install nothing: the tests' fake sources), TOKENIZER.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DSA=${DSA:-$ROOT/build/dsa}
THREADS=${THREADS:-$(nproc)}
XZ_LEVEL=${XZ_LEVEL:-9}
# Debian's own python3 (the sources' renderers are stdlib only; pyenv shims would do too).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

die() { echo "make_corpus: error: $*" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

bundle() {
  local out=${1:-$ROOT/data/corpus-text.tar.xz}
  local src_args=()
  [ -n "${SOURCES:-}" ] && src_args=(--sources "$SOURCES")
  if [ -z "${CORPUS_ROOT:-}" ]; then
    local pkgs missing=()
    pkgs=$("$PY" "$ROOT/scripts/corpus_text.py" --list-packages "${src_args[@]}")
    for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
      local sudo=""
      [ "$(id -u)" != 0 ] && sudo=sudo
      echo "[make_corpus] apt-get install ${missing[*]}"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
  fi
  local work=$WORK/bundle
  mkdir -p "$work"
  "$PY" "$ROOT/scripts/corpus_text.py" "$work/corpus-text" --root "${CORPUS_ROOT:-/}" --jobs "$THREADS" "${src_args[@]}"
  mkdir -p "$(dirname "$out")"
  # Reproducible archive: sorted names, fixed times and owners, single-threaded xz.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf - corpus-text |
    xz -T1 -"$XZ_LEVEL" >"$out.tmp"
  mv "$out.tmp" "$out"
  echo "[make_corpus] bundle $out: $(du -h "$out" | cut -f1) ($(du -sh "$work/corpus-text" | cut -f1) of text)"
}

tokenize() {
  local bundle=${1:-}
  local out=${2:-$ROOT/data/corpus}
  [ -n "$bundle" ] || die "usage: make_corpus.sh tokenize BUNDLE [OUT]"
  [ -f "$bundle" ] || die "$bundle: no such bundle (make it with: make_corpus.sh bundle)"
  [ -x "$DSA" ] || die "$DSA: no dsa binary (scripts/build.sh, or set DSA=...)"
  local work=$WORK/tokenize
  mkdir -p "$work"
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$bundle" | tar -xf - -C "$work"
  else  # machines without xz-utils: Python's tarfile reads .tar.xz itself
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$bundle" "$work"
  fi
  [ -d "$work/corpus-text/text" ] || die "$bundle: not a corpus bundle (no corpus-text/text/)"
  local args=(--text "$work/corpus-text" -o "$out" --threads "$THREADS" --overwrite)
  [ -n "${SHARD_TOKENS:-}" ] && args+=(--shard-tokens "$SHARD_TOKENS")
  [ -n "${TOKENIZER:-}" ] && args+=(--tokenizer "$TOKENIZER")
  "$DSA" corpus build "${args[@]}"
}

case "${1:-}" in
  bundle) shift; bundle "$@" ;;
  tokenize) shift; tokenize "$@" ;;
  all)
    shift
    out=${1:-$ROOT/data/corpus}
    bundle "$(dirname "$out")/corpus-text.tar.xz"
    tokenize "$(dirname "$out")/corpus-text.tar.xz" "$out"
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
