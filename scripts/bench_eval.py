#!/usr/bin/env python3
"""Eval throughput: rows/s of `smallfirst eval` on the embedded tier (the gateway core, no HTTP)
against the same rows sent through `smallfirst serve` with the official `openai` SDK, same
model, same task, same concurrency, same run.

usage: scripts/bench_eval.py [--model smollm2-135m-instruct] [--rows 200] [--concurrency 4]
                             [--json FILE]

The rows: --rows sampled (seed 0) from banking77's test set, answered as task `banking` (its 77
labels listed, the answer constrained to one of them: label decoding), greedy. The eval's time
is its own report's `seconds` (the model load excluded); the SDK's is the wall time of sending
every row from --concurrency threads, once the server is up. Both start cold: the first rows
prefill the label list before it can be reused (about 5 s of 35 here), so neither is warmed.
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib
from benchlib import SMALLFIRST, free_port, model_path, stop

DATA = benchlib.SHARED / "data" / "evals"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json")
    args = ap.parse_args()
    from openai import OpenAI

    model = model_path(args.model)
    labels = json.loads((DATA / "banking77.labels.json").read_text())
    rows = [json.loads(line) for line in (DATA / "banking77_test.jsonl").read_text().splitlines()]
    rows = random.Random(0).sample(rows, args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    set_path = tmp / "banking.jsonl"
    set_path.write_text("".join(json.dumps({"id": r["id"], "task": "classification", "input": r["input"],
                                            "expected": r["expected"]}) + "\n" for r in rows))
    config = tmp / "smallfirst.toml"
    config.write_text(f'[tiers.local]\nbackend = "embedded"\nmodel = "{model}"\nthreads = 2\nctx = 2048\n'
                      f'parallel = {args.concurrency}\n\n[tasks.banking]\nlabels = {json.dumps(labels)}\n')
    out = subprocess.run([str(SMALLFIRST), "eval", str(set_path), "--config", str(config), "--task", "banking",
                          "--tiers", "local", "--concurrency", str(args.concurrency), "--fresh", "--json"],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    report = json.loads(out.stdout)
    eval_rps = args.rows / report["seconds"]
    eval_quality = report["tiers"][0]["quality"]

    port = free_port()
    proc = benchlib.start([str(SMALLFIRST), "serve", "--config", str(config), "--port", str(port)], port)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)

    def ask(r):
        c = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": r["input"]}], temperature=0, max_tokens=512,
            extra_headers={"x-smallfirst-task": "banking"})
        return c.choices[0].message.content == r["expected"]

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            right = list(pool.map(ask, rows))
        http_s = time.perf_counter() - started
    finally:
        stop(proc)
    http_rps = args.rows / http_s
    result = {"rows": args.rows, "concurrency": args.concurrency, "model": args.model,
              "eval_seconds": report["seconds"], "eval_rows_per_s": eval_rps, "eval_quality": eval_quality,
              "http_seconds": http_s, "http_rows_per_s": http_rps, "http_quality": sum(right) / len(right),
              "ratio": eval_rps / http_rps}
    print(json.dumps(result, indent=1))
    print(f"\n| path | rows/s | quality |\n|---|---|---|\n| `smallfirst eval` (core) | {eval_rps:.2f} | "
          f"{eval_quality:.1%} |\n| `serve` + openai SDK | {http_rps:.2f} | {sum(right) / len(right):.1%} |\n"
          f"| ratio | {eval_rps / http_rps:.2f}× | |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
