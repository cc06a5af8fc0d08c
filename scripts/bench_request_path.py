#!/usr/bin/env python3
"""What one `model: "auto"` request costs on its way through the gateway: body parses, chat
template renders and prompt tokenizations per request (the server's /metrics counters), the
decide time (`server-timing: decide`) and the whole request's latency, on two paths:

- local: answered by the embedded tier (task `chat`, no threshold);
- escalated: a classification held, judged below its threshold (1.0, so always) and sent to
  the frontier tier (a static nginx upstream, shared/bench/upstream-nginx.sh).

usage: scripts/bench_request_path.py [--requests 60] [--baseline BINARY] [--json FILE]

With --baseline, another build (an earlier commit's target/release/smallfirst) serves the same
configuration and the two are measured in the same run, alternating in blocks of 10 requests.
Builds without the counters report none. Needs nginx (apt) and the test model.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchlib import SHARED, SMALLFIRST, free_port, model_path, start, stop

COUNTERS = ("smallfirst_body_parses_total", "smallfirst_template_renders_total", "smallfirst_tokenizations_total")
LABELS = ["billing", "technical", "account", "other"]


def counters(base):
    text = httpx.get(f"{base}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in COUNTERS:
            out[name] = float(value)
    return out


def request(path):
    if path == "local":
        return {"x-smallfirst-task": "chat"}, {
            "model": "auto", "max_tokens": 1,
            "messages": [{"role": "system", "content": "You are a support assistant."},
                         {"role": "user", "content": "My order #4411 arrived broken and I was charged twice."}]}
    return {"x-smallfirst-task": "triage"}, {
        "model": "auto", "max_tokens": 8, "metadata": {"labels": LABELS},
        "messages": [{"role": "user", "content": "My order #4411 arrived broken and I was charged twice."}]}


def one(base, path):
    headers, body = request(path)
    t0 = time.perf_counter()
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)
    ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200, r.text
    escalated = r.headers.get("x-smallfirst-escalated") == "true"
    assert escalated == (path == "escalated"), r.headers
    timing = r.headers.get("server-timing", "")
    decide = float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")
    return decide, ms


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--baseline")
    ap.add_argument("--json")
    args = ap.parse_args()

    model = model_path("smollm2-135m-instruct")
    up_port = free_port()
    nginx = SHARED / "bench" / "upstream-nginx.sh"
    subprocess.run(["bash", str(nginx), "start", str(up_port)], check=True, capture_output=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-path-"))
    config = tmp / "smallfirst.toml"
    config.write_text(f"""
[tiers.local]
backend = "embedded"
model = "{model}"
threads = 1
ctx = 2048

[tiers.frontier]
backend = "openai"
model = "bench-upstream"
base_url = "http://127.0.0.1:{up_port}/v1"
context_window = 8192

[tasks.triage]
tier = "local"
escalate = ["frontier"]
threshold = 1.0
labels = {json.dumps(LABELS)}
""")
    builds = {"current": SMALLFIRST}
    if args.baseline:
        builds["baseline"] = Path(args.baseline)
    servers = {}
    try:
        for name, binary in builds.items():
            port = free_port()
            servers[name] = (start([str(binary), "serve", "--config", str(config), "--port", str(port)], port),
                             f"http://127.0.0.1:{port}")
        results = {}
        for path in ("local", "escalated"):
            for name, (_, base) in servers.items():
                for _ in range(3):  # warm-up: the prefix cache, the pooled connection
                    one(base, path)
            rows = {name: {"decide": [], "ms": [], "counts": {}} for name in servers}
            before = {name: counters(base) for name, (_, base) in servers.items()}
            done = 0
            while done < args.requests:
                for name, (_, base) in servers.items():
                    for _ in range(10):
                        d, ms = one(base, path)
                        rows[name]["decide"].append(d)
                        rows[name]["ms"].append(ms)
                done += 10
            for name, (_, base) in servers.items():
                after = counters(base)
                n = len(rows[name]["ms"])
                rows[name]["counts"] = {k: (after[k] - before[name].get(k, 0)) / n for k in after}
            results[path] = rows
        report(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        for proc, _ in servers.values():
            stop(proc)
        subprocess.run(["bash", str(nginx), "stop"], check=False)


def report(results):
    print("| path | build | parses / renders / tokenizations per request | decide p50 / p99 (ms) | request p50 / p99 (ms) |")
    print("|---|---|---|---|---|")
    for path, rows in results.items():
        for name, r in rows.items():
            c = r["counts"]
            counts = " / ".join(f"{c[k]:.2f}" for k in COUNTERS) if c else "not counted"
            print(f"| {path} | {name} | {counts} | {statistics.median(r['decide']):.3f} / {pct(r['decide'], 0.99):.3f} "
                  f"| {statistics.median(r['ms']):.2f} / {pct(r['ms'], 0.99):.2f} |")
        if len(rows) == 2:
            cur, base = rows["current"], rows["baseline"]
            print(f"|  | current ÷ baseline | | {statistics.median(cur['decide']) / statistics.median(base['decide']):.2f}× "
                  f"| {statistics.median(cur['ms']) / statistics.median(base['ms']):.2f}× |", file=sys.stdout)


if __name__ == "__main__":
    main()
