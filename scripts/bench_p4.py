#!/usr/bin/env python3
"""P4: constrained decode tok/s (JSON schema, tool call) against the same model unconstrained,
and against llama-server with the same `response_format` json_schema (GBNF), alternating
smallfirst and llama-server rounds in one run (BENCHMARKING.md).

usage: scripts/bench_p4.py [--rounds 3] [--reps 5] [--threads 2] MODEL [MODEL ...]

Each request is streamed and greedy; decode tok/s is (tokens − 1) over the time from the first
to the last streamed token (128 tokens at most), so prefill is not in it. A tool call streams in
one piece once complete, so it is timed as a whole request (tokens over the time from sending
to the call; 256 tokens at most) against a plain request timed the same way. Within a
smallfirst round the kinds of request alternate. Prints a Markdown table
of medians and ratios; --json writes the samples.
"""

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench_p1 import SMALLFIRST, free_port, llama_bin, model_path, start

PROMPT = ("List eight products sold in a hardware store, each with a name, a one-sentence "
          "description and a price in dollars.")
SCHEMA = {
    "type": "object",
    "properties": {
        "products": {
            "type": "array",
            "minItems": 8,
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 40},
                    "description": {"type": "string", "maxLength": 160},
                    "price": {"type": "number", "minimum": 0, "maximum": 10000},
                    "in_stock": {"type": "boolean"},
                },
                "required": ["name", "description", "price", "in_stock"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["products"],
    "additionalProperties": False,
}
# Two products, so that the call completes within its 256 tokens: a call cut by max_tokens is not
# returned, and then there is nothing to time.
TOOL_SCHEMA = json.loads(json.dumps(SCHEMA))
TOOL_SCHEMA["properties"]["products"].update(minItems=2, maxItems=2)
TOOL = {
    "type": "function",
    "function": {
        "name": "add_products",
        "description": "Adds products to the store's catalog.",
        "parameters": TOOL_SCHEMA,
        "strict": True,
    },
}
KINDS = {
    "plain": {},
    "schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "catalog", "schema": SCHEMA,
                                                                          "strict": True}}},
    "tool": {"tools": [TOOL], "tool_choice": "required", "max_tokens": 256},
    # The unconstrained reference for the tool call: the same budget, timed the same way.
    "plain256": {"max_tokens": 256},
}


def measure(port, model, extra):
    """One streamed request: (decode tok/s from the first to the last streamed token, tok/s of
    the whole request). A tool call streams in one delta once complete, so only the second
    figure exists for it."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 128,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    body.update(extra)
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            delta = choices[0].get("delta", {}) if choices else {}
            if delta.get("content") or delta.get("tool_calls"):
                now = time.perf_counter()
                first = first or now
                last = now
    nan = float("nan")
    decode = (tokens - 1) / (last - first) if tokens > 1 and last and last > first else nan
    total = tokens / (last - t0) if last else nan
    return decode, total


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
        r = {k: [] for k in ("sf_plain", "sf_schema", "sf_plain_total", "sf_tool_total", "ls_plain", "ls_schema")}
        for rnd in range(args.rounds):
            print(f"[{name}] round {rnd + 1}/{args.rounds}", file=sys.stderr)
            port = free_port()
            proc = start([str(SMALLFIRST), "serve", "-m", path, "-t", str(args.threads), "--port", str(port),
                          "--ctx", "2048", "--no-prefix-reuse"], port)
            try:
                for kind in ("plain", "schema", "tool"):
                    measure(port, name, KINDS[kind])  # warm-up (and the grammar cache)
                for _ in range(args.reps):
                    r["sf_plain"].append(measure(port, name, KINDS["plain"])[0])
                    r["sf_plain_total"].append(measure(port, name, KINDS["plain256"])[1])
                    r["sf_schema"].append(measure(port, name, KINDS["schema"])[0])
                    r["sf_tool_total"].append(measure(port, name, KINDS["tool"])[1])
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            port = free_port()
            proc = start([str(binp / "llama-server"), "-m", path, "-t", str(args.threads), "--port", str(port),
                          "--host", "127.0.0.1", "-c", "2048", "--parallel", "1", "--jinja"], port)
            # Every request is prefilled in full on both sides (no prompt cache here yet).
            ls = {kind: {**KINDS[kind], "cache_prompt": False} for kind in ("plain", "schema")}
            try:
                for kind in ls:
                    measure(port, name, ls[kind])
                for _ in range(args.reps):
                    r["ls_plain"].append(measure(port, name, ls["plain"])[0])
                    r["ls_schema"].append(measure(port, name, ls["schema"])[0])
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        results[name] = r
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    med = statistics.median
    print(f"\nthreads {args.threads}, {args.rounds} rounds x {args.reps} reps, medians, decode tok/s\n")
    print("| model | figure | value | reference | ratio |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        rows = [
            ("JSON schema, smallfirst", "sf_schema", "sf_plain", "smallfirst unconstrained"),
            ("tool call (whole request), smallfirst", "sf_tool_total", "sf_plain_total",
             "smallfirst unconstrained (whole request)"),
            ("JSON schema, smallfirst", "sf_schema", "ls_schema", "llama-server json_schema (GBNF)"),
            ("JSON schema, llama-server", "ls_schema", "ls_plain", "llama-server unconstrained"),
        ]
        for label, a, b, ref in rows:
            va, vb = med(r[a]), med(r[b])
            print(f"| {name} | {label} | {va:.1f} | {vb:.1f} ({ref}) | {va / vb:.3f} |")


if __name__ == "__main__":
    main()
