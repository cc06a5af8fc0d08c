#!/usr/bin/env python3
"""The endpoints of a local server against llama.cpp's own `llama-server`, same model, same
threads, same run, A and B alternating (BENCHMARKING.md):

usage: scripts/bench_endpoints.py [--model qwen2.5-coder-0.5b-instruct] [--rounds 3] [--reps 5]
                                  [--edits 20] [--llama-server PATH] [embed|fim|n ...]

- embed: `POST /v1/embeddings` with a batch of 64 short texts (banking77 messages), inputs/s,
  against `llama-server --embedding --pooling mean`.
- fim: an autocomplete typing session — a ~1,500-token source file, edited a few characters
  at a time at the cursor, one streamed fill-in-the-middle request per edit (max 16 tokens);
  time to the first token, p50 / p95, against `llama-server`'s `/infill`. Both keep at most
  512 tokens after the cursor and 1,536 before it (llama-server's default batch of 2,048).
- n: one request with `n = 4` against four concurrent requests of `n = 1` on smallfirst
  (64 tokens each, `ignore_eos`), aggregate generated tokens/s.

Both servers run 2 threads, one slot of 4,096 tokens, and keep prompt caches (smallfirst's
prefix reuse, llama-server's `cache_prompt`). Prints Markdown tables.
"""

import argparse
import json
import statistics
import threading
import time

import httpx

import benchlib
from benchlib import ROOT, SMALLFIRST, free_port

DATA = benchlib.SHARED / "data" / "evals"
SOURCE = ROOT / "scripts" / "eval_bfcl.py"


def start_smallfirst(model, parallel=1):
    port = free_port()
    proc = benchlib.start([str(SMALLFIRST), "serve", "--model", model, "--threads", "2", "--ctx", "4096",
                           "--parallel", str(parallel), "--port", str(port)], port)
    return proc, f"http://127.0.0.1:{port}"


def start_llama(server, model, extra=()):
    port = free_port()
    proc = benchlib.start([str(server), "-m", model, "-t", "2", "-c", "4096", "-np", "1", "--port", str(port),
                           "--host", "127.0.0.1", *extra], port)
    return proc, f"http://127.0.0.1:{port}"


def alternate(rounds, reps, a, b):
    """A B A B …: `reps` of each per round; returns the lists of A's and B's results."""
    ra, rb = [], []
    for _ in range(rounds):
        for _ in range(reps):
            ra.append(a())
            rb.append(b())
    return ra, rb


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def embed(args, llama_server, model):
    texts = [json.loads(line)["input"] for line in (DATA / "banking77_test.jsonl").open()][:64]

    def run(base):
        def once():
            t0 = time.perf_counter()
            r = httpx.post(f"{base}/v1/embeddings", json={"model": "local", "input": texts}, timeout=600)
            r.raise_for_status()
            assert len(r.json()["data"]) == 64
            return 64 / (time.perf_counter() - t0)
        return once

    sf, sf_base = start_smallfirst(model)
    ll, ll_base = start_llama(llama_server, model, ["--embedding", "--pooling", "mean", "-b", "2048", "-ub", "2048"])
    try:
        run(sf_base)(), run(ll_base)()
        a, b = alternate(args.rounds, args.reps, run(sf_base), run(ll_base))
    finally:
        benchlib.stop(sf), benchlib.stop(ll)
    ma, mb = statistics.median(a), statistics.median(b)
    print("| embeddings, 64 short texts | smallfirst inputs/s | llama-server inputs/s | ratio |")
    print("|---|---|---|---|")
    print(f"| {model} | {ma:.1f} | {mb:.1f} | {ma / mb:.2f}× |")


