#!/usr/bin/env python3
"""Which catalog model to serve by default: the instruct candidates side by side.

usage: scripts/bench_default_model.py [--rows 40] [--tools 20] [--pull] [--json FILE] [MODEL ...]

For each MODEL (default: the catalog's instruct models that registry packages carry) it starts
`smallfirst serve` (2 threads, ctx 2048) and measures, through HTTP:

- banking77: `--rows` test rows (fixed seed), the 77 labels as a configured task, greedy; the
  accuracy of the label, and the p50 / p95 request latency (the first request pays the labels'
  prefill, later ones reuse it);
- BFCL simple_python: the first `--tools` rows with `tool_choice: "required"`, greedy; the share
  whose call matches (scripts/eval_bfcl.py's rules) and the p95 latency;
- the seed's example ("Summarize this support ticket in 3 bullets: ...") sent with the
  request's defaults (no temperature, no max_tokens): the answer, its token count and time;
- peak RSS of the server process (VmHWM) after the run;
- with --pull, the time `smallfirst pull` takes into an empty cache (registry packages).

Prints a Markdown table and each model's answer to the seed's example.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import benchlib
import eval_bfcl
from benchlib import SMALLFIRST, free_port

DATA = benchlib.SHARED / "data" / "evals"
CANDIDATES = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
SEED_EXAMPLE = ("Summarize this support ticket in 3 bullets: My order #4411 arrived broken, I was charged "
                "twice, and nobody answered my emails for a week.")
SYSTEM = "Classify the customer's message by its intent."


def serve(path, tmp):
    labels = json.loads((DATA / "banking77.labels.json").read_text())
    config = tmp / "serve.toml"
    config.write_text(f'[tiers.local]\nbackend = "embedded"\nmodel = "{path}"\nthreads = 2\nctx = 2048\n'
                      f'\n[tasks.banking77]\nlabels = {json.dumps(labels)}\nthreshold = 0.0\n')
    port = free_port()
    proc = benchlib.start([str(SMALLFIRST), "serve", "--config", str(config), "--port", str(port)], port)
    return proc, f"http://127.0.0.1:{port}"


def timed_post(base, body, headers=None):
    t0 = time.perf_counter()
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers or {}, timeout=900)
    return r, time.perf_counter() - t0


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def banking(base, rows):
    hits, times = 0, []
    for row in rows:
        body = {"model": "auto", "temperature": 0, "max_tokens": 24,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["input"]}]}
        r, s = timed_post(base, body, {"x-smallfirst-task": "banking77"})
        r.raise_for_status()
        hits += r.json()["smallfirst"]["label"]["label"] == row["expected"]
        times.append(s)
    return hits / len(rows), times


def tools(base, rows):
    hits, times = 0, []
    for row in rows:
        specs, _, names = eval_bfcl.tools_of(row)
        body = {"model": "local", "messages": row["messages"], "tools": specs, "tool_choice": "required",
                "temperature": 0, "max_tokens": 256}
        r, s = timed_post(base, body)
        times.append(s)
        if r.status_code != 200:
            continue
        calls = r.json()["choices"][0]["message"].get("tool_calls") or []
        parsed = []
        for c in calls:
            try:
                args = json.loads(c["function"]["arguments"])
            except json.JSONDecodeError:
                args = {}
            parsed.append((names.get(c["function"]["name"], c["function"]["name"]), args))
        hits += eval_bfcl.correct(parsed, row["expected"])
    return hits / len(rows), times


def pull_time(name):
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, SMALLFIRST_MODELS_DIR=d)
        t0 = time.perf_counter()
        subprocess.run([str(SMALLFIRST), "pull", name], check=True, env=env, capture_output=True)
        return time.perf_counter() - t0


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=CANDIDATES)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--tools", type=int, default=20)
    ap.add_argument("--pull", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    bank = [json.loads(line) for line in (DATA / "banking77_test.jsonl").open()]
    bank = random.Random(7).sample(bank, args.rows)
    bfcl = [json.loads(line) for line in (DATA / "bfcl_simple_python.jsonl").open()][:args.tools]
    results = []
    for name in args.models:
        path = benchlib.model_path(name)
        pulled = pull_time(name) if args.pull else None
        with tempfile.TemporaryDirectory() as d:
            proc, base = serve(path, Path(d))
            try:
                print(f"[{name}] banking77", file=sys.stderr)
                acc, bank_t = banking(base, bank)
                print(f"[{name}] bfcl", file=sys.stderr)
                tool_acc, tool_t = tools(base, bfcl)
                print(f"[{name}] seed example", file=sys.stderr)
                r, seed_s = timed_post(base, {"model": "local", "messages": [{"role": "user", "content": SEED_EXAMPLE}]})
                r.raise_for_status()
                seed = r.json()
                rss = peak_rss_mb(proc.pid)
            finally:
                benchlib.stop(proc)
        results.append({"model": name, "banking77_accuracy": acc, "banking77_p50_s": statistics.median(bank_t),
                        "banking77_p95_s": p95(bank_t), "bfcl_simple_correct": tool_acc,
                        "bfcl_p95_s": p95(tool_t), "peak_rss_mb": rss, "pull_s": pulled,
                        "seed_answer": seed["choices"][0]["message"]["content"],
                        "seed_tokens": seed["usage"]["completion_tokens"], "seed_s": seed_s})
    print(f"| model | banking77 acc ({args.rows}) | p50 / p95 s | BFCL simple ({args.tools}) | p95 s "
          "| peak RSS MB | pull s | seed example: tokens, s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        pull = f"{r['pull_s']:.0f}" if r["pull_s"] is not None else "—"
        print(f"| {r['model']} | {r['banking77_accuracy']:.1%} | {r['banking77_p50_s']:.2f} / {r['banking77_p95_s']:.2f} "
              f"| {r['bfcl_simple_correct']:.1%} | {r['bfcl_p95_s']:.2f} | {r['peak_rss_mb']:.0f} | {pull} "
              f"| {r['seed_tokens']}, {r['seed_s']:.1f} |")
    for r in results:
        print(f"\n**{r['model']}** on the seed's example, request defaults:\n")
        print("> " + r["seed_answer"].replace("\n", "\n> "))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
