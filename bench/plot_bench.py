#!/usr/bin/env python3
# Plots `dsa bench` results (out/bench/*.csv): per-layer decode latency DSA vs dense by context,
# prefill throughput, and per-kernel % of the measured roofline. Needs matplotlib (bench/setup_bench.sh).
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/bench")
    decode, prefill, kernels = rows(out / "decode.csv"), rows(out / "prefill.csv"), rows(out / "kernels.csv")
    roof = {r["metric"]: float(r["value"]) for r in rows(out / "roofline.csv")}
    fig, ax = plt.subplots(1, 3, figsize=(17, 5))

    # 1. Per-layer decode latency vs context (log-log), one line per (mode, layer).
    series = defaultdict(list)
    for r in decode:
        series[(r["mode"], int(r["layer"]), r["ffn_kind"])].append((int(r["context"]), float(r["layer_ms"])))
    for (mode, layer, kind), pts in sorted(series.items()):
        pts.sort()
        ax[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle="-" if mode == "dsa" else "--",
                   label=f"{mode} L{layer} ({kind})")
    ax[0].set_xscale("log", base=2)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("context (tokens)")
    ax[0].set_ylabel("decode latency per layer (ms)")
    ax[0].set_title("Per-layer decode: DSA vs dense")
    ax[0].legend(fontsize=8)
    ax[0].grid(True, which="both", alpha=0.3)

    # 2. Prefill throughput.
    labels, vals, colors = [], [], []
    for r in prefill:
        labels.append(f'{r["kind"]} {int(r["context"]) // 1024}K\n{r["mode"]}')
        vals.append(float(r["tok_per_s"]))
        colors.append("tab:blue" if r["mode"] == "dsa" else "tab:orange")
    ax[1].bar(range(len(vals)), vals, color=colors)
    ax[1].set_xticks(range(len(vals)), labels, fontsize=7)
    ax[1].set_ylabel("prefill tokens/s")
    ax[1].set_title("Prefill throughput (chunk appended at context)")
    ax[1].grid(True, axis="y", alpha=0.3)

    # 3. Hot kernels' % of roofline in DSA decode, by context.
    hot = ["indexer_logits", "sparse_mla_decode", "fp8_gemm", "head_matmul", "linear_f32"]
    pct = defaultdict(dict)
    for r in kernels:
        if r["phase"] == "decode" and r["mode"] == "dsa" and r["op"] in hot:
            pct[r["op"]][int(r["context"])] = float(r["pct_roofline"])
    ctxs = sorted({c for d in pct.values() for c in d})
    w = 0.8 / max(1, len(pct))
    for i, op in enumerate(k for k in hot if k in pct):
        ax[2].bar([j + i * w for j in range(len(ctxs))], [pct[op].get(c, 0) for c in ctxs], width=w, label=op)
    ax[2].axhline(50, color="red", linestyle=":", label="50% target")
    ax[2].set_xticks([j + 0.4 - w / 2 for j in range(len(ctxs))], [f"{c // 1024}K" for c in ctxs])
    ax[2].set_ylabel("% of roofline bound")
    ax[2].set_yscale("log")
    ax[2].set_title("DSA decode kernels vs roofline\n(triad {:.0f} GB/s, fp32 FMA {:.0f} GFLOP/s)".format(
        roof.get("triad_bandwidth", 0), roof.get("fma_fp32_peak", 0)))
    ax[2].legend(fontsize=7)
    ax[2].grid(True, axis="y", which="both", alpha=0.3)

    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=110)
    print(f"wrote {out / 'bench.png'}")


if __name__ == "__main__":
    main()