def session(edits):
    """(prefix, suffix) at each edit of a typing session at a cursor in the middle of the file."""
    text = SOURCE.read_text()[:6000]
    cursor = text.index("\n", len(text) // 2) + 1
    typed = "    result = compute(values, limit=3)\n    if result:\n        return result\n"
    out, at = [], 0
    for _ in range(edits):
        step = typed[at:at + 3] or "x"
        text = text[:cursor] + step + text[cursor:]
        cursor += len(step)
        at += 3
        out.append((text[:cursor], text[cursor:]))
    return out


def ttft_stream(url, body, is_text):
    t0 = time.perf_counter()
    with httpx.stream("POST", url, json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]" and is_text(json.loads(line[6:])):
                return time.perf_counter() - t0
    return time.perf_counter() - t0


def fim(args, llama_server, model):
    edits = session(args.edits)
    sf, sf_base = start_smallfirst(model)
    ll, ll_base = start_llama(llama_server, model)
    a, b = [], []
    try:
        def sf_req(prefix, suffix):
            body = {"model": "local", "prompt": prefix, "suffix": suffix, "max_tokens": 16, "temperature": 0,
                    "stream": True}
            return ttft_stream(f"{sf_base}/v1/completions", body,
                               lambda v: bool(v.get("choices")) and bool(v["choices"][0]["text"]))

        def ll_req(prefix, suffix):
            body = {"input_prefix": prefix, "input_suffix": suffix, "n_predict": 16, "temperature": 0,
                    "stream": True, "cache_prompt": True}
            return ttft_stream(f"{ll_base}/infill", body, lambda v: bool(v.get("content")))

        sf_req(*edits[0]), ll_req(*edits[0])
        for r in range(args.rounds):
            for i, (p, s) in enumerate(edits):
                # Alternate which server sees the edit first.
                if (i + r) % 2 == 0:
                    a.append(sf_req(p, s))
                    b.append(ll_req(p, s))
                else:
                    b.append(ll_req(p, s))
                    a.append(sf_req(p, s))
        tokens = len(httpx.post(f"{ll_base}/tokenize", json={"content": edits[-1][0] + edits[-1][1]}).json()["tokens"])
    finally:
        benchlib.stop(sf), benchlib.stop(ll)
    print(f"| FIM typing session ({tokens}-token file, {len(a)} edits) | smallfirst TTFT p50 / p95 ms "
          "| llama-server /infill p50 / p95 ms | ratio (p50, llama-server ÷ smallfirst) |")
    print("|---|---|---|---|")
    print(f"| {model} | {statistics.median(a) * 1000:.0f} / {pct(a, 0.95) * 1000:.0f} | "
          f"{statistics.median(b) * 1000:.0f} / {pct(b, 0.95) * 1000:.0f} | "
          f"{statistics.median(b) / statistics.median(a):.2f}× |")


def n_choices(args, model):
    sf, base = start_smallfirst(model, parallel=4)
    msgs = [{"role": "system", "content": "You write short stories. " * 20},
            {"role": "user", "content": "Tell me a story about a lighthouse keeper."}]
    body = {"model": "local", "messages": msgs, "max_tokens": 64, "ignore_eos": True, "temperature": 0.8}

    def one_n4():
        t0 = time.perf_counter()
        r = httpx.post(f"{base}/v1/chat/completions", json={**body, "n": 4}, timeout=600).json()
        return r["usage"]["completion_tokens"] / (time.perf_counter() - t0)

    def four():
        out = [0] * 4

        def go(i):
            out[i] = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600).json()["usage"][
                "completion_tokens"]
        t0 = time.perf_counter()
        ts = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        return sum(out) / (time.perf_counter() - t0)

    try:
        one_n4(), four()
        a, b = alternate(args.rounds, args.reps, one_n4, four)
    finally:
        benchlib.stop(sf)
    ma, mb = statistics.median(a), statistics.median(b)
    print("| n = 4 (64 tokens each) | one request, n = 4: tok/s | four requests: tok/s | ratio |")
    print("|---|---|---|---|")
    print(f"| {model} | {ma:.1f} | {mb:.1f} | {ma / mb:.2f}× |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modes", nargs="*", default=["embed", "fim", "n"])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--llama-server")
    args = ap.parse_args()
    model = benchlib.model_path(args.model)
    llama_server = None
    if "embed" in args.modes or "fim" in args.modes:
        llama_server = benchlib.llama_bin(args.llama_server and args.llama_server)
        if llama_server.is_dir():
            llama_server = llama_server / "llama-server"
    for mode in args.modes:
        {"embed": lambda: embed(args, llama_server, model), "fim": lambda: fim(args, llama_server, model),
         "n": lambda: n_choices(args, model)}[mode]()
        print()


if __name__ == "__main__":
    main()
