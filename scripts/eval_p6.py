#!/usr/bin/env python3
"""P6: routing quality against cost on labeled classification sets, for each confidence method.

usage: scripts/eval_p6.py [--rows 100] [--methods label,debiased,permuted,self_consistency]
                          [--samples 5] [--sets banking77,clinc150] [--json FILE] [SMALL [LARGE]]

Each sampled row (fixed seed) is classified by `model: "auto"` on a smallfirst whose embedded
tier is SMALL (default smollm2-135m-instruct), once per confidence method (named in the
request's `metadata.confidence`), then by label decoding on one whose embedded tier is LARGE
(default qwen2.5-coder-0.5b-instruct), each with the dataset's label set as a configured task
(the local answer is exactly one label). Per method: the small model's accuracy, the AUROC of
its confidence for "the answer is right", its expected calibration error (15 bins), and the
cascade's APGR (RouteLLM: the area under the performance gap recovered as the threshold sweeps
escalation from 0 to 1; random routing scores 0.5), and the time per request. The cascade at
threshold t answers with the small model's label when its confidence is >= t and escalates to
the large one otherwise, so its accuracy and escalation rate follow from the two runs.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

import benchlib
from benchlib import apgr, auroc, ece, free_port, model_path, stop

ROOT = Path(__file__).resolve().parents[1]
SMALLFIRST = ROOT / "target" / "release" / "smallfirst"
DATA = Path(os.environ.get("SMALLFIRST_SHARED", ROOT.parent / "shared")) / "data" / "evals"
SETS = {"banking77": "banking77_test.jsonl", "clinc150": "clinc150_test_plus_oos.jsonl"}
SYSTEM = "Classify the customer's message by its intent."
METHODS = {"label": "label_probability", "debiased": "debiased_label_probability",
           "permuted": "permuted_label_probability", "self_consistency": "self_consistency"}


def serve(model, tmp):
    config = tmp / f"{Path(model).stem}.toml"
    text = f'[tiers.local]\nbackend = "embedded"\nmodel = "{model}"\nthreads = 2\nctx = 2048\n'
    for name in SETS:
        labels = json.loads((DATA / f"{name}.labels.json").read_text())
        text += f"\n[tasks.{name}]\nlabels = {json.dumps(labels)}\nthreshold = 0.0\n"
    config.write_text(text)
    port = free_port()
    log = open(tmp / f"{Path(model).stem}.log", "wb")
    proc = benchlib.start([str(SMALLFIRST), "serve", "--config", str(config), "--port", str(port)], port, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


def classify(base, task, text, method, samples):
    body = {"model": "auto", "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]}
    if method != "label":
        body["metadata"] = {"confidence": method}
    if method == "self_consistency":
        # Sampled at the server's sampling temperature: greedy samples would all agree.
        del body["temperature"]
        body["metadata"]["samples"] = str(samples)
    start = time.perf_counter()
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"x-smallfirst-task": task}, timeout=300)
    ms = (time.perf_counter() - start) * 1000
    r.raise_for_status()
    v = r.json()
    label = v["smallfirst"]["label"]
    assert v["smallfirst"]["confidence"]["method"] == METHODS[method], v["smallfirst"]
    return {"label": label["label"], "p": label["probability"], "ms": ms}


def summarize(name, rows, small, large):
    """Per method: accuracy, AUROC, ECE, APGR and the threshold table."""
    n = len(rows)
    gold = [r["expected"].lower() for r in rows]
    l_ok = [large[i]["label"].lower() == gold[i] for i in range(n)]
    acc_l = sum(l_ok) / n
    out = {"set": name, "rows": n, "large": acc_l, "methods": {}}
    for method, answers in small.items():
        ok = [answers[i]["label"].lower() == gold[i] for i in range(n)]
        conf = [a["p"] for a in answers]
        acc_s = sum(ok) / n
        table = {}
        for t in (0.5, 0.7, 0.9):
            esc = [c < t for c in conf]
            e = sum(esc) / n
            a = sum(l_ok[i] if esc[i] else ok[i] for i in range(n)) / n
            table[t] = {"escalation": e, "accuracy": a, "random": (1 - e) * acc_s + e * acc_l}
        top = max(Counter(a["label"] for a in answers).values())
        out["methods"][method] = {
            "accuracy": acc_s, "auroc": auroc(conf, ok), "ece": ece(conf, ok), "apgr": apgr(conf, ok, l_ok),
            "top_label_share": top / n, "ms_median": statistics.median(a["ms"] for a in answers),
            "thresholds": table}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--methods", default="label,debiased,permuted,self_consistency")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--json")
    ap.add_argument("models", nargs="*", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    args = ap.parse_args()
    small_name, large_name = (args.models + ["qwen2.5-coder-0.5b-instruct"])[:2]
    methods = args.methods.split(",")
    sets = args.sets.split(",")
    samples = {}
    for name in sets:
        rows = [json.loads(line) for line in (DATA / SETS[name]).read_text().splitlines()]
        samples[name] = random.Random(0).sample(rows, min(args.rows, len(rows)))
    tmp = Path(tempfile.mkdtemp(prefix="eval-p6-"))
    answers = {}
    for model, model_methods in ((small_name, methods), (large_name, ["label"])):
        proc, base = serve(model_path(model), tmp)
        try:
            for name, rows in samples.items():
                for method in model_methods:
                    out = []
                    for i, row in enumerate(rows):
                        out.append(classify(base, name, row["input"], method, args.samples))
                        if (i + 1) % 25 == 0:
                            print(f"  {model} {name} {method} {i + 1}/{len(rows)}", file=sys.stderr)
                    answers[(model, name, method)] = out
        finally:
            stop(proc)
    results = [summarize(name, samples[name], {m: answers[(small_name, name, m)] for m in methods},
                         answers[(large_name, name, "label")]) for name in sets]
    print(f"| set | rows | method ({small_name}) | accuracy | most common label | AUROC | ECE | "
          f"APGR to {large_name} ({{large}}) | ms/request |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for m, v in r["methods"].items():
            print(f"| {r['set']} | {r['rows']} | {METHODS[m]} | {v['accuracy']:.1%} | {v['top_label_share']:.0%} | "
                  f"{v['auroc']:.3f} | {v['ece']:.3f} | {v['apgr']:.3f} ({r['large']:.1%}) | {v['ms_median']:.0f} |")
    print()
    print("| set | method | threshold | escalation rate | cascade accuracy | random routing at that rate |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for m, v in r["methods"].items():
            for t, x in v["thresholds"].items():
                print(f"| {r['set']} | {METHODS[m]} | {t} | {x['escalation']:.1%} | {x['accuracy']:.1%} | {x['random']:.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"results": results, "answers": {"|".join(k): a for k, a in answers.items()}}, indent=1))


if __name__ == "__main__":
    main()
