#!/usr/bin/env python3
"""HF `tokenizers` single-thread encode throughput on the same corpus (the reference for the C++
bench). Prints per-pass times and a CSV line `hf,bytes,n_ids,best_s,MB/s`."""
import lzma, os, sys, time
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tok_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "third_party/tokenizer/tokenizer.json")
corpus = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "tests/fixtures/text/corpus.bin.xz")
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
data = lzma.decompress(open(corpus, "rb").read())
docs, i = [], 0
while i < len(data):
    nl = data.index(b"\n", i)
    n = int(data[i:nl].split(b" ")[-1])
    docs.append(data[nl + 1:nl + 1 + n].decode())
    i = nl + 1 + n + 1
nbytes = sum(len(d.encode()) for d in docs)
tok = Tokenizer.from_file(tok_path)
best = 1e30
for r in range(repeats):
    t0 = time.perf_counter()
    n_ids = sum(len(tok.encode(d).ids) for d in docs)  # one call per document, single thread
    s = time.perf_counter() - t0
    print(f"hf    pass {r}: {s:.3f} s  {nbytes / 1e6 / s:.2f} MB/s")
    best = min(best, s)
print(f"hf,{nbytes},{n_ids},{best:.3f},{nbytes / 1e6 / best:.2f}")
