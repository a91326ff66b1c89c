#!/usr/bin/env bash
# GRPO ablations (docs/rl.md §6): V3.2's full recipe against each stabiliser switched off —
# plain K3 instead of the unbiased KL, no off-policy sequence masking, no keep-routing, no
# keep-sampling-mask — on `dsa rl grpo` (task mod4, micro preset by default), several seeds each,
# in one run. Writes OUT/runs.csv (every step of every run), OUT/mean.csv (reward per step
# averaged over the seeds), OUT/summary.csv + a table on stdout, and OUT/reward.png.
# Usage: bench/rl_ablations.sh [OUT] [DSA]; env: SEEDS (default "1 2 3"), STEPS (16), BACKEND
# (cpu), ARGS (extra `dsa rl grpo` options, e.g. "--preset tiny").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/rl_ablations}
DSA=${2:-build/dsa}
SEEDS=${SEEDS:-1 2 3}
STEPS=${STEPS:-16}
BACKEND=${BACKEND:-cpu}
mkdir -p "$OUT"
# Harder than the defaults: four updates per rollout batch (stale samples for OPSM and the ratio),
# top-p 0.9 (sampling masks), a KL weight that matters.
COMMON="--steps $STEPS --backend $BACKEND --minibatches 4 --top-p 0.9 --beta 0.02 --lr 1e-2 --no-export ${ARGS:-}"
declare -A FLAGS=([v32]="" [k3]="--k3" [no_opsm]="--no-opsm" [no_keep_routing]="--no-keep-routing"
                  [no_keep_sampling_mask]="--no-keep-sampling-mask")
ORDER="v32 k3 no_opsm no_keep_routing no_keep_sampling_mask"
echo "config,seed,step,reward,pass_rate,loss,kl,masked,clipped,entropy,mean_length,grad_norm,mismatch_max,mismatch_mean,rollout_s,update_s" >"$OUT/runs.csv"
for cfg in $ORDER; do
  for seed in $SEEDS; do
    dir="$OUT/$cfg-$seed"
    "$DSA" rl grpo $COMMON ${FLAGS[$cfg]} --seed "$seed" --init-seed $((1233 + seed)) --out "$dir" >"$dir.log" 2>&1 \
      || { echo "run $cfg seed $seed failed (see $dir.log)"; tail -5 "$dir.log"; exit 1; }
    tail -n +2 "$dir/metrics.csv" | sed "s/^/$cfg,$seed,/" >>"$OUT/runs.csv"
    rm -rf "$dir/init"
  done
done
# Mean reward per (config, step) over the seeds; summary per config: reward over the first and
# last three steps, the first step whose seed-mean reward reaches 0.8, masked and clipped shares,
# the KL and the largest rollout/trainer log-prob difference.
awk -F, 'NR > 1 { k = $1 "," $3; s[k] += $4; n[k]++ } END { print "config,step,reward"; for (k in s) print k "," s[k] / n[k] }' \
  "$OUT/runs.csv" | sort -t, -k1,1 -k2,2n >"$OUT/mean.csv"
awk -F, -v steps="$STEPS" -v order="$ORDER" '
  FNR == 1 { next }
  FILENAME ~ /mean.csv$/ { if ($3 >= 0.8 && !($1 in hit)) hit[$1] = $2; next }
  { c = $1; st = $3
    if (st < 3) { f[c] += $4; nf[c]++ }
    if (st >= steps - 3) { l[c] += $4; nl[c]++ }
    m[c] += $8; cl[c] += $9; kl[c] += $7; n[c]++
    if ($13 > mm[c]) mm[c] = $13 }
  END {
    print "config,reward_first3,reward_last3,step_to_0.8,masked,clipped,kl,mismatch_max"
    split(order, o, " ")
    for (i = 1; i <= length(o); ++i) { c = o[i]
      printf "%s,%.3f,%.3f,%s,%.3f,%.3f,%.3g,%.3g\n", c, f[c] / nf[c], l[c] / nl[c], (c in hit) ? hit[c] : "-",
             m[c] / n[c], cl[c] / n[c], kl[c] / n[c], mm[c] }
  }' "$OUT/mean.csv" "$OUT/runs.csv" >"$OUT/summary.csv"
column -s, -t "$OUT/summary.csv"
"$DSA" plot "$OUT/mean.csv" -x step -y reward --series config -o "$OUT/reward.png" >/dev/null
echo "runs $OUT/runs.csv, means $OUT/mean.csv, summary $OUT/summary.csv, plot $OUT/reward.png"
