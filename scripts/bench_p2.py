#!/usr/bin/env python3
"""P2: aggregate decode tok/s with N concurrent streams (BENCHMARKING.md), smallfirst against
llama-batched-bench (the kernel limit) and llama-server --parallel N (the same HTTP load),
alternating within each round. Each round also runs `smallfirst bench --npl` (the same shape
through the engine's scheduler, in process, no HTTP).

usage: scripts/bench_p2.py [--rounds 3] [--threads 2] [--clients 1,2,4,8,16] [MODEL]

Each of N clients sends, at the same moment, one streamed greedy request whose prompt is 128
tokens (distinct per client) and generates 128 tokens (`ignore_eos`, which both servers accept). Figures per run:
- decode tok/s: tokens streamed while all N clients were decoding (from the last client's
  first token to the first client's last token) over that window — batched-bench's S_TG;
- end-to-end tok/s: completion tokens of all clients over the time until the last finished
  (prefill included);
- TTFT: from sending to the first content token, per client.
Both servers get --parallel N, prompt caching off (cache_prompt false / --no-prefix-reuse), and
a KV cache of 512 positions per slot. Medians over rounds are printed as a Markdown table;
--json writes the raw numbers.
"""

import argparse
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

import httpx

from benchlib import SMALLFIRST, free_port, llama_bin, model_path, start, stop
PROMPT_TOKENS = 128
GEN_TOKENS = 128
SLOT_CTX = 512
WORDS = ("river stone cloud maple harbor lantern meadow copper violet orchard signal velvet canyon "
         "ember falcon glacier willow summit quartz prairie").split()


def body(prompt, max_tokens, extra=None):
    return {"model": "local", "stream": True, "temperature": 0, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": prompt}],
            **(extra or {})}


def prompt_tokens(base, prompt):
    b = body(prompt, 1)
    b["stream"] = False
    b.pop("stream_options")
    return httpx.post(f"{base}/v1/chat/completions", json=b, timeout=120).json()["usage"]["prompt_tokens"]


