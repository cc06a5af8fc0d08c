#!/usr/bin/env python3
"""P6 baseline: routing quality against cost on labeled classification sets (BENCHMARKING.md).

usage: scripts/eval_p6.py [--rows 100] [--json FILE] [SMALL [LARGE]]

Each sampled row (fixed seed) is classified by `model: "auto"` on a smallfirst whose embedded
tier is SMALL (default smollm2-135m-instruct), then on one whose embedded tier is LARGE (default
qwen2.5-coder-0.5b-instruct), each with the dataset's label set as a configured task (the local
answer is exactly one label, with its probability). The cascade at threshold t answers with the
small model's label when its probability is >= t and escalates to the large one otherwise, so its
accuracy and escalation rate follow from the two runs; random routing at the same escalation
rate r scores (1 - r) * small + r * large on average. APGR (RouteLLM) is the area under the
performance-gap-recovered curve over escalation rates from 0 to 1, from the threshold sweep.
"""

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

import benchlib
from benchlib import free_port, model_path

ROOT = Path(__file__).resolve().parents[1]
SMALLFIRST = ROOT / "target" / "release" / "smallfirst"
DATA = Path(os.environ.get("SMALLFIRST_SHARED", ROOT.parent / "shared")) / "data" / "evals"
SETS = {"banking77": "banking77_test.jsonl", "clinc150": "clinc150_test_plus_oos.jsonl"}
SYSTEM = "Classify the customer's message by its intent."


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


def classify(base, task, text):
    body = {"model": "auto", "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"x-smallfirst-task": task}, timeout=300)
    r.raise_for_status()
    v = r.json()
    label = v["smallfirst"]["label"]
    decide_ms = float(r.headers["server-timing"].split("dur=")[1])
    return {"label": label["label"], "p": label["probability"], "margin": label["margin"], "decide_ms": decide_ms}


def summarize(name, rows, small, large):
    n = len(rows)
    gold = [r["expected"].lower() for r in rows]
    s_ok = [small[i]["label"].lower() == gold[i] for i in range(n)]
    l_ok = [large[i]["label"].lower() == gold[i] for i in range(n)]
    acc_s, acc_l = sum(s_ok) / n, sum(l_ok) / n
    points = []
    for t in [i / 100 for i in range(0, 101)]:
        esc = [small[i]["p"] < t for i in range(n)]
        acc = sum(l_ok[i] if esc[i] else s_ok[i] for i in range(n)) / n
        points.append((sum(esc) / n, acc, t))
    gap = acc_l - acc_s

    def pgr(acc):
        return (acc - acc_s) / gap if gap else float("nan")

    curve = sorted({(e, a) for e, a, _ in points} | {(0.0, acc_s), (1.0, acc_l)})
    apgr = 0.0
    for (e0, a0), (e1, a1) in zip(curve, curve[1:]):
        apgr += (e1 - e0) * (pgr(a0) + pgr(a1)) / 2
    table = {}
    for t in (0.5, 0.7, 0.9):
        e, a, _ = next(p for p in points if abs(p[2] - t) < 1e-9)
        rnd = (1 - e) * acc_s + e * acc_l
        table[t] = {"escalation": e, "accuracy": a, "random": rnd}
    oos = [i for i in range(n) if gold[i] == "oos"]
    confident_wrong_oos = {}
    for t in (0.5, 0.7, 0.9):
        kept = [i for i in oos if small[i]["p"] >= t and small[i]["label"].lower() != "oos"]
        confident_wrong_oos[t] = len(kept) / len(oos) if oos else None
    return {"set": name, "rows": n, "small": acc_s, "large": acc_l, "apgr": apgr, "thresholds": table,
            "oos_rows": len(oos), "oos_kept_wrong_by_small": confident_wrong_oos,
            "small_oos_wrong": (sum(1 for i in oos if small[i]["label"].lower() != "oos") / len(oos)) if oos else None,
            "decide_ms_median": statistics.median(x["decide_ms"] for x in small + large)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--json")
    ap.add_argument("models", nargs="*", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    args = ap.parse_args()
    small_name, large_name = (args.models + ["qwen2.5-coder-0.5b-instruct"])[:2]
    samples = {}
    for name, file in SETS.items():
        rows = [json.loads(line) for line in (DATA / file).read_text().splitlines()]
        samples[name] = random.Random(0).sample(rows, min(args.rows, len(rows)))
    tmp = Path(tempfile.mkdtemp(prefix="eval-p6-"))
    answers = {}
    for model in (small_name, large_name):
        proc, base = serve(model_path(model), tmp)
        try:
            for name, rows in samples.items():
                out = []
                for i, row in enumerate(rows):
                    out.append(classify(base, name, row["input"]))
                    if (i + 1) % 25 == 0:
                        print(f"  {model} {name} {i + 1}/{len(rows)}", file=sys.stderr)
                answers[(model, name)] = out
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    results = [summarize(name, samples[name], answers[(small_name, name)], answers[(large_name, name)])
               for name in SETS]
    print(f"| set | rows | local only ({small_name}) | upper only ({large_name}) | APGR (random = 0.5) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['set']} | {r['rows']} | {r['small']:.1%} | {r['large']:.1%} | {r['apgr']:.3f} |")
    print()
    print("| set | threshold | escalation rate | cascade accuracy | random routing at that rate |")
    print("|---|---|---|---|---|")
    for r in results:
        for t, v in r["thresholds"].items():
            print(f"| {r['set']} | {t} | {v['escalation']:.1%} | {v['accuracy']:.1%} | {v['random']:.1%} |")
    for r in results:
        if r["oos_rows"]:
            kept = ", ".join(f"{t}: {v:.1%}" for t, v in r["oos_kept_wrong_by_small"].items())
            print(f"\n{r['set']}: {r['oos_rows']} out-of-scope rows; the small model labels {r['small_oos_wrong']:.1%} "
                  f"of them in scope; kept locally with such a wrong label by the cascade at {kept}.")
    print(f"\nDecision time (features + policy, token count included), median over requests: "
          + ", ".join(f"{r['set']} {r['decide_ms_median'] * 1000:.0f} µs" for r in results))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "answers": {f"{m}|{n}": a for (m, n), a in answers.items()}}, indent=1))


if __name__ == "__main__":
    main()
