#!/usr/bin/env python3
"""Verifiers: does a task's verifier tell the local answer's right from wrong better than the
answer's own confidence?

usage: scripts/bench_verifier.py [--train-rows 1000] [--rows 100] [--sets banking77,clinc150]
                                 [--json FILE] [SMALL [LARGE]]

Per set: `smallfirst train SET --verifier` on the first TRAIN_ROWS rows of the set's train
split (in the order `train` draws them) with SMALL as the embedded tier (label decoding over the
set's labels); then ROWS test rows (fixed seed) are asked of a server with two tasks of the same
labels, one with the verifier and one without, and of LARGE (label decoding) for the cascade.
Reported per confidence: the small model's accuracy, AUROC for "the answer is right", ECE,
APGR to LARGE, and the median time per request through HTTP.
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import benchlib
from benchlib import SMALLFIRST, apgr, auroc, ece, free_port, model_path, stop

DATA = benchlib.SHARED / "data" / "evals"
SETS = {"banking77": ("banking77_train.jsonl", "banking77_test.jsonl"),
        "clinc150": ("clinc150_train_plus_oos.jsonl", "clinc150_test_plus_oos.jsonl")}


def config(model, tmp, sets):
    path = tmp / "smallfirst.toml"
    text = f'[tiers.local]\nbackend = "embedded"\nmodel = "{model}"\nthreads = 2\nctx = 2048\n'
    for name in sets:
        labels = json.dumps(json.loads((DATA / f"{name}.labels.json").read_text()))
        text += f"\n[tasks.{name}]\nlabels = {labels}\nthreshold = 0.0\n"
        text += f"\n[tasks.{name}_plain]\nlabels = {labels}\nthreshold = 0.0\n"
    path.write_text(text)
    return path


def serve(cfg, tmp, tag):
    port = free_port()
    log = open(tmp / f"{tag}.log", "wb")
    proc = benchlib.start([str(SMALLFIRST), "serve", "--config", str(cfg), "--port", str(port)], port, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


def ask(base, task, text):
    body = {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    start = time.perf_counter()
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"x-smallfirst-task": task}, timeout=300)
    ms = (time.perf_counter() - start) * 1000
    r.raise_for_status()
    v = r.json()["smallfirst"]
    return {"label": v["label"]["label"], "p": v["confidence"]["value"], "method": v["confidence"]["method"],
            "ms": ms}


def figures(answers, gold, large_ok):
    ok = [a["label"].lower() == g for a, g in zip(answers, gold)]
    conf = [a["p"] for a in answers]
    return {"accuracy": sum(ok) / len(ok), "auroc": auroc(conf, ok), "ece": ece(conf, ok),
            "apgr": apgr(conf, ok, large_ok), "ms_median": statistics.median(a["ms"] for a in answers),
            "method": answers[0]["method"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-rows", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--json")
    ap.add_argument("models", nargs="*", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    args = ap.parse_args()
    small, large = (args.models + ["qwen2.5-coder-0.5b-instruct"])[:2]
    sets = args.sets.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench-verifier-"))
    cfg = config(model_path(small), tmp, sets)
    trained = {}
    for name in sets:
        start = time.perf_counter()
        out = subprocess.run([str(SMALLFIRST), "train", name, "--verifier", "--config", str(cfg),
                              "--data", str(DATA / SETS[name][0]), "--max-rows", str(args.train_rows), "--json"],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"train --verifier {name} failed:\n{out.stderr}")
        trained[name] = {**json.loads(out.stdout), "wall_seconds": time.perf_counter() - start}
        print(f"  trained {name}: {trained[name]}", file=sys.stderr)
    samples = {}
    for name in sets:
        rows = [json.loads(line) for line in (DATA / SETS[name][1]).read_text().splitlines()]
        samples[name] = random.Random(0).sample(rows, min(args.rows, len(rows)))
    answers = {}
    proc, base = serve(cfg, tmp, "small")
    try:
        for name, rows in samples.items():
            answers[(name, "plain")] = [ask(base, f"{name}_plain", r["input"]) for r in rows]
            answers[(name, "verifier")] = [ask(base, name, r["input"]) for r in rows]
            print(f"  asked {name}", file=sys.stderr)
    finally:
        stop(proc)
    (tmp / "large").mkdir()
    large_cfg = config(model_path(large), tmp / "large", sets)
    proc, base = serve(large_cfg, tmp / "large", "large")
    try:
        for name, rows in samples.items():
            answers[(name, "large")] = [ask(base, f"{name}_plain", r["input"]) for r in rows]
    finally:
        stop(proc)
    results = []
    for name in sets:
        gold = [r["expected"].lower() for r in samples[name]]
        large_ok = [a["label"].lower() == g for a, g in zip(answers[(name, "large")], gold)]
        row = {"set": name, "rows": len(gold), "train": trained[name],
               "large_accuracy": sum(large_ok) / len(large_ok)}
        for kind in ("plain", "verifier"):
            row[kind] = figures(answers[(name, kind)], gold, large_ok)
        results.append(row)
    print(f"| set | train rows (local right) | confidence ({small}) | accuracy | AUROC | ECE | "
          f"APGR to {large} | ms/request |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        t = r["train"]
        for kind in ("plain", "verifier"):
            v = r[kind]
            print(f"| {r['set']} | {t['rows']} ({t['local_accuracy']:.1%}) | {v['method']} | {v['accuracy']:.1%} | "
                  f"{v['auroc']:.3f} | {v['ece']:.3f} | {v['apgr']:.3f} ({r['large_accuracy']:.1%}) | "
                  f"{v['ms_median']:.0f} |")
    print()
    for r in results:
        t = r["train"]
        print(f"{r['set']}: train --verifier {t['rows']} rows in {t['wall_seconds']:.0f} s "
              f"(answering {t['answer_seconds']:.0f} s); held-out ECE {t['holdout_ece']:.3f} "
              f"against the answers' own {t['holdout_ece_own']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"results": results, "answers": {"|".join(k): a for k, a in answers.items()}}, indent=1))


if __name__ == "__main__":
    main()
