#!/usr/bin/env python3
"""Renders the training corpus's text from installed Debian packages (stdlib only).

Writes OUT/text/<source>.jsonl (one {"name", "text"} object per document, sorted by name),
OUT/sources.json (per source: packages with their Debian versions, licence, documents, bytes),
OUT/LICENSES.md and OUT/licenses/<package>.copyright (the packages' Debian copyright files).
`dsa corpus build --text OUT` tokenises the result; scripts/make_corpus.sh chains the steps and
docs/data.md describes the sources. --root reads another file tree (the tests' fake sources).

  scripts/corpus_text.py OUT [--root /] [--sources man,python-src,...] [--jobs N]
  scripts/corpus_text.py --list-packages [--sources ...]
"""
import argparse, concurrent.futures, glob, gzip, json, os, re, subprocess, sys

# name -> (packages, licence, what); rendered in this order (the shards follow the file names' order).
SOURCES = {
    "man": (["manpages", "manpages-dev", "coreutils", "util-linux", "procps", "man-db", "bash",
             "grep", "sed", "findutils", "tar", "make"],
            "GPL-2+/GPL-3+ and the Linux man-pages licences (Linux-man-pages-copyleft, BSD, MIT); "
            "see each package's copyright file",
            "English manual pages (sections 1-8) rendered to text with groff"),
    "python-doc": (["python3.11-doc"], "PSF-2.0 (documentation; examples also 0BSD)",
                   "Python 3.11 documentation, reStructuredText sources (html/_sources)"),
    "python-src": (["libpython3.11-stdlib", "libpython3.11-minimal", "libpython3.11-testsuite"],
                   "PSF-2.0", "Python 3.11 standard library and test suite source (.py)"),
    "perl-doc": (["perl-doc"], "GPL-1+ or Artistic", "Perl 5.36 documentation (pod rendered with pod2text)"),
    "gcide": (["dict-gcide"], "GPL-3+",
              "GNU Collaborative International Dictionary of English (Webster 1913 + WordNet based)"),
    "wordnet": (["wordnet-base"], "WordNet-3.0 (Princeton; permissive)",
                "WordNet 3.0 synsets: words, part of speech, gloss"),
    "jargon": (["dict-jargon"], "public domain", "The Jargon File 4.4.7"),
    "foldoc": (["dict-foldoc"], "GFDL-1.1+", "Free On-line Dictionary of Computing"),
    "devil": (["dict-devil"], "public domain", "Ambrose Bierce, The Devil's Dictionary"),
}

DOC_CHARS = 32_000  # dictionary and WordNet entries are grouped into documents of about this size


