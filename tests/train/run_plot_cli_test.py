#!/usr/bin/env python3
# `dsa plot` through the CLI: series grouped by a column and averaged over repeated x, the A/B
# ratio printed exactly, a decodable PNG with the series drawn in their colours, clear errors.
import argparse
import os
import struct
import subprocess
import sys
import tempfile
import zlib


def png_pixels(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    i, idat, w, h = 8, b"", 0, 0
    while i < len(data):
        n, = struct.unpack(">I", data[i:i + 4])
        kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[i + 8 + n:i + 12 + n])[0], "bad CRC"
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        i += 12 + n
    raw = zlib.decompress(idat)
    assert len(raw) == h * (3 * w + 1), (len(raw), w, h)
    px = set()
    for y in range(h):
        row = raw[y * (3 * w + 1) + 1:(y + 1) * (3 * w + 1)]
        px.update(tuple(row[3 * x:3 * x + 3]) for x in range(w))
    return w, h, px


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsa", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        csv = os.path.join(d, "t.csv")
        with open(csv, "w") as f:
            f.write("T,mode,layer,ms\n")
            for t, dense, sparse in [(1024, 2.0, 1.0), (2048, 4.0, 1.0), (4096, 8.0, 2.0)]:
                f.write(f"{t},dense,0,{dense}\n{t},sparse,0,{sparse - 0.5}\n{t},sparse,0,{sparse + 0.5}\n{t},dense,1,99\n")

        def dsa(*args):
            return subprocess.run([a.dsa, "plot", *args], capture_output=True, text=True)

        png = os.path.join(d, "a.png")
        r = dsa(csv, "-x", "T", "-y", "ms", "--series", "mode", "--where", "layer=0", "--log-x", "-o", png)
        assert r.returncode == 0, r.stderr
        assert "dense: 3 points" in r.stdout and "sparse: 3 points" in r.stdout, r.stdout
        w, h, px = png_pixels(png)
        assert (w, h) == (900, 540), (w, h)
        assert (31, 119, 180) in px and (214, 39, 40) in px, "series colours not drawn"
        r = dsa(csv, "-x", "T", "-y", "ms", "--series", "mode", "--where", "layer=0", "--ratio", "dense/sparse", "-o", png)
        assert r.returncode == 0, r.stderr
        assert "  1024 2\n  2048 4\n  4096 4\n" in r.stdout, r.stdout  # repeated sparse rows averaged
        for args, msg in [(["-y", "nope"], "no column 'nope' (columns: T, mode, layer, ms)"),
                          (["-y", "mode"], "'dense' is not a number"),
                          (["-y", "ms", "--series", "mode", "--ratio", "dense/x"], "the series are dense, sparse"),
                          (["-y", "ms", "--where", "layer"], "expected COL=VALUE")]:
            r = dsa(csv, "-x", "T", *args, "-o", png)
            assert r.returncode == 1 and msg in r.stderr, (args, r.returncode, r.stderr)
        r = dsa(os.path.join(d, "missing.csv"), "-x", "T", "-y", "ms", "-o", png)
        assert r.returncode == 1 and "cannot read" in r.stderr, r.stderr
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
