#!/usr/bin/env python3
"""Builds the tokenizer agreement corpus and its expected ids from HF `tokenizers` (reference).

Writes tests/fixtures/text/: corpus.bin.xz (documents), corpus_expected.tsv (per document: name,
byte length, id count, FNV-1a-64 of the ids as int32 LE) and corpus_ids_sample.txt (full ids of
the first 600 characters of every document, to make mismatches diagnosable).

  pip install tokenizers==0.23.3 faker==40.63.0      # versions used for the committed fixture
  scripts/fetch_tokenizer.sh
  python3 tests/reference/text_make_corpus.py            # regenerate corpus + expectations
  python3 tests/reference/text_make_corpus.py --expected # only recompute expectations from the
                                                         # committed corpus (exactly reproducible)
Corpus sources (offline): Python stdlib sources and docstrings, /usr/include C/C++ headers,
/usr/share/perl, CMake modules, /usr/share/common-licenses prose, faker locale text (zh, ja, ko,
ar, he, ru, el, hi, th), and seeded synthetic text (emoji ZWJ/skin tones/flags, digit runs,
whitespace runs with CRLF/tabs/trailing spaces, special-token strings, random code points).
"""
import argparse, glob, io, lzma, os, random, struct, sys, unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "text")
SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
            "<think>", "</think>", "｜DSML｜", "<｜▁pad▁｜>", "<｜place▁holder▁no▁7｜>", "<|EOT|>",
            "<｜fim▁hole｜>", "<｜tool▁sep｜>"]


def read_files(pattern_list, limit_bytes, rng):
    files = []
    for p in pattern_list:
        files += sorted(glob.glob(p, recursive=True))
    rng.shuffle(files)
    out, total = [], 0
    for f in files:
        try:
            with open(f, "rb") as fh:
                t = fh.read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not t.strip() or len(t) > 200_000:
            continue
        out.append((os.path.basename(f), t))
        total += len(t.encode())
        if total >= limit_bytes:
            break
    return out


def chunk_docs(prefix, text, size=60_000):
    docs, i, n = [], 0, 0
    while i < len(text):
        docs.append((f"{prefix}.{n}", text[i:i + size]))
        i += size
        n += 1
    return docs


def faker_docs(rng):
    from faker import Faker
    docs = []
    for loc in ["en_US", "zh_CN", "zh_TW", "ja_JP", "ko_KR", "ar_AA", "he_IL", "ru_RU", "el_GR",
                "hi_IN", "th_TH", "fa_IR", "uk_UA", "vi_VN", "de_DE", "fr_FR", "pl_PL", "tr_TR"]:
        fk = Faker(loc)
        fk.seed_instance(1234)
        parts = []
        for _ in range(1500):
            k = rng.random()
            if k < 0.5:
                parts.append(fk.paragraph(nb_sentences=5))
            elif k < 0.7:
                parts.append(fk.address())
            elif k < 0.85:
                parts.append(fk.name() + " — " + fk.job() + ", " + fk.company())
            else:
                parts.append(fk.phone_number() + "\t" + fk.email() + "  " + str(fk.date_time()))
            parts.append(rng.choice(["\n", "\n\n", " ", "\r\n", "\t", "  \n"]))
        docs += chunk_docs("faker_" + loc, "".join(parts))
    return docs


def emoji_doc(rng):
    base = [chr(c) for c in list(range(0x1F600, 0x1F650)) + list(range(0x1F680, 0x1F6C5)) +
            list(range(0x1F90C, 0x1F9FF)) + list(range(0x2600, 0x2700))]
    people = ["\U0001F468", "\U0001F469", "\U0001F467", "\U0001F466", "\U0001F9D1", "\U0001F44B", "\U0001F44D"]
    tones = ["\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
    zwj = "\u200d"
    parts = []
    for _ in range(40000):
        k = rng.random()
        if k < 0.3:
            parts.append(rng.choice(base) + rng.choice(["", "\ufe0f"]))
        elif k < 0.5:
            parts.append(rng.choice(people) + rng.choice(tones))
        elif k < 0.65:
            parts.append(zwj.join(rng.choice(people) + rng.choice(["", rng.choice(tones)])
                                  for _ in range(rng.randint(2, 4))))
        elif k < 0.75:
            a, b = rng.randint(0, 25), rng.randint(0, 25)
            parts.append(chr(0x1F1E6 + a) + chr(0x1F1E6 + b))
        elif k < 0.8:
            parts.append("\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F")
        else:
            parts.append(rng.choice(["hello", "ok", "日本", "مرحبا", "שלום", "thanks!", "a", "1"]))
        parts.append(rng.choice([" ", "", "\n", ", ", "  "]))
    return chunk_docs("emoji", "".join(parts))


def synthetic_docs(rng):
    parts = []
    ws = [" ", "  ", "   ", "\t", "\t\t", "\n", "\r\n", "\r", "\n\n\n", " \n", "  \r\n", "\u3000",
          "\u00a0", "\u2003", "\x0b", "\x0c", "\u2028", "\u0085", "\u180e", "\u200b", "\u2060"]
    words = ["the", "The", "don't", "we'll", "I'M", "x", "foo_bar", "fooBar", "naïve", "café",
             "Straße", "über", "ĠÑĤÐ", "a.b", "(x)", "[1]", "{}", "--", "...", "!!", "?!", "#include",
             "<div>", "</p>", "'s", "’s", "“quoted”", "«ru»", "١٢٣", "٣.١٤", "²³", "½", "Ⅻ", "①"]
    for _ in range(120000):
        k = rng.random()
        if k < 0.15:
            parts.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40))))
        elif k < 0.3:
            parts.append("".join(rng.choice(ws) for _ in range(rng.randint(1, 6))))
        elif k < 0.38:
            parts.append(rng.choice(SPECIALS))
        elif k < 0.45:
            parts.append(rng.choice(SPECIALS)[: rng.randint(1, 8)])
        elif k < 0.5:
            parts.append(" " * rng.randint(1, 80) + rng.choice(["", "\n", "x", "\t"]))
        else:
            parts.append(rng.choice(words))
        if rng.random() < 0.5:
            parts.append(" ")
    docs = chunk_docs("synthetic", "".join(parts))
    # Random assigned-ish code points from all planes (probes Unicode class tables).
    cps = []
    while len(cps) < 150000:
        c = rng.choice([rng.randint(0x20, 0x2FF), rng.randint(0x300, 0x2FFF), rng.randint(0x3000, 0xD7FF),
                        rng.randint(0xE000, 0xFFFD), rng.randint(0x10000, 0x1FFFF), rng.randint(0x20000, 0x3134F)])
        # Only code points assigned in Unicode 14 (PCRE2 10.42's tables; Python 3.11's unicodedata):
        # HF's Oniguruma knows later Unicode versions, so newer letters/marks split differently.
        if 0xD800 <= c <= 0xDFFF or unicodedata.category(chr(c)) == "Cn":
            continue
        cps.append(chr(c))
        if rng.random() < 0.2:
            cps.append(rng.choice([" ", "\n", "  ", "1", "a"]))
    docs += chunk_docs("random_cp", "".join(cps))
    return docs


