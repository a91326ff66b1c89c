#!/usr/bin/env bash
# ctest cuda_tokens_match_cpu: greedy tokens of `dsa run --backend cuda` equal `--backend cpu`
# on a fresh tiny-preset model. Usage: tokens_match_cpu.sh DSA_BINARY WORK_DIR [PRESET] [N]
set -euo pipefail
dsa=$1 dir=$2 preset=${3:-tiny} n=${4:-24}
rm -rf "$dir"
"$dsa" make-model --preset "$preset" -o "$dir" >/dev/null
ids=1,17,42,7,99,3,250,11,5,64,128,9
cpu=$("$dsa" run -m "$dir" --prompt-ids "$ids" -n "$n" --ignore-eos --backend cpu)
gpu=$("$dsa" run -m "$dir" --prompt-ids "$ids" -n "$n" --ignore-eos --backend cuda)
echo "cpu:  $cpu"
echo "cuda: $gpu"
rm -rf "$dir"
[ "$cpu" = "$gpu" ] || { echo "tokens differ"; exit 1; }
echo "tokens equal ($n greedy tokens, preset $preset)"