def read_text(path):
    """File contents as str (gzip-aware); None if it is not UTF-8 text."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            data = f.read()
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def clean(text):
    text = text.replace("\r\n", "\n").replace("\x00", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def owned_files(root, packages):
    """Files that dpkg says these packages installed (None under --root: take every file)."""
    if root != "/":
        return None
    out = set()
    for p in packages:
        r = subprocess.run(["dpkg", "-L", p], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"error: package {p} is not installed (scripts/make_corpus.sh installs it)")
        out.update(r.stdout.split("\n"))
    return out


def group(entries, prefix):
    """Groups (text) entries into documents of about DOC_CHARS characters, in order."""
    docs, cur, n = [], [], 0
    for e in entries:
        cur.append(e)
        n += len(e)
        if n >= DOC_CHARS:
            docs.append((f"{prefix}/{len(docs):05d}", clean("\n".join(cur))))
            cur, n = [], 0
    if cur:
        docs.append((f"{prefix}/{len(docs):05d}", clean("\n".join(cur))))
    return docs


# ---- manual pages ------------------------------------------------------------------------------
def render_man(path):
    src = read_text(path)
    if src is None or (src.lstrip().startswith(".so ") and len(src) < 200):
        return None  # alias page (".so man3/other.3") or not text
    # Left-adjusted, unhyphenated plain text: `.ad l` / `.nh` before the page, -rHY=0 for .TH,
    # -P-cbou: no SGR, bold, underline or overstrike sequences.
    r = subprocess.run(["groff", "-k", "-t", "-man", "-Tutf8", "-P-cbou", "-rLL=100n", "-rHY=0"],
                       input=(".ad l\n.nh\n" + src).encode(), capture_output=True)
    if r.returncode != 0:
        return None
    text = r.stdout.decode("utf-8", "replace")
    return clean(text) if len(text.strip()) > 40 else None


def man_docs(root, jobs):
    owned = owned_files(root, SOURCES["man"][0])
    files = []
    for f in sorted(glob.glob(os.path.join(root, "usr/share/man/man[1-8]/*"))):
        if os.path.islink(f) or not os.path.isfile(f):
            continue
        if owned is not None and f not in owned:
            continue
        files.append(f)
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        texts = list(ex.map(render_man, files))
    docs = []
    for f, t in zip(files, texts):
        if t:
            name = os.path.basename(f)
            docs.append(("man/" + (name[:-3] if name.endswith(".gz") else name), t))
    return docs


# ---- Python ------------------------------------------------------------------------------------
def python_doc_docs(root, jobs):
    base = os.path.join(root, "usr/share/doc/python3.11/html/_sources")
    docs = []
    for f in sorted(glob.glob(os.path.join(base, "**/*.rst.txt"), recursive=True)):
        t = read_text(f)
        if t and t.strip():
            docs.append(("python-doc/" + os.path.relpath(f, base)[:-len(".rst.txt")], clean(t)))
    return docs


def python_src_docs(root, jobs):
    base = os.path.join(root, "usr/lib/python3.11")
    docs = []
    for f in sorted(glob.glob(os.path.join(base, "**/*.py"), recursive=True)):
        rel = os.path.relpath(f, base)
        if "-packages" in rel.split(os.sep)[0] or os.path.islink(f):
            continue
        t = read_text(f)
        if t and t.strip():
            docs.append(("python-src/" + rel, clean(t)))
    return docs


# ---- Perl documentation ------------------------------------------------------------------------
def render_pod(path):
    r = subprocess.run(["pod2text", "-w", "100", path], capture_output=True)
    if r.returncode != 0:
        return None
    t = r.stdout.decode("utf-8", "replace")
    return clean(t) if t.strip() else None


def perl_doc_docs(root, jobs):
    files = sorted(glob.glob(os.path.join(root, "usr/share/perl/5.36/pod/*.pod")))
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        texts = list(ex.map(render_pod, files))
    return [("perl-doc/" + os.path.basename(f)[:-4], t) for f, t in zip(files, texts) if t]


# ---- dictd dictionaries (GCIDE, Jargon File, FOLDOC, Devil's Dictionary) -----------------------
B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
SOURCE_TAG = re.compile(r"^\s*\[[^\]\n]{0,40}(Webster|WordNet|PJC|Century|Chambers|Suppl)[^\]\n]{0,40}\]\s*$",
                        re.MULTILINE)


def b64num(s):
    n = 0
    for c in s:
        n = n * 64 + B64[c]
    return n


def dictd_docs(root, name):
    base = os.path.join(root, "usr/share/dictd", name)
    try:
        with gzip.open(base + ".dict.dz", "rb") as f:
            data = f.read()
        with open(base + ".index", encoding="utf-8") as f:
            index = f.read().split("\n")
    except OSError as e:
        sys.exit(f"error: {name}: {e}")
    spans = set()
    for line in index:
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        spans.add((b64num(parts[1]), b64num(parts[2])))
    entries = []
    for off, ln in sorted(spans):
        t = data[off:off + ln].decode("utf-8", "replace")
        t = SOURCE_TAG.sub("", t)
        t = re.sub(r"\n{3,}", "\n\n", t).strip("\n")
        if t.strip():
            entries.append(t + "\n")
    return group(entries, name)


# ---- WordNet -----------------------------------------------------------------------------------
POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def wordnet_docs(root, jobs):
    by_file = {}
    for pos in ["noun", "verb", "adj", "adv"]:
        path = os.path.join(root, "usr/share/wordnet", "data." + pos)
        try:
            lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
        except OSError as e:
            sys.exit(f"error: wordnet: {e}")
        for line in lines:
            if not line or line.startswith("  ") or "|" not in line:
                continue  # licence header lines start with two spaces
            head, gloss = line.split("|", 1)
            f = head.split()
            lex, ss_type, w_cnt = f[1], f[2], int(f[3], 16)
            words = [re.sub(r"\([a-z]+\)$", "", f[4 + 2 * i]).replace("_", " ") for i in range(w_cnt)]
            entry = f"{', '.join(words)} ({POS.get(ss_type, ss_type)}): {gloss.strip()}"
            by_file.setdefault((pos, lex), []).append(entry)
    docs = []
    for (pos, lex) in sorted(by_file):
        docs += group(by_file[(pos, lex)], f"wordnet/{pos}.{lex}")
    return docs


MAKERS = {
    "man": man_docs, "python-doc": python_doc_docs, "python-src": python_src_docs,
    "perl-doc": perl_doc_docs, "gcide": lambda r, j: dictd_docs(r, "gcide"),
    "wordnet": wordnet_docs, "jargon": lambda r, j: dictd_docs(r, "jargon"),
    "foldoc": lambda r, j: dictd_docs(r, "foldoc"), "devil": lambda r, j: dictd_docs(r, "devil"),
}


def package_version(root, pkg):
    if root != "/":
        return "unknown (--root)"
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "not installed"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?")
    ap.add_argument("--list-packages", action="store_true",
                    help="print the Debian packages the sources (and their renderers) need, and exit")
    ap.add_argument("--root", default="/", help="file tree to read the sources from (default /)")
    ap.add_argument("--sources", default=",".join(SOURCES), help="comma-separated subset of: " + ",".join(SOURCES))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    names = [s for s in a.sources.split(",") if s]
    for s in names:
        if s not in SOURCES:
            sys.exit(f"error: unknown source '{s}' (known: {', '.join(SOURCES)})")
    if a.list_packages:
        print(" ".join(["groff-base", "perl"] + [p for s in names for p in SOURCES[s][0]]))
        return
    if not a.out:
        ap.error("the output directory is required")
    os.makedirs(os.path.join(a.out, "text"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "licenses"), exist_ok=True)
    meta = []
    for s in names:
        pkgs, licence, what = SOURCES[s]
        docs = MAKERS[s](a.root, a.jobs)
        if not docs:
            sys.exit(f"error: source '{s}' produced no documents (are its packages installed?)")
        docs.sort(key=lambda d: d[0])
        nbytes = 0
        with open(os.path.join(a.out, "text", s + ".jsonl"), "w", encoding="utf-8") as f:
            for name, text in docs:
                f.write(json.dumps({"name": name, "text": text}, ensure_ascii=False) + "\n")
                nbytes += len(text.encode("utf-8"))
        versions = {p: package_version(a.root, p) for p in pkgs}
        for p in pkgs:
            cp = os.path.join(a.root, "usr/share/doc", p, "copyright")
            if os.path.isfile(cp):
                with open(cp, "rb") as src, open(os.path.join(a.out, "licenses", p + ".copyright"), "wb") as dst:
                    dst.write(src.read())
        meta.append({"name": s, "description": what, "licence": licence, "packages": versions,
                     "documents": len(docs), "bytes": nbytes})
        print(f"[corpus_text] {s:11s} {len(docs):7d} documents {nbytes / 1e6:8.1f} MB", flush=True)
    with open(os.path.join(a.out, "sources.json"), "w", encoding="utf-8") as f:
        json.dump({"format": "dsa-corpus-text 1", "sources": meta}, f, indent=1)
    with open(os.path.join(a.out, "LICENSES.md"), "w", encoding="utf-8") as f:
        f.write("# Licences of the corpus sources\n\nEvery document comes from a Debian 12 package; "
                "each package's full copyright file is in licenses/<package>.copyright.\n\n"
                "| source | licence | packages (Debian version) | documents | bytes |\n|---|---|---|---|---|\n")
        for m in meta:
            pk = ", ".join(f"{p} {v}" for p, v in m["packages"].items())
            f.write(f"| {m['name']} | {m['licence']} | {pk} | {m['documents']} | {m['bytes']} |\n")
        f.write("\n" + "\n".join(f"- {m['name']}: {m['description']}" for m in meta) + "\n")


if __name__ == "__main__":
    main()
