#!/usr/bin/env python3
"""P3: time to first token for requests that repeat a long system prompt, with prefix reuse
and without (`serve --no-prefix-reuse`), the two servers alternating request by request.

usage: scripts/bench_p3.py [--requests 30] [--threads 2] [--tasks 1|2] [MODEL]

With --tasks 2, requests alternate between two system prompts (banking77's 77 intents and
clinc150's 150), so the cache must keep two prefixes at once.
"""

import argparse
import json
import signal
import statistics
import time

import httpx

import benchlib
from benchlib import ROOT, SMALLFIRST, free_port

DATA = ROOT.parent / "shared" / "data" / "evals"


def start(model, threads, extra):
    port = free_port()
    proc = benchlib.start([str(SMALLFIRST), "serve", "--model", model, "--threads", str(threads), "--ctx", "2048",
                           "--port", str(port), *extra], port)
    return proc, f"http://127.0.0.1:{port}"


def ttft(base, system, user):
    body = {"model": "local", "stream": True, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
    start = time.monotonic()
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                return time.monotonic() - start
    return time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", type=int, choices=(1, 2), default=1)
    ap.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    args = ap.parse_args()
    def task(name, test):
        labels = json.loads((DATA / f"{name}.labels.json").read_text())
        system = (f"You route customer messages ({name}). Possible intents:\n" + "\n".join(labels)
                  + "\nAnswer with the intent only.")
        rows = [json.loads(l)["input"] for l in (DATA / test).read_text().splitlines()]
        return name, system, rows

    tasks = [task("banking77", "banking77_test.jsonl"), task("clinc150", "clinc150_test_plus_oos.jsonl")][: args.tasks]
    on, on_base = start(args.model, args.threads, [])
    off, off_base = start(args.model, args.threads, ["--no-prefix-reuse"])
    for name, system, rows in tasks:
        n = httpx.post(f"{on_base}/v1/chat/completions", json={
            "model": "local", "max_tokens": 1, "messages": [{"role": "system", "content": system},
                                                              {"role": "user", "content": rows[0]}]}).json()["usage"]["prompt_tokens"]
        print(f"{name}: prompt ≈ {n} tokens")
    with_reuse, without = [], []
    per_task = {name: ([], []) for name, _, _ in tasks}
    try:
        for i in range(args.requests):
            name, system, rows = tasks[i % len(tasks)]
            user = rows[i // len(tasks)]
            a, b = ttft(on_base, system, user), ttft(off_base, system, user)
            with_reuse.append(a)
            without.append(b)
            per_task[name][0].append(a)
            per_task[name][1].append(b)
    finally:
        for p in (on, off):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    q = lambda xs, f: sorted(xs)[max(0, int(len(xs) * f) - 1)]
    a, b = statistics.median(with_reuse), statistics.median(without)
    print(f"{args.requests} requests, {len(tasks)} system prompt(s) alternating ({args.model}, {args.threads} threads)")
    for name, (w, wo) in per_task.items():
        print(f"  {name}: p50 {statistics.median(w) * 1000:.0f} ms with reuse, {statistics.median(wo) * 1000:.0f} ms without")
    print(f"TTFT with reuse:    p50 {a * 1000:.0f} ms, p95 {q(with_reuse, 0.95) * 1000:.0f} ms")
    print(f"TTFT without reuse: p50 {b * 1000:.0f} ms, p95 {q(without, 0.95) * 1000:.0f} ms")
    print(f"ratio (p50 without ÷ with): {b / a:.1f}×")


if __name__ == "__main__":
    main()
