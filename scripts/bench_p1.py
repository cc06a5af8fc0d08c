#!/usr/bin/env python3
"""P1: prompt and decode tok/s of the engine against llama-bench, and the same through HTTP
against llama-server, alternating A B A B in one run (BENCHMARKING.md).

usage: scripts/bench_p1.py [--rounds 3] [--reps 5] [--threads 2] MODEL [MODEL ...]

MODEL is a catalog name (pulled first). Needs target/release/smallfirst and the reference
tools from shared/bench/build-llama-reference.sh (found via --llama-bin or by running it).
Prints a Markdown table; --json writes the raw numbers.
"""

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchlib import SMALLFIRST, free_port, llama_bin, model_path, start


def llama_bench(binp, model, threads, reps):
    out = subprocess.run(
        [str(binp / "llama-bench"), "-m", model, "-t", str(threads), "-p", "256", "-n", "128", "-r", str(reps), "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    pp, tg = [], []
    for row in json.loads(out):
        (pp if row["n_prompt"] > 0 else tg).extend(row["samples_ts"])
    return pp, tg


def engine_bench(model, threads, reps):
    out = subprocess.run(
        [str(SMALLFIRST), "bench", "-m", model, "-t", str(threads), "-p", "256", "-n", "128", "-r", str(reps), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    runs = json.loads(out)["report"]["runs"]
    return [r["prompt_tokens_per_s"] for r in runs], [r["decode_tokens_per_s"] for r in runs]




PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


def http_once(port, model, extra):
    """One streamed request: TTFT (s) and decode tok/s after the first token."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 128,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, **extra}
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
    ttft = first - t0
    decode = (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")
    return ttft, decode


def http_bench(cmd, port, model, n, extra=None):
    proc = start(cmd, port)
    try:
        http_once(port, model, extra or {})  # warm-up
        return [http_once(port, model, extra or {}) for _ in range(n)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama-bin")
    ap.add_argument("--json")
    args = ap.parse_args()
    binp = llama_bin(args.llama_bin)
    results = {}
    for name in args.models:
        path = model_path(name)
        r = {k: [] for k in ("ref_pp", "ref_tg", "eng_pp", "eng_tg", "srv_ttft", "srv_tg", "ls_ttft", "ls_tg")}
        for rnd in range(args.rounds):
            print(f"[{name}] round {rnd + 1}/{args.rounds}", file=sys.stderr)
            pp, tg = llama_bench(binp, path, args.threads, args.reps)
            r["ref_pp"] += pp
            r["ref_tg"] += tg
            pp, tg = engine_bench(path, args.threads, args.reps)
            r["eng_pp"] += pp
            r["eng_tg"] += tg
            port = free_port()
            ls = http_bench([str(binp / "llama-server"), "-m", path, "-t", str(args.threads), "--port", str(port),
                             "--host", "127.0.0.1", "-c", "2048", "--parallel", "1", "--jinja"], port, name, args.reps,
                            # Every request is prefilled in full on both sides: llama-server's
                            # prompt cache and smallfirst's prefix reuse are both off (P3
                            # measures reuse separately).
                            {"cache_prompt": False})
            r["ls_ttft"] += [x[0] for x in ls]
            r["ls_tg"] += [x[1] for x in ls]
            port = free_port()
            sf = http_bench([str(SMALLFIRST), "serve", "-m", path, "-t", str(args.threads), "--port", str(port),
                             "--ctx", "2048", "--no-prefix-reuse"], port, name, args.reps)
            r["srv_ttft"] += [x[0] for x in sf]
            r["srv_tg"] += [x[1] for x in sf]
        results[name] = r
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nthreads {args.threads}, {args.rounds} rounds x {args.reps} reps, medians\n")
    print("| model | figure | smallfirst | reference | ratio |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        rows = [
            ("prompt tok/s (pp256)", "eng_pp", "ref_pp", "llama-bench", False),
            ("decode tok/s (tg128)", "eng_tg", "ref_tg", "llama-bench", False),
            ("HTTP TTFT ms (stream)", "srv_ttft", "ls_ttft", "llama-server", True),
            ("HTTP decode tok/s (stream)", "srv_tg", "ls_tg", "llama-server", False),
        ]
        for label, a, b, ref, is_time in rows:
            va, vb = med(r[a]), med(r[b])
            scale = 1000 if is_time else 1
            # For a time, the ratio is reference/ours so that > 1 means faster here too.
            ratio = vb / va if is_time else va / vb
            print(f"| {name} | {label} | {va * scale:.1f} | {vb * scale:.1f} ({ref}) | {ratio:.3f} |")


if __name__ == "__main__":
    main()
