#!/usr/bin/env bash
# README command 1: install, build, create the default (demo) model and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
[ -f models/demo/config.json ] || build/dsa make-model --preset demo -o models/demo
if [ -f third_party/tokenizer/tokenizer.json ]; then
  build/dsa run -m models/demo --prompt "Hello! What is sparse attention?" -n 32 --ignore-eos
else
  build/dsa run -m models/demo --prompt-ids 0,128803,33310,128804,128799 -n 32 --ignore-eos
fi
