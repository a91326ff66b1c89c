#!/usr/bin/env python3
"""Builds the Unicode agreement fixtures of text_unicode_test from HF `tokenizers` (the reference):

  unicode_cp_expected.txt.xz  every code point assigned in Unicode 16.0 or 17.0 (plus samples of
                              private-use and unassigned ones), with its Unicode version bucket and
                              an FNV-1a-32 of the HF ids of the code point in each of CONTEXTS
  unicode_docs.bin.xz         running text per version bucket: random characters of that bucket
                              among words, digits, punctuation and whitespace (corpus.bin.xz format)
  unicode_docs_expected.tsv   per document: name, bytes, id count, FNV-1a-64 of the ids
  unicode_docs_ids_sample.txt ids of each document's first 600 characters

Version buckets come from comparing Unicode databases: Python's unicodedata.ucd_3_2_0 (3.2),
Python 3.11's unicodedata (14.0) and the PyPI wheels unicodedata2 15.0.0, 15.1.0, 16.0.0, 17.0.0
(the last: characters HF's Unicode 16 does not know yet; both sides must treat them as unassigned).

  pip install tokenizers==0.23.3 && scripts/fetch_tokenizer.sh
  for v in 15.0.0 15.1.0 16.0.0 17.0.0; do pip install --target /tmp/ud$v unicodedata2==$v; done
  python3 tests/reference/text_make_unicode.py --ud-dir /tmp     # Python 3.11 (unicodedata 14.0)
"""
import argparse, importlib.util, io, lzma, os, random, struct, sys, unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "text")
# {c} is the code point; each context is encoded on its own (piece ends matter to the regexes).
CONTEXTS = ["{c}", "a{c}b", "{c}{c}", " {c}", "x {c} y", "1{c}2", "!{c}", "{c}\u0301", "\u0301{c}",
            "{c}\n\n", "日{c}", "{c}'s", "\t{c}  z"]
BUCKETS = ["3.2", "14.0", "15.0", "15.1", "16.0", "17.0", "private", "unassigned"]


def load_ud(ud_dir, version):
    path = os.path.join(ud_dir, f"ud{version}")
    so = [f for f in os.listdir(path) if f.startswith("unicodedata2") and f.endswith(".so")][0]
    spec = importlib.util.spec_from_file_location("unicodedata2", os.path.join(path, so))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.unidata_version == version, (mod.unidata_version, version)
    return mod


def buckets(ud_dir):
    assert unicodedata.unidata_version == "14.0.0", "run with Python 3.11 (unicodedata 14.0.0)"
    dbs = [("3.2", unicodedata.ucd_3_2_0), ("14.0", unicodedata)]
    dbs += [(v[:4], load_ud(ud_dir, v)) for v in ["15.0.0", "15.1.0", "16.0.0", "17.0.0"]]
    out = {}
    rng = random.Random(16)
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        name = next((n for n, db in dbs if db.category(ch) not in ("Cn", "Co")), None)
        if name is None:
            cat = dbs[-1][1].category(ch)
            # Private use: the first 64 of each block; unassigned: one in 64.
            if cat == "Co" and (cp & 0xFFFF) % 0x1000 < 64:
                name = "private"
            elif cat == "Cn" and rng.random() < 1 / 64:
                name = "unassigned"
        if name is not None:
            out[cp] = name
    return out


def fnv32(ids):
    h = 0x811C9DC5
    for b in struct.pack(f"<{len(ids)}i", *ids):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def fnv64(ids):
    h = 0xcbf29ce484222325
    for b in struct.pack(f"<{len(ids)}i", *ids):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def per_code_point(tok, cps):
    lines = ["# cp\tbucket\tfnv1a32 of the HF ids of every context, separated by -1; contexts: "
             + " | ".join(c.replace("\n", "\\n").replace("\t", "\\t") for c in CONTEXTS)]
    order = sorted(cps)
    texts = [ctx.replace("{c}", chr(cp)) for cp in order for ctx in CONTEXTS]
    encs = tok.encode_batch(texts, add_special_tokens=False)
    k = len(CONTEXTS)
    for i, cp in enumerate(order):
        ids = []
        for e in encs[i * k:(i + 1) * k]:
            ids += e.ids + [-1]
        lines.append(f"{cp:X}\t{cps[cp]}\t{fnv32(ids):08x}")
    with open(os.path.join(FIX, "unicode_cp_expected.txt.xz"), "wb") as f:
        f.write(lzma.compress(("\n".join(lines) + "\n").encode(), preset=9 | lzma.PRESET_EXTREME))
    return len(order)


def documents(cps):
    rng = random.Random(20250101)
    by = {b: [cp for cp, n in cps.items() if n == b] for b in BUCKETS}
    words = ["the", "I love you", "don't", "x", "naïve", "日本", "hello", "'s", "--", "...", "(a)", "½"]
    seps = [" ", "", "", "\n", "  ", "\t", ", ", "\r\n", "1", "23", "4567"]
    docs = []
    for b in BUCKETS:
        for part in range(2):
            out = []
            while len(out) < 12000:
                k = rng.random()
                if k < 0.55:
                    out.append("".join(chr(rng.choice(by[b])) for _ in range(rng.randint(1, 4))))
                elif k < 0.75:
                    out.append(rng.choice(words))
                out.append(rng.choice(seps))
            docs.append((f"u{b}.{part}", "".join(out)))
    return docs


def write_docs(tok, docs):
    buf = io.BytesIO()
    for name, text in docs:
        b = text.encode("utf-8")
        buf.write(f"DOC {name} {len(b)}\n".encode())
        buf.write(b)
        buf.write(b"\n")
    with open(os.path.join(FIX, "unicode_docs.bin.xz"), "wb") as f:
        f.write(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    with open(os.path.join(FIX, "unicode_docs_expected.tsv"), "w") as f, \
         open(os.path.join(FIX, "unicode_docs_ids_sample.txt"), "w") as s:
        f.write("# name\tbytes\tn_ids\tfnv1a64(ids as int32 LE)\n")
        s.write("# name\tslice_bytes\tids (first 600 chars of each document)\n")
        for name, text in docs:
            ids = tok.encode(text, add_special_tokens=False).ids
            assert tok.decode(ids, skip_special_tokens=False) == text, name
            f.write(f"{name}\t{len(text.encode())}\t{len(ids)}\t{fnv64(ids):016x}\n")
            sl = text[:600]
            s.write(f"{name}\t{len(sl.encode())}\t{' '.join(map(str, tok.encode(sl, add_special_tokens=False).ids))}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ud-dir", default="/tmp", help="folder holding ud15.0.0 ... ud17.0.0 (pip --target)")
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "third_party/tokenizer/tokenizer.json"))
    a = ap.parse_args()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(a.tokenizer)
    cps = buckets(a.ud_dir)
    n = per_code_point(tok, cps)
    docs = documents(cps)
    write_docs(tok, docs)
    counts = {b: sum(1 for v in cps.values() if v == b) for b in BUCKETS}
    print(f"{n} code points {counts}; {len(docs)} documents", file=sys.stderr)


if __name__ == "__main__":
    main()
