#!/usr/bin/env python3
"""Task heads against label decoding: accuracy, the confidence's AUROC and ECE, the cascade's
APGR, requests/s through HTTP, and training time.

usage: scripts/bench_heads.py [--model smollm2-135m-instruct] [--large qwen2.5-coder-0.5b-instruct]
                              [--sets banking77,clinc150] [--train-rows 1000] [--test-rows 300]
                              [--http-rows 100] [--json FILE]

Per set: `smallfirst train` on the first --train-rows of the set's training file in hashed
order, tested on --test-rows sampled from its test file (seed 0); then one `smallfirst serve`
with two tasks on the same model, one answered by the head and one by label decoding (the
labels listed in the prompt, the answer constrained to one of them), both sent the first
--http-rows of the test sample one at a time; the larger model answers the same rows by label
decoding, as the tier a cascade escalates to. APGR is the area under the performance gap
recovered over escalation rates (RouteLLM), from a sweep of the threshold on each confidence.
CLINC150's out-of-scope rows (`oos`) count as handled when the head says `oos` or its
confidence is below the threshold; the threshold is the lowest one that keeps the in-scope
error (in-scope rows kept locally with a wrong label, over all in-scope rows) at or under 5%.
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import benchlib
from benchlib import SMALLFIRST, apgr, auroc, ece, free_port, model_path, stop

DATA = benchlib.SHARED / "data" / "evals"
SETS = {
    "banking77": ("banking77_train.jsonl", "banking77_test.jsonl", "banking77.labels.json"),
    "clinc150": ("clinc150_train_plus_oos.jsonl", "clinc150_test_plus_oos.jsonl", "clinc150.labels.json"),
}
SYSTEM = "Classify the customer's message by its intent."


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def serve(model, tmp, tasks):
    config = tmp / f"serve-{Path(model).stem}.toml"
    text = f'[tiers.local]\nbackend = "embedded"\nmodel = "{model}"\nthreads = 2\nctx = 2048\nparallel = 1\n'
    for name, body in tasks.items():
        text += f"\n[tasks.{name}]\n{body}threshold = 0.0\n"
    config.write_text(text)
    port = free_port()
    log = open(tmp / f"serve-{Path(model).stem}.log", "wb")
    proc = benchlib.start([str(SMALLFIRST), "serve", "--config", str(config), "--port", str(port)], port, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


def ask(base, task, text, system):
    messages = [{"role": "user", "content": text}]
    if system:
        messages.insert(0, {"role": "system", "content": SYSTEM})
    body = {"model": "auto", "temperature": 0, "max_tokens": 24, "messages": messages}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"x-smallfirst-task": task}, timeout=300)
    r.raise_for_status()
    label = r.json()["smallfirst"]["label"]
    return label["label"], label["probability"]


def run_http(base, task, rows, system):
    out, started = [], time.perf_counter()
    for r in rows:
        out.append(ask(base, task, r["input"], system))
    return out, len(rows) / (time.perf_counter() - started)


def bench_set(name, args, small, large, tmp):
    train_file, test_file, labels_file = SETS[name]
    labels = json.loads((DATA / labels_file).read_text())
    test = random.Random(0).sample(read(DATA / test_file), args.test_rows)
    test_path = tmp / f"{name}-test.jsonl"
    test_path.write_text("".join(json.dumps(r) + "\n" for r in test))
    head_path, preds = tmp / f"{name}.head.json", tmp / f"{name}-predictions.jsonl"
    started = time.perf_counter()
    out = subprocess.run([str(SMALLFIRST), "train", name, "-m", small, "-t", "2", "--data", str(DATA / train_file),
                          "--max-rows", str(args.train_rows), "--test", str(test_path), "--predictions", str(preds),
                          "--out", str(head_path), "--json", *(["--no-cache"] if args.no_cache else [])],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    train_s = time.perf_counter() - started
    report = json.loads(out.stdout)
    p = read(preds)
    conf = [r["probability"] for r in p]
    ok = [r["predicted"] == r["expected"] for r in p]
    result = {"set": name, "train_rows": report["rows"] + report["holdout_rows"], "test_rows": len(p),
              "train_seconds": train_s, "embed_seconds": report["embed_seconds"], "fit_seconds": report["fit_seconds"],
              "head": {"accuracy": sum(ok) / len(ok), "auroc": auroc(conf, ok), "ece": ece(conf, ok),
                       "temperature": report["temperature"]}}
    gold = [r["expected"] for r in p]
    if "oos" in gold:
        ins = [i for i, g in enumerate(gold) if g != "oos"]
        oos = [i for i, g in enumerate(gold) if g == "oos"]
        best = None
        for t in [i / 1000 for i in range(0, 1001)]:
            wrong = sum(1 for i in ins if conf[i] >= t and p[i]["predicted"] != gold[i]) / len(ins)
            if wrong <= 0.05:
                recall = sum(1 for i in oos if conf[i] < t or p[i]["predicted"] == "oos") / len(oos)
                best = (t, wrong, recall)
                break
        result["clinc"] = {"in_scope_accuracy": sum(ok[i] for i in ins) / len(ins), "oos_rows": len(oos),
                           "threshold": best and best[0], "in_scope_error": best and best[1],
                           "oos_recall": best and best[2]}
    http = test[: args.http_rows]
    tasks = {f"{name}_head": f'head = "{head_path}"\n', f"{name}_labels": f"labels = {json.dumps(labels)}\n"}
    proc, base = serve(small, tmp, tasks)
    try:
        run_http(base, f"{name}_head", http[:3], False)
        by_head, head_rps = run_http(base, f"{name}_head", http, False)
        run_http(base, f"{name}_labels", http[:3], True)
        by_labels, labels_rps = run_http(base, f"{name}_labels", http, True)
    finally:
        stop(proc)
    proc, base = serve(large, tmp, {f"{name}_labels": f"labels = {json.dumps(labels)}\n"})
    try:
        by_large, _ = run_http(base, f"{name}_labels", http, True)
    finally:
        stop(proc)
    g = [r["expected"] for r in http]
    ok_head = [a == b for (a, _), b in zip(by_head, g)]
    ok_lab = [a == b for (a, _), b in zip(by_labels, g)]
    ok_large = [a == b for (a, _), b in zip(by_large, g)]
    result["http"] = {
        "rows": len(http), "head_rps": head_rps, "labels_rps": labels_rps, "speedup": head_rps / labels_rps,
        "head": {"accuracy": sum(ok_head) / len(g), "auroc": auroc([c for _, c in by_head], ok_head),
                 "apgr": apgr([c for _, c in by_head], ok_head, ok_large)},
        "labels": {"accuracy": sum(ok_lab) / len(g), "auroc": auroc([c for _, c in by_labels], ok_lab),
                   "apgr": apgr([c for _, c in by_labels], ok_lab, ok_large)},
        "large": {"accuracy": sum(ok_large) / len(g)},
    }
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--large", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--sets", default="banking77,clinc150")
    ap.add_argument("--train-rows", type=int, default=1000)
    ap.add_argument("--test-rows", type=int, default=300)
    ap.add_argument("--http-rows", type=int, default=100)
    ap.add_argument("--no-cache", action="store_true", help="embed everything again (training time from cold)")
    ap.add_argument("--json")
    args = ap.parse_args()
    small, large = model_path(args.model), model_path(args.large)
    tmp = Path(tempfile.mkdtemp(prefix="bench-heads-"))
    results = []
    for name in args.sets.split(","):
        results.append(bench_set(name, args, small, large, tmp))
        print(json.dumps(results[-1]), file=sys.stderr)
    print("| set | head acc (test) | AUROC | ECE | train rows | train s (embed + fit) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        h = r["head"]
        print(f"| {r['set']} | {h['accuracy']:.1%} ({r['test_rows']}) | {h['auroc']:.3f} | {h['ece']:.3f} | "
              f"{r['train_rows']} | {r['train_seconds']:.0f} ({r['embed_seconds']:.0f} + {r['fit_seconds']:.0f}) |")
    print()
    print(f"| set | rows | method | accuracy | AUROC | APGR (to {args.large}) | req/s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        x = r["http"]
        for method, key in (("head", "head"), ("label decoding", "labels")):
            m = x[key]
            print(f"| {r['set']} | {x['rows']} | {method} | {m['accuracy']:.1%} | {m['auroc']:.3f} | "
                  f"{m['apgr']:.3f} | {x[key + '_rps']:.2f} |")
        print(f"| {r['set']} | {x['rows']} | {args.large} label decoding | {x['large']['accuracy']:.1%} | — | — | — |")
    for r in results:
        if "clinc" in r:
            c = r["clinc"]
            print(f"\n{r['set']}: in-scope accuracy {c['in_scope_accuracy']:.1%}; {c['oos_rows']} oos rows; at threshold "
                  f"{c['threshold']} (in-scope error {c['in_scope_error']:.1%}) oos recall {c['oos_recall']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