def build_corpus():
    rng = random.Random(20240601)
    import sysconfig
    stdlib = sysconfig.get_paths()["stdlib"]
    docs = []
    py = read_files([stdlib + "/*.py", stdlib + "/*/*.py"], 3_500_000, rng)
    docs += [("py/" + n, t) for n, t in py]
    c = read_files(["/usr/include/*.h", "/usr/include/c++/*/bits/*.h", "/usr/include/c++/*/*"], 2_000_000, rng)
    docs += [("c/" + n, t) for n, t in c]
    pl = read_files(["/usr/share/perl/*/**/*.pm"], 600_000, rng)
    docs += [("perl/" + n, t) for n, t in pl]
    cm = read_files(["/usr/share/cmake-*/Modules/*.cmake"], 500_000, rng)
    docs += [("cmake/" + n, t) for n, t in cm]
    lic = read_files(["/usr/share/common-licenses/*"], 800_000, rng)
    docs += [("license/" + n, t) for n, t in lic]
    docs += faker_docs(rng)
    docs += emoji_doc(rng)
    docs += synthetic_docs(rng)
    # Unique, space-free names (basenames repeat across directories).
    return [(f"{i:04d}_{n.replace(' ', '_')}", t) for i, (n, t) in enumerate(docs)]


def write_corpus(docs):
    buf = io.BytesIO()
    for name, text in docs:
        b = text.encode("utf-8")
        buf.write(f"DOC {name} {len(b)}\n".encode())
        buf.write(b)
        buf.write(b"\n")
    with open(os.path.join(FIX, "corpus.bin.xz"), "wb") as f:
        f.write(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    return len(buf.getvalue())


def read_corpus():
    data = lzma.decompress(open(os.path.join(FIX, "corpus.bin.xz"), "rb").read())
    docs, i = [], 0
    while i < len(data):
        nl = data.index(b"\n", i)
        _, name, n = data[i:nl].decode().split(" ")
        n = int(n)
        docs.append((name, data[nl + 1: nl + 1 + n].decode("utf-8")))
        i = nl + 1 + n + 1
    return docs


def fnv64(ids):
    h = 0xcbf29ce484222325
    for b in struct.pack(f"<{len(ids)}i", *ids):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def sample_slice(text):
    # First up to 600 characters, as the C++ test slices by the recorded byte length.
    return text[:600]


def write_expected(docs, tok_path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)
    with open(os.path.join(FIX, "corpus_expected.tsv"), "w") as f, \
         open(os.path.join(FIX, "corpus_ids_sample.txt"), "w") as s:
        f.write("# name\tbytes\tn_ids\tfnv1a64(ids as int32 LE)\n")
        s.write("# name\tslice_bytes\tids (first 600 chars of each document)\n")
        for name, text in docs:
            ids = tok.encode(text).ids
            assert tok.decode(ids, skip_special_tokens=False) == text, name
            f.write(f"{name}\t{len(text.encode())}\t{len(ids)}\t{fnv64(ids):016x}\n")
            sl = sample_slice(text)
            s.write(f"{name}\t{len(sl.encode())}\t{' '.join(map(str, tok.encode(sl).ids))}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expected", action="store_true", help="only recompute expectations")
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "third_party/tokenizer/tokenizer.json"))
    a = ap.parse_args()
    os.makedirs(FIX, exist_ok=True)
    if not a.expected:
        docs = build_corpus()
        n = write_corpus(docs)
        print(f"corpus: {len(docs)} documents, {n / 1e6:.1f} MB", file=sys.stderr)
    docs = read_corpus()
    write_expected(docs, a.tokenizer)


if __name__ == "__main__":
    main()
