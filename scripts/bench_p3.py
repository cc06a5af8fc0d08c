#!/usr/bin/env python3
"""P3: time to first token for requests that repeat a long system prompt, with prefix reuse
and without (`serve --no-prefix-reuse`), the two servers alternating request by request.

usage: scripts/bench_p3.py [--requests 30] [--threads 2] [MODEL]
"""

import argparse
import json
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SMALLFIRST = ROOT / "target" / "release" / "smallfirst"
DATA = ROOT.parent / "shared" / "data" / "evals"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model, threads, extra):
    port = free_port()
    proc = subprocess.Popen([str(SMALLFIRST), "serve", "--model", model, "--threads", str(threads), "--ctx", "2048",
                             "--port", str(port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


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
    ap.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    args = ap.parse_args()
    labels = json.loads((DATA / "banking77.labels.json").read_text())
    system = ("You route customer messages for a bank. Possible intents:\n" + "\n".join(labels)
              + "\nAnswer with the intent only.")
    rows = [json.loads(l)["input"] for l in (DATA / "banking77_test.jsonl").read_text().splitlines()][: args.requests]
    on, on_base = start(args.model, args.threads, [])
    off, off_base = start(args.model, args.threads, ["--no-prefix-reuse"])
    prompt_tokens = httpx.post(f"{on_base}/v1/chat/completions", json={
        "model": "local", "max_tokens": 1, "messages": [{"role": "system", "content": system},
                                                          {"role": "user", "content": rows[0]}]}).json()["usage"]["prompt_tokens"]
    with_reuse, without = [], []
    try:
        for user in rows:
            with_reuse.append(ttft(on_base, system, user))
            without.append(ttft(off_base, system, user))
    finally:
        for p in (on, off):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    q = lambda xs, f: sorted(xs)[max(0, int(len(xs) * f) - 1)]
    a, b = statistics.median(with_reuse), statistics.median(without)
    print(f"{len(rows)} requests, prompt ≈ {prompt_tokens} tokens ({args.model}, {args.threads} threads)")
    print(f"TTFT with reuse:    p50 {a * 1000:.0f} ms, p95 {q(with_reuse, 0.95) * 1000:.0f} ms")
    print(f"TTFT without reuse: p50 {b * 1000:.0f} ms, p95 {q(without, 0.95) * 1000:.0f} ms")
    print(f"ratio (p50 without ÷ with): {b / a:.1f}×")


if __name__ == "__main__":
    main()