def prompts(base, n):
    """n distinct prompts of exactly PROMPT_TOKENS tokens each (as the served template counts)."""
    out = []
    ask = "Now count from 1 to 300, one number per line, and nothing else."
    for i in range(n):
        words = []
        text = lambda extra="": f"Notes {i}: {' '.join(words)}{extra}. {ask}"
        # Words are one or two tokens each: step toward the count, then pad with " ." tokens.
        for _ in range(8):
            got = prompt_tokens(base, text())
            if got == PROMPT_TOKENS:
                break
            if got < PROMPT_TOKENS:
                words += [WORDS[(i * 7 + len(words) + k) % len(WORDS)] for k in range(max(1, (PROMPT_TOKENS - got) // 2))]
            else:
                del words[-1:]
        got = prompt_tokens(base, text())
        while got > PROMPT_TOKENS and words:
            words.pop()
            got = prompt_tokens(base, text())
        if got < PROMPT_TOKENS:
            pad = ""
            while prompt_tokens(base, text(pad)) < PROMPT_TOKENS:
                pad += " ."
            words.append(pad.strip())
        if prompt_tokens(base, text()) != PROMPT_TOKENS:
            raise SystemExit(f"cannot make a {PROMPT_TOKENS}-token prompt")
        out.append(text())
    return out


def client(base, prompt, extra, barrier, out, i):
    barrier.wait()
    sent = time.monotonic()
    stamps = []
    completion = None
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body(prompt, GEN_TOKENS, extra), timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices") or []:
                if (c.get("delta") or {}).get("content"):
                    stamps.append(time.monotonic())
    out[i] = {"sent": sent, "stamps": stamps, "completion": completion if completion is not None else len(stamps)}


def load(base, texts, extra):
    n = len(texts)
    barrier = threading.Barrier(n)
    out = [None] * n
    threads = [threading.Thread(target=client, args=(base, texts[i], extra, barrier, out, i)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = min(o["sent"] for o in out)
    first = max(o["stamps"][0] for o in out)
    last = min(o["stamps"][-1] for o in out)
    window = last - first
    in_window = sum(1 for o in out for s in o["stamps"] if first < s <= last)
    return {
        "decode_tps": in_window / window if window > 0 else float("nan"),
        "e2e_tps": sum(o["completion"] for o in out) / (max(o["stamps"][-1] for o in out) - start),
        "ttft": [o["stamps"][0] - o["sent"] for o in out],
        "completion": [o["completion"] for o in out],
    }


def batched_bench(binp, model, threads, clients):
    out = subprocess.run(
        [str(binp / "llama-batched-bench"), "-m", model, "-t", str(threads), "-npp", str(PROMPT_TOKENS),
         "-ntg", str(GEN_TOKENS), "-npl", ",".join(map(str, clients)), "--output-format", "jsonl"],
        check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {r["pl"]: r["speed_tg"] for r in rows}


def engine_bench(model, threads, clients):
    out = subprocess.run(
        [str(SMALLFIRST), "bench", "-m", model, "-t", str(threads), "-p", str(PROMPT_TOKENS), "-n", str(GEN_TOKENS),
         "-r", "1", "--npl", ",".join(map(str, clients)), "--ctx", str(SLOT_CTX), "--json"],
        check=True, capture_output=True, text=True).stdout
    return {r["npl"]: statistics.median(r["decode_tokens_per_s"]) for r in json.loads(out)["results"]}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,2,4,8,16")
    ap.add_argument("--llama-bin")
    ap.add_argument("--json")
    ap.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    binp = llama_bin(args.llama_bin)
    model = model_path(args.model)
    t = str(args.threads)
    raw = {"bench": [], "engine": [], "smallfirst": {n: [] for n in clients},
           "llama-server": {n: [] for n in clients}}
    texts = None
    for rnd in range(args.rounds):
        raw["bench"].append(batched_bench(binp, model, args.threads, clients))
        print(f"round {rnd + 1}: batched-bench {raw['bench'][-1]}", flush=True)
        raw["engine"].append(engine_bench(model, args.threads, clients))
        print(f"round {rnd + 1}: smallfirst bench --npl {raw['engine'][-1]}", flush=True)
        for n in clients:
            for name in ("smallfirst", "llama-server"):
                port = free_port()
                if name == "smallfirst":
                    cmd = [str(SMALLFIRST), "serve", "--model", model, "--threads", t, "--ctx", str(SLOT_CTX),
                           "--parallel", str(n), "--no-prefix-reuse", "--port", str(port)]
                else:
                    cmd = [str(binp / "llama-server"), "-m", model, "-t", t, "-tb", t, "--parallel", str(n),
                           "-c", str(SLOT_CTX * n), "--jinja", "--port", str(port), "--no-webui"]
                proc = start(cmd, port)
                try:
                    base = f"http://127.0.0.1:{port}"
                    if texts is None:
                        texts = prompts(base, max(clients))
                    # llama-server's own prompt cache off, as smallfirst's is.
                    extra = {"ignore_eos": True}
                    if name == "llama-server":
                        extra["cache_prompt"] = False
                    load(base, texts[:1], extra)  # warm-up
                    r = load(base, texts[:n], extra)
                finally:
                    stop(proc)
                raw[name][n].append(r)
                print(f"round {rnd + 1}: N={n} {name}: decode {r['decode_tps']:.1f} tok/s, "
                      f"e2e {r['e2e_tps']:.1f} tok/s, TTFT p50 {statistics.median(r['ttft']) * 1000:.0f} ms, "
                      f"tokens {r['completion']}", flush=True)
    med = statistics.median
    print(f"\n{args.model}, {args.threads} threads, {args.rounds} rounds (medians)\n")
    print("| N | batched-bench S_TG | smallfirst engine | ratio | smallfirst HTTP | ratio | llama-server HTTP | "
          "ratio (smallfirst ÷ llama-server) | smallfirst end-to-end | llama-server end-to-end | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in clients:
        sf = med(r["decode_tps"] for r in raw["smallfirst"][n])
        ls = med(r["decode_tps"] for r in raw["llama-server"][n])
        bb = med(b[n] for b in raw["bench"])
        en = med(e[n] for e in raw["engine"])
        sfe = med(r["e2e_tps"] for r in raw["smallfirst"][n])
        lse = med(r["e2e_tps"] for r in raw["llama-server"][n])
        print(f"| {n} | {bb:.1f} | {en:.1f} | **{en / bb:.3f}** | {sf:.1f} | **{sf / bb:.3f}** | {ls:.1f} | "
              f"**{sf / ls:.3f}** | {sfe:.1f} | {lse:.1f} | **{sfe / lse:.3f}** |")
    for n in clients:
        for name in ("smallfirst", "llama-server"):
            tt = [x * 1000 for r in raw[name][n] for x in r["ttft"]]
            print(f"TTFT N={n} {name}: p50 {pct(tt, 0.5):.0f} ms, p95 {pct(tt, 0.95):.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
