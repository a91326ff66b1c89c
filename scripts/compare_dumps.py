#!/usr/bin/env python3
"""Compare two `dsa run --dump ... --dump-file F` safetensors dumps (e.g. --backend cpu vs cuda).

Dumps hold one row per token and step (prefill rows, then one per decode step), so the tensor
whose first differing row comes earliest is where two runs part. Prints, per tensor: rows, rows
equal bit for bit, the first differing row, the max |a - b| and max |a| there; sorted by the first
differing row. Standard library only. Usage: compare_dumps.py A.safetensors B.safetensors
"""
import json
import struct
import sys
from array import array


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in head.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        code = {"F32": "f", "I32": "i"}[meta["dtype"]]
        vals = array(code)
        vals.frombytes(data[a:b])
        shape = meta["shape"]
        width = 1
        for d in shape[1:]:
            width *= d
        out[name] = (shape, width, vals)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = load(sys.argv[1]), load(sys.argv[2])
    rows = []
    for name in sorted(set(a) & set(b)):
        (sa, wa, va), (sb, wb, vb) = a[name], b[name]
        if sa[1:] != sb[1:]:
            rows.append((-1, name, f"row shapes differ {sa} vs {sb}"))
            continue
        n = min(sa[0], sb[0])
        first, equal, maxd, maxa = None, 0, 0.0, 0.0
        for r in range(n):
            ra, rb = va[r * wa:(r + 1) * wa], vb[r * wb:(r + 1) * wb]
            if ra == rb:
                equal += 1
                continue
            if first is None:
                first = r
                maxd = max(abs(x - y) for x, y in zip(ra, rb))
                maxa = max(abs(x) for x in ra)
        note = "all equal" if first is None else f"first differing row {first}: max |d| {maxd:.3g} (max |a| {maxa:.3g})"
        rows.append((n if first is None else first, name, f"{equal}/{n} rows equal; {note}"))
    for _, name, text in sorted(rows):
        print(f"{name:28s} {text}")
    for name in sorted(set(a) ^ set(b)):
        print(f"{name:28s} only in {'A' if name in a else 'B'}")


if __name__ == "__main__":
    main()
