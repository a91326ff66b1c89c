#!/usr/bin/env python3
"""ctest train_retrieval_cli: `dsa corpus retrieval` checked by an independent scorer, and
`dsa eval-retrieval` on a random demo-preset model.

The scorer below re-derives every example's answers from its text alone (it parses the records
or the needle in the prompt and the key in each question; it never reads the generator's code
or the stored record indices) and checks them against the stored answers. It is first checked
on hand-written cases. Also: the token budget, depth placement, determinism from the seed, the
corpus text and shards, bad input. Exit 77 = skipped (no tokenizer).
"""
import argparse, json, os, re, shutil, subprocess, sys

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=900)


def records(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


# ---- the independent scorer -------------------------------------------------------------------

def parse_pairs(prompt, sep):
    """key -> value and the key order of the record lines (after the first line, up to a blank one)."""
    lines = prompt.split("\n")[1:]
    pairs, order = {}, []
    for line in lines:
        if not line:
            break
        m = re.fullmatch(r"([a-z]+)" + re.escape(sep) + r"([a-z0-9]+)", line)
        if not m:
            raise ValueError("not a record line: %r" % line)
        if m.group(1) in pairs:
            raise ValueError("duplicate key %r" % m.group(1))
        pairs[m.group(1)] = m.group(2)
        order.append(m.group(1))
    return pairs, order


def derive_answers(kind, prompt, questions):
    """The answers a reader of the text would give, and where (record index / char offset) they are."""
    out = []
    if kind == "kv":
        pairs, order = parse_pairs(prompt, ": ")
        for q in questions:
            k = re.fullmatch(r"What is the value of ([a-z]+)\? Answer:", q).group(1)
            out.append((" " + pairs[k], order.index(k), len(order)))
    elif kind == "mqar":
        body, instr, rest = prompt.partition("\n\nNow recall the value of each key, one per line.\n")
        if not instr or rest:
            raise ValueError("mqar prompt without the recall instruction at its end")
        pairs, order = parse_pairs(body, " ")
        if len(set(pairs.values())) != len(pairs) or set(pairs.values()) & set(pairs):
            raise ValueError("mqar values not unique")
        for q in questions:
            k = re.fullmatch(r"\n?([a-z]+)", q).group(1)
            out.append((" " + pairs[k], order.index(k), len(order)))
    elif kind == "needle":
        for q in questions:
            k = re.fullmatch(r"What is the secret number of ([a-z]+)\? Answer:", q).group(1)
            facts = [m for m in re.finditer(r"The secret number of ([a-z]+) is (\d+)\.", prompt) if m.group(1) == k]
            if len(facts) != 1 or prompt.count(k) != 1:
                raise ValueError("needle key %r not unique" % k)
            out.append((" " + facts[0].group(2), facts[0].start(), len(prompt)))
    else:
        raise ValueError("unknown kind " + kind)
    return out


def normalise(s):
    return " ".join(s.split()).lower()


def score(example, predictions):
    """Exact match after normalisation, every query (the same rule as the C++ scorer)."""
    answers = [q["answer"] for q in example["queries"]]
    return len(predictions) == len(answers) and all(normalise(p) == normalise(a) for p, a in zip(predictions, answers))


def known_cases():
    kv = "Below is a list of records.\nbakotu: 123456\nlimeso: 654321\nzavupe: 111222\n\n"
    check(derive_answers("kv", kv, ["What is the value of limeso? Answer:"]) == [(" 654321", 1, 3)],
          "scorer: known kv case")
    mq = "Remember the pairs.\nbakotu limeso\nzavupe kodira\n\nNow recall the value of each key, one per line.\n"
    check([a for a, _, _ in derive_answers("mqar", mq, ["zavupe", "\nbakotu"])] == [" kodira", " limeso"],
          "scorer: known mqar case")
    nd = "Read. A lamp was seen. The secret number of fegino is 424242. The road passed.\n\n"
    check(derive_answers("needle", nd, ["What is the secret number of fegino? Answer:"])[0][0] == " 424242",
          "scorer: known needle case")
    for kind, text, q in [("kv", kv.replace("zavupe", "bakotu"), "What is the value of bakotu? Answer:"),
                          ("needle", nd + " The secret number of fegino is 1.", "What is the secret number of fegino? Answer:")]:
        try:
            derive_answers(kind, text, [q])
            check(False, "scorer: ambiguous %s case rejected" % kind)
        except ValueError:
            check(True, "scorer: ambiguous %s case rejected" % kind)
    ex = {"queries": [{"answer": " 123456"}, {"answer": " Kodira"}]}
    check(score(ex, ["123456", "kodira\n"]) and not score(ex, ["123456"]) and not score(ex, ["123456", "kodir"]),
          "scorer: normalised exact match, every query")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsa", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work-dir", required=True)
    a = ap.parse_args()
    known_cases()
    if not os.path.exists(a.tokenizer):
        print("skipped: no tokenizer at", a.tokenizer)
        return 77
    w = a.work_dir
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    base = [a.dsa, "corpus", "retrieval", "--tokenizer", a.tokenizer]
    gen = base + ["--kind", "mqar,kv,needle", "--context", "200,1024", "--depths", "0,0.5,1", "--count", "2",
                  "--queries", "3", "--seed", "11"]
    r = run(gen + ["-o", f"{w}/tasks.jsonl", "--text-out", f"{w}/text", "--shards-out", f"{w}/shards"])
    check(r.returncode == 0, "dsa corpus retrieval: " + r.stdout[-200:] + r.stderr[-300:])
    ex = records(f"{w}/tasks.jsonl")
    check(len(ex) == 3 * 2 * 3 * 2, "%d examples = kinds x contexts x depths x count" % len(ex))
    for e in ex:
        qs = [q["question"] for q in e["queries"]]
        try:
            derived = derive_answers(e["kind"], e["prompt"], qs)
        except (ValueError, AttributeError, KeyError) as err:
            check(False, "%s: parse: %s" % (e["id"], err))
            continue
        ok = [d[0] for d in derived] == e["answers"] == [q["answer"] for q in e["queries"]]
        check(ok, "%s: answers re-derived from the prompt equal the stored ones" % e["id"])
        check(score(e, e["answers"]), "%s: stored answers score 1" % e["id"])
        check(e["context_target"] - 16 <= e["context_tokens"] <= e["context_target"],
              "%s: %d tokens for a target of %d" % (e["id"], e["context_tokens"], e["context_target"]))
        # Depth from the text alone: the queried records' mean index over the record count (kv,
        # mqar), the needle's character offset over the prompt (needle).
        pos = sum(d[1] / max(d[2] - 1, 1) for d in derived) / len(derived)
        check(abs(pos - e["depth"]) <= 0.12, "%s: queried at %.3f for depth %.2f" % (e["id"], pos, e["depth"]))
        check(len(e["queries"]) == (3 if e["kind"] == "mqar" else 1), "%s: query count" % e["id"])
    # The scorer can fail: a stored answer changed by one digit / letter no longer matches.
    t = json.loads(json.dumps(next(e for e in ex if e["kind"] == "kv")))
    t["queries"][0]["answer"] = t["queries"][0]["answer"][:-1] + ("1" if t["queries"][0]["answer"][-1] != "1" else "2")
    check(derive_answers("kv", t["prompt"], [t["queries"][0]["question"]])[0][0] != t["queries"][0]["answer"],
          "a tampered kv answer is caught")
    # Determinism: the same arguments give the same bytes, another seed other examples.
    r2 = run(gen + ["-o", f"{w}/again.jsonl"])
    check(r2.returncode == 0 and open(f"{w}/again.jsonl").read() == open(f"{w}/tasks.jsonl").read(),
          "same seed -> identical JSONL")
    r3 = run(base + ["--kind", "kv", "--context", "200", "--depths", "0.5", "--seed", "12", "-o", f"{w}/other.jsonl"])
    other = records(f"{w}/other.jsonl")[0] if r3.returncode == 0 else {}
    same = [e for e in ex if e["kind"] == "kv" and e["context_target"] == 200 and e["depth"] == 0.5]
    check(bool(other) and all(other["prompt"] != e["prompt"] for e in same), "another seed -> other examples")
    # Corpus text = example texts; shards hold their tokens.
    texts = records(f"{w}/text/text/retrieval.jsonl")
    full = [e["prompt"] + "".join(q["question"] + q["answer"] for q in e["queries"]) for e in ex]
    check([t["text"] for t in texts] == full, "corpus text = prompt + questions + answers per example")
    st = run([a.dsa, "corpus", "stats", f"{w}/shards"])
    total = re.search(r"^total\s+(\d+)\s+(\d+)", st.stdout, re.M)
    check(st.returncode == 0 and total and int(total.group(2)) == sum(e["context_tokens"] for e in ex),
          "shards hold sum(context_tokens) tokens: " + st.stdout[-200:] + st.stderr[-200:])
    # Needle filler from a text file.
    with open(f"{w}/filler.txt", "w") as f:
        f.write("The harbour master counted the boats every morning.\n\n  Gulls argued over the nets. " * 200)
    r = run(base + ["--kind", "needle", "--context", "800", "--depths", "0.25", "--filler", f"{w}/filler.txt",
                    "-o", f"{w}/filler.jsonl"])
    fe = records(f"{w}/filler.jsonl") if r.returncode == 0 else []
    check(len(fe) == 1 and "Gulls argued over the nets." in fe[0]["prompt"]
          and derive_answers("needle", fe[0]["prompt"], [fe[0]["queries"][0]["question"]])[0][0] == fe[0]["answers"][0],
          "needle with --filler text: " + r.stderr[-200:])
    # Bad input: clear errors, non-zero exit.
    for args, want in [(["--depths", "1.5"], "depth"), (["--kind", "haystack"], "unknown retrieval kind"),
                       (["--context", "10"], "context"), (["--kind", "mqar", "--context", "64", "--queries", "40"], "too short"),
                       (["--filler", f"{w}/missing.txt", "--kind", "needle"], "cannot open")]:
        r = run(base + args + ["-o", f"{w}/bad.jsonl"])
        check(r.returncode != 0 and want in (r.stderr + r.stdout), "bad input %s -> error mentioning %r: %s"
              % (" ".join(args), want, (r.stderr + r.stdout).strip()[-160:]))
    # The model side: a random demo-preset model (DeepSeek's vocabulary), accuracy in [0, 1].
    r = run([a.dsa, "make-model", "--preset", "demo", "-o", f"{w}/model"])
    check(r.returncode == 0, "make-model demo: " + r.stderr[-200:])
    small = [e for e in ex if e["context_target"] == 200]
    with open(f"{w}/small.jsonl", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in small)
    r = run([a.dsa, "eval-retrieval", "-m", f"{w}/model", "--tasks", f"{w}/small.jsonl", "--tokenizer", a.tokenizer,
             "--backend", "cpu", "--json", f"{w}/eval.json"])
    check(r.returncode == 0, "dsa eval-retrieval: " + r.stdout[-300:] + r.stderr[-300:])
    print(r.stdout)
    if r.returncode == 0:
        res = json.load(open(f"{w}/eval.json"))
        check(0.0 <= res["accuracy"] <= 1.0, "accuracy %.3f in [0, 1]" % res["accuracy"])
        check(len(res["cells"]) == 3 * 3 and all(c["examples"] == 2 for c in res["cells"]), "one cell per kind x depth")
        check(len(res["examples"]) == len(small), "one result per example")
        # The reported predictions obey the exact-match rule: correct implies the text matches.
        check(all(x["text_match"] or not x["correct"] for x in res["examples"]), "correct => predicted text matches")
    r = run([a.dsa, "eval-retrieval", "-m", f"{w}/model", "--tasks", f"{w}/text/text/retrieval.jsonl",
             "--tokenizer", a.tokenizer])
    check(r.returncode != 0 and "bad retrieval example" in r.stderr, "eval-retrieval on a non-task file fails clearly: "
          + r.stderr.strip()[-160:])
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
