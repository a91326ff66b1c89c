#!/usr/bin/env python3
"""ctest corpus_build: scripts/make_corpus.sh bundle + tokenize on a tiny fake source tree.

Builds a fake / (a man page and an alias, Python docs and sources, a pod, four dictd
dictionaries, WordNet data files, a copyright file), bundles it (CORPUS_ROOT: nothing is
installed), checks the rendered text, the bundle's reproducibility, the shards (`dsa corpus
stats`) and the licence files, and that bad input gives clear errors. Exit 77 = skipped (no tokenizer).
"""
import argparse, base64, gzip, hashlib, json, os, shutil, subprocess, sys, tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def b64(n):
    s = ""
    while True:
        s = B64[n % 64] + s
        n //= 64
        if n == 0:
            return s


def write(path, data, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


def dictd(root, name, entries):
    body, index = b"", []
    for head, text in entries:
        raw = text.encode()
        index.append(f"{head}\t{b64(len(body))}\t{b64(len(raw))}")
        body += raw
    write(f"{root}/usr/share/dictd/{name}.dict.dz", gzip.compress(body, mtime=0), "wb")
    write(f"{root}/usr/share/dictd/{name}.index", "\n".join(sorted(index)) + "\n")


def make_fake_root(root):
    man = (".TH HELLO 1 2024 fake \"User Commands\"\n.SH NAME\nhello \\- print a friendly greeting\n"
           ".SH DESCRIPTION\n.B hello\nprints a greeting to standard output and exits.\n")
    write(f"{root}/usr/share/man/man1/hello.1.gz", gzip.compress(man.encode(), mtime=0), "wb")
    write(f"{root}/usr/share/man/man1/hi.1.gz", gzip.compress(b".so man1/hello.1\n", mtime=0), "wb")
    os.symlink("hello.1.gz", f"{root}/usr/share/man/man1/howdy.1.gz")
    write(f"{root}/usr/share/doc/python3.11/html/_sources/library/fake.rst.txt",
          ":mod:`fake` --- A fake module\n==============================\n\nThe fake module fakes things.\n")
    write(f"{root}/usr/lib/python3.11/fakemod.py", "def add(a, b):\n    \"\"\"Adds.\"\"\"\n    return a + b\n")
    write(f"{root}/usr/lib/python3.11/dist-packages/notstdlib.py", "x = 1\n")
    write(f"{root}/usr/lib/python3.11/latin1.py", b"s = '\xe9'\n", "wb")  # not UTF-8: skipped
    write(f"{root}/usr/share/perl/5.36/pod/perlfake.pod",
          "=head1 NAME\n\nperlfake - a fake perl document\n\n=head1 DESCRIPTION\n\nFakes B<bold> things.\n\n=cut\n")
    dictd(root, "gcide", [("00-database-info", "This is the GCIDE database header.\n"),
                          ("Apple", "Apple \\Ap\"ple\\, n.\n   The fleshy pome of a tree.\n   [1913 Webster]\n\n"),
                          ("Zebra", "Zebra \\Ze\"bra\\, n.\n   A striped horse-like animal.\n   [1913 Webster]\n\n")])
    for name in ["jargon", "foldoc", "devil"]:
        dictd(root, name, [(name + "word", f"{name}word\n\n   The {name} meaning of a word.\n\n")])
    hdr = "  1 This software and database is being provided to you, the LICENSEE, by\n"
    write(f"{root}/usr/share/wordnet/data.noun", hdr +
          "02084071 05 n 02 dog 0 domestic_dog 0 000 | a member of the genus Canis; \"the dog barked\"  \n")
    write(f"{root}/usr/share/wordnet/data.verb", hdr + "01168468 34 v 01 eat 0 000 | take in solid food  \n")
    write(f"{root}/usr/share/wordnet/data.adj", hdr + "00002098 00 a 01 able(a) 0 000 | having the means  \n")
    write(f"{root}/usr/share/wordnet/data.adv", hdr + "00001740 02 r 01 quickly 0 000 | with speed  \n")
    write(f"{root}/usr/share/doc/dict-gcide/copyright", "GCIDE is GPL-3+ (fake copyright file)\n")


def run(cmd, env=None, expect_rc=0):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if expect_rc is not None and r.returncode != expect_rc:
        print(f"command {cmd} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsa", required=True)
    ap.add_argument("--work-dir", required=True)
    a = ap.parse_args()
    tokenizer = os.environ.get("DSA_TOKENIZER", os.path.join(ROOT, "third_party/tokenizer/tokenizer.json"))
    if not os.path.exists(tokenizer):
        print("SKIP: tokenizer.json missing (scripts/fetch_tokenizer.sh)")
        return 77
    for tool in ["groff", "pod2text", "xz", "tar"]:
        if shutil.which(tool) is None:
            print(f"FAIL: {tool} is not installed (scripts/setup.sh installs it)")
            return 1
    w = os.path.abspath(a.work_dir)
    shutil.rmtree(w, ignore_errors=True)
    fake = os.path.join(w, "root")
    make_fake_root(fake)
    env = dict(os.environ, CORPUS_ROOT=fake, DSA=os.path.abspath(a.dsa), THREADS="2", XZ_LEVEL="1",
               TOKENIZER=tokenizer, SHARD_TOKENS="40")
    script = os.path.join(ROOT, "scripts/make_corpus.sh")

    bundle, bundle2 = os.path.join(w, "b1/corpus-text.tar.xz"), os.path.join(w, "b2/corpus-text.tar.xz")
    r1 = run([script, "bundle", bundle], env)
    r2 = run([script, "bundle", bundle2], env)
    check(r1.returncode == 0 and r2.returncode == 0, "make_corpus.sh bundle succeeds on the fake tree")
    if failures:
        return 1
    digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
    check(digest(bundle) == digest(bundle2), "the bundle is byte-for-byte reproducible")

    with tarfile.open(bundle, "r:xz") as t:
        names = set(t.getnames())
        read = lambda n: t.extractfile(n).read().decode()
        docs = {}
        for n in sorted(names):
            if n.startswith("corpus-text/text/") and n.endswith(".jsonl"):
                docs[n.split("/")[-1][:-6]] = [json.loads(l) for l in read(n).splitlines()]
        sources = json.loads(read("corpus-text/sources.json"))["sources"]
        licences = read("corpus-text/LICENSES.md")
        check("corpus-text/licenses/dict-gcide.copyright" in names, "the packages' copyright files are bundled")
    expect_sources = ["man", "python-doc", "python-src", "perl-doc", "gcide", "wordnet", "jargon", "foldoc", "devil"]
    check([s["name"] for s in sources] == expect_sources, "sources.json lists every source in order")
    check(all(s["licence"] and s["licence"] in licences for s in sources), "LICENSES.md names every licence")
    man = docs["man"]
    check([d["name"] for d in man] == ["man/hello.1"], "man: one page; the .so alias and the symlink are skipped")
    check("print a friendly greeting" in man[0]["text"] and "\b" not in man[0]["text"] and ".SH" not in man[0]["text"],
          "man: rendered to plain text (no roff, no overstrike)")
    check([d["name"] for d in docs["python-src"]] == ["python-src/fakemod.py"],
          "python-src: stdlib .py only (dist-packages and non-UTF-8 files left out)")
    check(docs["python-doc"][0]["name"] == "python-doc/library/fake", "python-doc: reST source named by its path")
    check("Fakes bold things." in docs["perl-doc"][0]["text"], "perl-doc: pod rendered with pod2text")
    g = docs["gcide"][0]["text"]
    check("Apple" in g and "Zebra" in g and "[1913 Webster]" not in g and "database header" not in g,
          "gcide: entries kept, source tags and database info dropped")
    wn = "\n".join(d["text"] for d in docs["wordnet"])
    check("dog, domestic dog (noun): a member of the genus Canis" in wn and "able (adjective)" in wn
          and "LICENSEE" not in wn, "wordnet: synsets rendered, licence header skipped")

    out = os.path.join(w, "corpus")
    r = run([script, "tokenize", bundle, out], env)
    check(r.returncode == 0 and "total" in r.stdout, "make_corpus.sh tokenize builds the shards")
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    check(len(manifest["shards"]) >= 2, f"SHARD_TOKENS=40 splits the corpus ({len(manifest['shards'])} shards)")
    check([s["name"] for s in manifest["sources"]] == sorted(expect_sources), "manifest: every source")
    check(os.path.exists(os.path.join(out, "LICENSES.md")) and
          os.path.exists(os.path.join(out, "licenses/dict-gcide.copyright")), "licences are written next to the corpus")
    st = run([a.dsa, "corpus", "stats", out, "--val-permille", "500"])
    rows = {l.split()[0]: l.split() for l in st.stdout.splitlines() if l.strip()}
    check(st.returncode == 0 and int(rows["total"][2]) == manifest["tokens"] and int(rows["man"][1]) == 1,
          "dsa corpus stats: per-source documents and tokens match the manifest")
    # Tokenising again gives identical shards.
    out2 = os.path.join(w, "corpus2")
    run([script, "tokenize", bundle, out2], dict(env, THREADS="1"))
    same = all(digest(os.path.join(out, s)) == digest(os.path.join(out2, s)) for s in manifest["shards"])
    check(same, "tokenising with 1 or 2 threads gives identical shards")

    # Bad input: clear errors and non-zero exits, never a crash.
    shard = os.path.join(out, manifest["shards"][0])
    bad = os.path.join(w, "bad.dsatok")
    data = open(shard, "rb").read()
    open(bad, "wb").write(data[:len(data) - 3])
    r = run([a.dsa, "corpus", "stats", bad], expect_rc=None)
    check(r.returncode == 1 and "truncated" in r.stderr, "stats on a truncated shard: exit 1, 'truncated'")
    r = run([a.dsa, "corpus", "build", "--text", os.path.join(w, "nothing"), "-o", os.path.join(w, "o")], expect_rc=None)
    check(r.returncode == 1 and "no text/ directory" in r.stderr, "build without text/: exit 1 with a message")
    text = os.path.join(w, "text")
    with tarfile.open(bundle, "r:xz") as t:
        t.extractall(text)
    r = run([a.dsa, "corpus", "build", "--text", os.path.join(text, "corpus-text"), "-o", out, "--tokenizer",
             tokenizer], expect_rc=None)
    check(r.returncode == 1 and "--overwrite" in r.stderr, "build into a directory of shards needs --overwrite")
    r = run([script, "tokenize", os.path.join(w, "missing.tar.xz"), out], env, expect_rc=None)
    check(r.returncode == 1 and "no such bundle" in r.stderr, "tokenize without a bundle: exit 1 with a message")

    print(f"corpus_build: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
