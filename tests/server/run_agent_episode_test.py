#!/usr/bin/env python3
# End-to-end agent episodes through `dsa serve` with the official openai client running the tools:
# a synthesized task's system prompt, tools and instruction go through chat.completions.create(tools=...),
# the client executes the tool calls it receives with `dsa env call` (the project's sandbox), sends the
# results back as role "tool" messages and verifies the final answer with the project's verifier.
# The demo model has random weights, so a second episode sends a history that already holds the gold
# solution's tool calls and the client-computed results; a third runs `dsa agent --policy openai`
# against the same server. Exits 77 (ctest SKIP) when the openai package is missing.
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import openai
except ImportError:
    print("SKIP: the openai package is missing (python3 -m pip install openai)")
    sys.exit(77)

ARGS = None
S = {}  # server url, spec file, chosen task, gold episode


def dsa(*a, check=True):
    r = subprocess.run([ARGS.dsa, *a], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"dsa {' '.join(a[:3])}... exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def env_call(calls, answer=None):
    """Runs every call so far in a fresh sandbox (`dsa env call`); returns its JSON report."""
    a = ["env", "call", "--env", S["spec_file"], "--spec", "0", "--task", S["task"]["id"], "--calls", json.dumps(calls)]
    if answer is not None:
        a += ["--answer", answer]
    out = dsa(*a).stdout.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def client():
    return openai.OpenAI(base_url=S["url"] + "/v1", api_key="none", max_retries=0, timeout=300)


def create(messages, **kw):
    raw = client().chat.completions.with_raw_response.create(model="demo", messages=messages, tools=S["tools"], **kw)
    assert raw.status_code == 200, raw.status_code
    return raw.parse()


def tokenize_messages(obj, thinking=False):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(obj, f)
    try:
        return [int(x) for x in dsa("tokenize", "--messages", f.name, *(["--thinking"] if thinking else [])).stdout.split()]
    finally:
        os.unlink(f.name)


def openai_call(i, call):
    return {"id": f"call_{i}", "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}


# ---------------------------------------------------------------------------------------------- tests

def test_env_call_matches_the_gold_replay():
    """The client-side tool runner gives exactly the tool results of the project's own agent loop."""
    gold_calls = S["task"]["gold"]["calls"]
    rep = env_call([openai_call(i, c) for i, c in enumerate(gold_calls)], answer=S["task"]["gold"]["answer"])
    gold_results = [m["content"] for m in S["gold_episode"]["messages"] if m["role"] == "tool"]
    assert len(gold_results) == len(gold_calls) >= 2, (len(gold_results), len(gold_calls))
    assert [r["content"] for r in rep["results"]] == gold_results, (rep["results"], gold_results)
    assert all(r["ok"] for r in rep["results"]) and [r["id"] for r in rep["results"]] == [f"call_{i}" for i in range(len(gold_calls))]
    assert rep["db_state_matches"] is True and rep["end_state"] == rep["gold_state"], rep
    assert rep["verdict"] == {"pass": True, "failures": []}, rep["verdict"]
    # Without the calls: the end state and the verdict say so.
    rep = env_call([], answer=S["task"]["gold"]["answer"])
    assert rep["db_state_matches"] is False and rep["verdict"]["pass"] is False, rep
    assert "the database end state differs from the gold solution's" in rep["verdict"]["failures"], rep
    # A bad call is a tool error, as the model would see it; a bad --calls is a CLI error.
    rep = env_call([{"name": "no_such_tool", "arguments": {}}])
    assert rep["results"][0]["ok"] is False and rep["results"][0]["content"].startswith("error:"), rep
    r = dsa("env", "call", "--env", S["spec_file"], "--task", S["task"]["id"], "--calls", "{not json", check=False)
    assert r.returncode == 1 and "--calls: not valid JSON" in r.stderr, (r.returncode, r.stderr)


def test_model_episode_client_runs_the_tools():
    """The model's own episode: tool calls (if any) executed by the client, the final answer verified."""
    msgs = [{"role": "system", "content": S["spec"]["system_prompt"]}, {"role": "user", "content": S["task"]["instruction"]}]
    calls, answer, turns = [], None, 0
    for turn in range(4):
        turns += 1
        r = create(msgs, max_tokens=24, seed=11 + turn, temperature=0.8)
        ch = r.choices[0]
        assert ch.finish_reason in ("stop", "length", "tool_calls"), ch.finish_reason
        assert r.usage.prompt_tokens == len(tokenize_messages({"messages": msgs, "tools": S["tools"]})), r.usage
        if not ch.message.tool_calls:
            answer = ch.message.content or ""
            break
        msgs.append({"role": "assistant", "content": ch.message.content,
                     "tool_calls": [tc.model_dump() for tc in ch.message.tool_calls]})
        new = [tc.model_dump() for tc in ch.message.tool_calls]
        rep = env_call(calls + new)
        calls += new
        for tc, res in zip(new, rep["results"][-len(new):]):
            msgs.append({"role": "tool", "tool_call_id": tc["id"], "content": res["content"]})
    rep = env_call(calls, answer=answer if answer is not None else "")
    assert set(rep["verdict"]) == {"pass", "failures"}, rep
    # Random weights: the verified content (and the write the task needs) cannot be there by chance.
    assert rep["verdict"]["pass"] is False and rep["verdict"]["failures"], rep
    S["figures"]["model_episode_turns"] = turns
    S["figures"]["model_episode_tool_calls"] = len(calls)


def test_gold_history_is_accepted_and_answered():
    """A history with the gold solution's assistant tool calls and the client-computed tool results."""
    msgs = [{"role": "system", "content": S["spec"]["system_prompt"]}, {"role": "user", "content": S["task"]["instruction"]}]
    done = []
    for i, call in enumerate(S["task"]["gold"]["calls"]):  # one call per turn, as the gold policy does
        tc = openai_call(i, call)
        rep = env_call(done + [tc])
        done.append(tc)
        msgs.append({"role": "assistant", "content": None, "tool_calls": [tc]})
        msgs.append({"role": "tool", "tool_call_id": tc["id"], "content": rep["results"][-1]["content"]})
    for thinking in (False, True):
        expect = tokenize_messages({"messages": msgs, "tools": S["tools"]}, thinking)
        extra = {"extra_body": {"chat_template_kwargs": {"thinking": True}}} if thinking else {}
        r = create(msgs, max_tokens=16, seed=5, temperature=0.7, **extra)
        assert r.choices[0].finish_reason in ("stop", "length", "tool_calls"), r.choices[0].finish_reason
        assert r.usage.prompt_tokens == len(expect), (thinking, r.usage.prompt_tokens, len(expect))
        assert r.usage.completion_tokens >= 1, r.usage
        answer = r.choices[0].message.content or ""
        rep = env_call(done, answer=answer)
        assert rep["db_state_matches"] is True, rep  # the client's calls made the gold end state
        assert "verdict" in rep and isinstance(rep["verdict"]["pass"], bool), rep
    # The same history finished with the gold answer passes.
    assert env_call(done, answer=S["task"]["gold"]["answer"])["verdict"]["pass"] is True


def test_dsa_agent_openai_policy_against_dsa_serve():
    """`dsa agent --policy openai` runs one episode to its end against the server."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "ep.json")
        r = dsa("agent", "--policy", "openai", "--endpoint", S["url"] + "/v1", "--api-model", "demo", "--env", S["spec_file"],
                "--spec", "0", "--task", S["task"]["id"], "--max-turns", "3", "--max-turn-tokens", "16", "--temperature", "0.8",
                "--json", out)
        with open(out) as f:
            ep = json.load(f)
    assert f"[task {S['task']['id']}]" in r.stdout and "[end]" in r.stdout, r.stdout
    assert ep["end"] in ("answer", "malformed", "max_turns", "token_budget"), ep  # not policy_error: HTTP worked
    assert 1 <= ep["turns"] <= 3 and ep["tokens"] >= 1, ep
    assert ep["messages"][0]["role"] == "system" and len(ep["messages"][0]["tools"]) == len(S["tools"]), ep["messages"][0]
    assert ep["pass"] is False and ep["failures"], ep
    S["figures"]["dsa_agent_end"] = ep["end"]


def test_model_synth_cli_over_http():
    """`dsa env synth --endpoint`: a scripted OpenAI-compatible server; errors go back, the valid spec is kept."""
    import http.server
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body))
            system = body["messages"][0]["content"]
            example = system[system.index("Example:\n") + len("Example:\n"):]
            text = "Sure, here it is: {\"version\": 1, \"name\": " if len(seen) == 1 else "```json\n" + example + "\n```"
            out = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                           "message": {"role": "assistant", "content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "m.jsonl")
            env = dict(os.environ, SYNTH_TEST_KEY="sekrit")
            r = subprocess.run([ARGS.dsa, "env", "synth", "--endpoint", f"http://127.0.0.1:{srv.server_address[1]}/v1",
                                "--model", "scripted", "--api-key-env", "SYNTH_TEST_KEY", "--rounds", "3", "--levels", "1",
                                "--start-level", "2", "-o", out, "--transcript", os.path.join(d, "t.json")],
                               capture_output=True, text=True, env=env)
            assert r.returncode == 0, (r.stdout, r.stderr)
            assert "level 2 round 1: invalid" in r.stdout and "spec: not valid JSON" in r.stdout, r.stdout
            assert "level 2 round 2: valid (library-loans)" in r.stdout, r.stdout
            assert "wrote 1 validated environments, 1 tasks" in r.stdout, r.stdout
            assert dsa("env", "validate", out).stdout.startswith("1 tasks valid, 0 invalid"), "kept spec does not validate"
            with open(os.path.join(d, "t.json")) as f:
                assert len(json.load(f)) == 5  # system, request, reply, fix request, reply
    finally:
        srv.shutdown()
    assert len(seen) == 2 and seen[0][0] == "/v1/chat/completions" and seen[0][1] == "Bearer sekrit", seen[:1]
    assert seen[0][2]["model"] == "scripted" and seen[0][2]["max_tokens"] == 8192, seen[0][2]
    fix = seen[1][2]["messages"][-1]
    assert fix["role"] == "user" and "- spec: not valid JSON:" in fix["content"] and "round 1 of 3" in fix["content"], fix
    # An unset key variable is refused before any request.
    r = dsa("env", "synth", "--endpoint", "http://127.0.0.1:9/v1", "--api-key-env", "NO_SUCH_VAR_FOR_DSA", "-o", "/dev/null",
            check=False)
    assert r.returncode == 1 and "--api-key-env NO_SUCH_VAR_FOR_DSA: the variable is not set" in r.stderr, r.stderr


def test_model_synth_against_dsa_serve():
    """The pipeline against dsa serve: random weights never write a valid spec; it gives up and keeps nothing."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "m.jsonl")
        r = dsa("env", "synth", "--endpoint", S["url"] + "/v1", "--model", "demo", "--rounds", "2", "--levels", "2",
                "--max-reply-tokens", "24", "-o", out, check=False)
        assert r.returncode == 1 and not os.path.exists(out), (r.returncode, r.stdout, r.stderr)
    assert "level 1 round 1: invalid" in r.stdout and "level 1 round 2: invalid" in r.stdout, r.stdout
    assert "stopped: difficulty 1: no valid spec after 2 round(s)" in r.stdout, r.stdout
    assert "no spec validated" in r.stderr, r.stderr


def test_dsa_agent_records_what_rl_needs():
    """`dsa agent -m MODEL --records`: per model turn the prompt ids (turn 1: the encoder's rendering of
    system + tools + user), sampled ids, log-probs, top-k sampling masks and the experts of every
    position the model ran on (keep-routing / keep-sampling-mask)."""
    with open(os.path.join(S["model"], "config.json")) as f:
        cfg = json.load(f)
    moe = [l for l in range(cfg["num_hidden_layers"]) if l >= cfg["first_k_dense_replace"]]
    with tempfile.TemporaryDirectory() as d:
        ep_path, rec_path = os.path.join(d, "ep.json"), os.path.join(d, "rec.jsonl")
        dsa("agent", "-m", S["model"], "--env", S["spec_file"], "--spec", "0", "--task", S["task"]["id"], "--max-turns", "2",
            "--max-turn-tokens", "8", "--temperature", "1", "--top-k", "8", "--seed", "3", "--json", ep_path, "--records", rec_path)
        with open(ep_path) as f:
            ep = json.load(f)
        with open(rec_path) as f:
            lines = f.read().splitlines()
    assert len(lines) == 1, len(lines)
    rec = json.loads(lines[0])
    assert rec["task"] == S["task"]["id"] and rec["end"] == ep["end"] and len(rec["turns"]) == ep["turns"], (rec.keys(), ep["end"])
    assert rec["turns"][0]["prompt"] == tokenize_messages(ep["messages"][:2]), "turn 1 prompt is not the encoder's rendering"
    for t in rec["turns"]:
        n = len(t["tokens"])
        assert 1 <= n <= 8 and len(t["logprobs"]) == n and t["loss_mask"] == [1] * n, t.keys()
        assert all(lp <= 0 for lp in t["logprobs"]), t["logprobs"]
        assert len(t["sampling_mask"]) == n, len(t["sampling_mask"])
        for tok, m in zip(t["tokens"], t["sampling_mask"]):
            assert len(m) == 8 and m == sorted(set(m)) and tok in m, (tok, m)
        ex = t["experts"]
        assert ex["layers"] == moe, (ex["layers"], moe)
        assert len(ex["ids"]) == len(t["prompt"]) + n - 1, (len(ex["ids"]), len(t["prompt"]), n)
        for row in ex["ids"]:
            assert len(row) == len(moe), row
            for e in row:
                assert len(e) == cfg["num_experts_per_tok"] and e == sorted(set(e)), e
                assert 0 <= e[0] and e[-1] < cfg["n_routed_experts"], e
    S["figures"]["records_turns"] = len(rec["turns"])


TESTS = [test_env_call_matches_the_gold_replay, test_model_episode_client_runs_the_tools,
         test_gold_history_is_accepted_and_answered, test_dsa_agent_openai_policy_against_dsa_serve,
         test_model_synth_cli_over_http, test_model_synth_against_dsa_serve, test_dsa_agent_records_what_rl_needs]


def setup(work, tmp):
    model = S["model"] = os.path.join(work, "demo")
    if not os.path.exists(os.path.join(model, "config.json")):
        os.makedirs(work, exist_ok=True)
        dsa("make-model", "--preset", "demo", "-o", model)
    S["spec_file"] = os.path.join(tmp, "tasks.jsonl")
    dsa("env", "synth", "--seed", "5", "--domains", "orders", "--envs-per-domain", "1", "--tasks-per-level", "2",
        "--reasoning-tasks", "0", "-o", S["spec_file"])
    with open(S["spec_file"]) as f:
        S["spec"] = json.loads(f.readline())
    # A write task with a multi-call gold solution (verified on the end state).
    tasks = [t for t in S["spec"]["tasks"] if t["verify"].get("db_state") and len(t["gold"]["calls"]) >= 2]
    assert tasks, "the synthesized spec has no multi-call write task"
    S["task"] = max(tasks, key=lambda t: len(t["gold"]["calls"]))
    gold = os.path.join(tmp, "gold.json")
    r = dsa("agent", "--policy", "gold", "--env", S["spec_file"], "--spec", "0", "--task", S["task"]["id"], "--json", gold)
    with open(gold) as f:
        S["gold_episode"] = json.load(f)
    assert S["gold_episode"]["pass"] is True, r.stdout
    S["tools"] = S["gold_episode"]["messages"][0]["tools"]  # the tools as the project renders them for OpenAI
    cmd = [ARGS.dsa, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "--kv-pages", "512", "--page-size", "64",
           "--max-batch", "4", "--max-prompt-tokens", "8192", "--max-tokens-limit", "256"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        raise RuntimeError("server did not start: " + line + p.stderr.read())
    threading.Thread(target=p.stderr.read, daemon=True).start()
    S["url"] = line.split()[-1]
    return p


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsa", required=True)
    ap.add_argument("--work-dir", default=None, help="where the demo model is made (default: next to dsa)")
    ap.add_argument("-k", default="", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    work = ARGS.work_dir or os.path.join(os.path.dirname(os.path.abspath(ARGS.dsa)), "test_models")
    S["figures"] = {}
    failed = 0
    t_all = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        p = setup(work, tmp)
        print(f"task {S['task']['id']} (difficulty {S['task']['difficulty']}, {len(S['task']['gold']['calls'])} gold calls, "
              f"{len(S['tools'])} tools), server {S['url']}, setup {time.time() - t_all:.1f}s", flush=True)
        try:
            for t in TESTS:
                if ARGS.k not in t.__name__:
                    continue
                t0 = time.time()
                try:
                    t()
                    print(f"PASS {t.__name__} ({time.time() - t0:.1f}s)", flush=True)
                except Exception:  # noqa: BLE001
                    failed += 1
                    print(f"FAIL {t.__name__} ({time.time() - t0:.1f}s)\n{traceback.format_exc()}", flush=True)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    print("figures: " + json.dumps(S["figures"]))
    print(f"{'FAILED' if failed else 'OK'}: {failed} failed, {time.time() - t_all:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
