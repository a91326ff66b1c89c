#!/usr/bin/env python3
"""ctest train_cli: the trainer end to end through the command line, as a user runs it.

Text -> `dsa corpus build` -> `dsa train CONFIG` (micro preset at DeepSeek's vocabulary, the
real tokenizer) -> metrics, checkpoints, loss plot, export -> `dsa run` on the export ->
`dsa train --resume` continues the same run; bad configurations fail with clear errors.
Exit 77 = skipped (no tokenizer).
"""
import argparse, json, math, os, shutil, subprocess, sys, tempfile

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=900, **kw)


def records(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsa", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work-dir", required=True)
    a = ap.parse_args()
    if not os.path.exists(a.tokenizer):
        print("skipped: no tokenizer at", a.tokenizer)
        return 77
    w = a.work_dir
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(f"{w}/text/text")
    # A small corpus with structure a model can learn in a few steps (repeated phrases).
    animals = ["cat", "dog", "horse", "goose", "otter", "lynx", "heron", "badger"]
    with open(f"{w}/text/text/fables.jsonl", "w") as f:
        for i in range(60):
            a1, a2 = animals[i % 8], animals[(i * 3 + 1) % 8]
            text = (f"Fable {i}. The {a1} met the {a2} by the river. The {a1} said: good morning, {a2}. "
                    f"The {a2} answered: good morning, {a1}. Then they walked along the river together.\n") * 3
            f.write(json.dumps({"name": f"fable-{i}", "text": text}) + "\n")
    r = run([a.dsa, "corpus", "build", "--text", f"{w}/text", "-o", f"{w}/corpus", "--tokenizer", a.tokenizer,
             "--threads", "2", "-q"])
    check(r.returncode == 0, "dsa corpus build: " + r.stderr[-300:])
    cfg = {
        "model": {"preset": "micro", "seed": 7, "config": {"vocab_size": 129280}, "backend": "cpu"},
        "data": {"train": ["corpus"], "seq_len": 48, "batch": 2, "seed": 3, "val_permille": 100},
        "optimizer": {"steps": 6, "lr": 3e-3, "warmup": 2, "schedule": "cosine"},
        "loss": {"attention": "dense", "mtp_weight": 0.3},
        "run": {"out": "run", "log_every": 1, "eval_every": 3, "eval_batches": 1, "checkpoint_every": 3,
                "export_shard_mb": 15},
    }
    with open(f"{w}/train.json", "w") as f:
        f.write("// comments are allowed\n" + json.dumps(cfg, indent=1))
    r = run([a.dsa, "train", f"{w}/train.json"])
    check(r.returncode == 0, "dsa train: " + r.stderr[-600:])
    out = f"{w}/run"
    recs = records(f"{out}/metrics.jsonl") if os.path.exists(f"{out}/metrics.jsonl") else []
    check(len(recs) == 6 and [x["step"] for x in recs] == list(range(1, 7)), f"6 step records ({len(recs)})")
    check(all(math.isfinite(x["loss"]) for x in recs), "finite losses")
    if recs:
        check(recs[0]["loss_main"] > 10.0, f"first loss ~ln(129280) = 11.8 ({recs[0]['loss_main']:.3f})")
        check(recs[-1]["loss_main"] < recs[0]["loss_main"] - 0.5,
              f"loss falls over 6 steps ({recs[0]['loss_main']:.3f} -> {recs[-1]['loss_main']:.3f})")
        check(any("val_loss" in x for x in recs), "validation loss recorded")
    for p in ("loss.png", "metrics.csv", "train_config.json", "export/config.json"):
        check(os.path.exists(f"{out}/{p}"), p)
    check(os.path.isdir(f"{out}/checkpoints") and len(os.listdir(f"{out}/checkpoints")) >= 1, "checkpoints/")
    # The export is a V3.2-layout checkpoint: the engine runs it.
    r = run([a.dsa, "run", "-m", f"{out}/export", "--prompt-ids", "1,400,9000", "-n", "3", "--temperature", "0"])
    check(r.returncode == 0, "dsa run on the export: " + r.stderr[-300:])
    # --resume continues at step 7 and keeps the first six records.
    r = run([a.dsa, "train", f"{w}/train.json", "--steps", "8", "--resume"])
    check(r.returncode == 0 and "resumed from" in r.stderr + r.stdout, "dsa train --resume: " + r.stderr[-400:])
    recs2 = records(f"{out}/metrics.jsonl")
    check([x["step"] for x in recs2] == list(range(1, 9)), f"steps 1..8 after resume ({[x['step'] for x in recs2]})")
    check(recs2[:6] == recs[:6], "first six records unchanged")
    # Clear errors.
    bad = json.loads(json.dumps(cfg))
    bad["optimizer"]["stpes"] = 3
    with open(f"{w}/bad.json", "w") as f:
        json.dump(bad, f)
    r = run([a.dsa, "train", f"{w}/bad.json"])
    check(r.returncode != 0 and "stpes" in r.stderr, "unknown key named: " + r.stderr[-200:])
    small = json.loads(json.dumps(cfg))
    small["model"]["config"] = {}
    small["run"]["out"] = "run-small"
    with open(f"{w}/small.json", "w") as f:
        json.dump(small, f)
    r = run([a.dsa, "train", f"{w}/small.json"])
    check(r.returncode != 0 and "vocabulary" in r.stderr, "shard vocabulary above the model's: " + r.stderr[-200:])
    missing = json.loads(json.dumps(cfg))
    missing["data"]["train"] = ["no-such-dir"]
    with open(f"{w}/missing.json", "w") as f:
        json.dump(missing, f)
    r = run([a.dsa, "train", f"{w}/missing.json"])
    check(r.returncode != 0 and "no-such-dir" in r.stderr, "missing data named: " + r.stderr[-200:])
    print("FAILED:" if failures else "OK", len(failures), "failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
