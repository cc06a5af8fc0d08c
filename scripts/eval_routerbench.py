#!/usr/bin/env python3
"""RouterBench: the embedded model first, GPT-4's recorded answers as the frontier, per
confidence method: how much of the gap to GPT-4 the cascade recovers, and what it saves.

usage: scripts/eval_routerbench.py [--rows 200] [--methods label,debiased,verifier]
                                   [--sets arc_challenge,winogrande] [--json FILE] [SMALL]

Per set, ROWS rows (fixed seed, rows with a GPT-4 record) are split into halves A and B. Every
row is asked of a smallfirst whose embedded tier is SMALL (default smollm2-135m-instruct), the
set's letters as the task's labels, once per method (`metadata.confidence`; the verifier is
cross-fitted: trained with `smallfirst train --verifier` on one half and asked on the other).
Per method: local accuracy, AUROC for "the local answer is right", ECE, and APGR against GPT-4
(RouteLLM's area under the cascade's performance gap recovered; random routing scores 0.5).
Then the live cascade: for the method with the best APGR on half A, the lowest threshold whose
cascade reaches 95% of GPT-4's accuracy on half A is set as the task's threshold, and half B is
sent to a smallfirst with `../shared/bench/replay-upstream.py` (GPT-4-1106's recorded answers)
as its frontier tier: the accuracy, escalation rate and recorded GPT-4 dollars, against sending
every row of half B to GPT-4.
"""

import argparse
import json
import os
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

DATA = benchlib.SHARED / "data" / "routerbench"
REPLAY = benchlib.SHARED / "bench" / "replay-upstream.py"
GPT4 = "gpt-4-1106-preview"
SETS = {"arc_challenge": ["A", "B", "C", "D"], "winogrande": ["A", "B"]}
METHODS = {"label": "label_probability", "debiased": "debiased_label_probability",
           "verifier": "verifier_probability"}


def rows_of(name, n):
    rows = [json.loads(line) for line in (DATA / f"routerbench_{name}_train.jsonl").read_text().splitlines()]
    rows = [r for r in rows if GPT4 in r["models"]]
    return random.Random(0).sample(rows, min(n, len(rows)))


def config(tmp, model, upstream, thresholds, verifiers):
    text = (f'[tiers.local]\nbackend = "embedded"\nmodel = "{model}"\nthreads = 2\nctx = 2048\n\n'
            f'[tiers.frontier]\nbackend = "openai"\nmodel = "{GPT4}"\nbase_url = "{upstream}/v1"\n'
            'api_key_env = "REPLAY_KEY"\ncontext_window = 128000\n')
    for name, labels in SETS.items():
        for task in (name, f"{name}_v"):
            text += f"\n[tasks.{task}]\nlabels = {json.dumps(labels)}\nthreshold = {thresholds.get(task, 0.0)}\n"
            if task in verifiers:
                text += f'verifier = "{verifiers[task]}"\n'
    path = tmp / "smallfirst.toml"
    path.write_text(text)
    return path


def serve(cfg, tmp):
    port = free_port()
    log = open(tmp / "serve.log", "ab")
    proc = benchlib.start([str(SMALLFIRST), "serve", "--config", str(cfg), "--port", str(port)], port, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


def ask(base, task, row, method=None):
    body = {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": row["prompt"]}]}
    if method in ("debiased",):
        body["metadata"] = {"confidence": method}
    start = time.perf_counter()
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"x-smallfirst-task": task}, timeout=600)
    ms = (time.perf_counter() - start) * 1000
    r.raise_for_status()
    v = r.json()
    info = v.get("smallfirst", {})
    text = (v["choices"][0]["message"]["content"] or "").strip()
    return {"answer": text[:1], "p": (info.get("confidence") or {}).get("value"),
            "method": (info.get("confidence") or {}).get("method"), "ms": ms,
            "tier": r.headers.get("x-smallfirst-tier"), "escalated": r.headers.get("x-smallfirst-escalated") == "true"}


def cascade_at(conf, ok_small, ok_large, t):
    esc = [c < t for c in conf]
    n = len(conf)
    return sum(esc) / n, sum(ok_large[i] if esc[i] else ok_small[i] for i in range(n)) / n


def threshold_for(conf, ok_small, ok_large, target):
    """The lowest threshold (least escalation) whose cascade accuracy reaches `target`."""
    for t in sorted(set(conf)) + [1.01]:
        if cascade_at(conf, ok_small, ok_large, t)[1] >= target:
            return t
    return 1.01


def train_verifier(cfg, tmp, task, rows):
    data = tmp / f"{task}.rows.jsonl"
    data.write_text("".join(json.dumps({"input": r["prompt"], "expected": r["expected"]}) + "\n" for r in rows))
    out = subprocess.run([str(SMALLFIRST), "train", task, "--verifier", "--config", str(cfg), "--data", str(data),
                          "--holdout", "0.2", "--out", str(tmp / f"{task}.verifier.json"), "--json"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"train --verifier {task} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--json")
    ap.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    args = ap.parse_args()
    methods, sets = args.methods.split(","), args.sets.split(",")
    model = model_path(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="eval-routerbench-"))
    port = free_port()
    replay = subprocess.Popen([sys.executable, str(REPLAY), str(port)] +
                              [str(DATA / f"routerbench_{s}_train.jsonl") for s in SETS],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["REPLAY_KEY"] = "unused"
    upstream = f"http://127.0.0.1:{port}"
    results = []
    try:
        for _ in range(50):
            try:
                httpx.get(f"{upstream}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        samples = {s: rows_of(s, args.rows) for s in sets}
        answers = {}
        cfg = config(tmp, model, upstream, {}, {})
        proc, base = serve(cfg, tmp)
        try:
            for s, rows in samples.items():
                for m in methods:
                    if m != "verifier":
                        answers[(s, m)] = [ask(base, s, r, m) for r in rows]
                        print(f"  {s} {m} done", file=sys.stderr)
        finally:
            stop(proc)
        trained = {}
        if "verifier" in methods:
            for s, rows in samples.items():
                halves = (rows[0::2], rows[1::2])
                out = [None] * len(rows)
                for fold, (fit_on, ask_on) in enumerate((halves, halves[::-1])):
                    task = f"{s}_v"
                    cfg = config(tmp, model, upstream, {}, {})
                    trained[(s, fold)] = train_verifier(cfg, tmp, task, fit_on)
                    cfg = config(tmp, model, upstream, {}, {task: str(tmp / f"{task}.verifier.json")})
                    proc, base = serve(cfg, tmp)
                    try:
                        got = [ask(base, task, r) for r in ask_on]
                    finally:
                        stop(proc)
                    for j, a in enumerate(got):
                        out[2 * j + (1 - fold)] = a
                answers[(s, "verifier")] = out
                print(f"  {s} verifier done", file=sys.stderr)
        for s, rows in samples.items():
            gold = [r["expected"] for r in rows]
            ok_l = [r["models"][GPT4]["score"] >= 1.0 for r in rows]
            acc_l = sum(ok_l) / len(rows)
            row = {"set": s, "rows": len(rows), "gpt4_accuracy": acc_l, "methods": {}}
            for m in methods:
                a = answers[(s, m)]
                ok = [x["answer"] == g for x, g in zip(a, gold)]
                conf = [x["p"] if x["p"] is not None else 0.0 for x in a]
                half_a = list(range(0, len(rows), 2))
                t = threshold_for([conf[i] for i in half_a], [ok[i] for i in half_a], [ok_l[i] for i in half_a],
                                  0.95 * sum(ok_l[i] for i in half_a) / len(half_a))
                row["methods"][m] = {
                    "accuracy": sum(ok) / len(ok), "auroc": auroc(conf, ok), "ece": ece(conf, ok),
                    "apgr": apgr(conf, ok, ok_l),
                    "apgr_half_a": apgr([conf[i] for i in half_a], [ok[i] for i in half_a], [ok_l[i] for i in half_a]),
                    "threshold_95": t, "ms_median": statistics.median(x["ms"] for x in a),
                    "method_seen": sorted({x["method"] for x in a if x["method"]})}
            results.append(row)
        # The live cascade, on half B, at the best method's threshold from half A.
        for row in results:
            s = row["set"]
            best = max(row["methods"], key=lambda m: row["methods"][m]["apgr_half_a"])
            t = row["methods"][best]["threshold_95"]
            half_b = samples[s][1::2]
            task = s if best != "verifier" else f"{s}_v"
            verifiers = {}
            if best == "verifier":
                # The verifier fitted on half A judges half B.
                cfg = config(tmp, model, upstream, {}, {})
                train_verifier(cfg, tmp, task, samples[s][0::2])
                verifiers = {task: str(tmp / f"{task}.verifier.json")}
            cfg = config(tmp, model, upstream, {task: min(t, 1.0)}, verifiers)
            proc, base = serve(cfg, tmp)
            try:
                live = [ask(base, task, r, best if best == "debiased" else None) for r in half_b]
            finally:
                stop(proc)
            ok = [x["answer"] == r["expected"] if not x["escalated"] else r["models"][GPT4]["score"] >= 1.0
                  for x, r in zip(live, half_b)]
            answered_ok = [x["answer"] == r["expected"] for x, r in zip(live, half_b)]
            cost = sum(r["models"][GPT4]["cost"] for x, r in zip(live, half_b) if x["escalated"])
            all_cost = sum(r["models"][GPT4]["cost"] for r in half_b)
            gpt4_b = sum(r["models"][GPT4]["score"] >= 1.0 for r in half_b) / len(half_b)
            row["live"] = {"method": best, "threshold": t, "rows": len(half_b),
                           "escalation": sum(x["escalated"] for x in live) / len(live),
                           "accuracy": sum(ok) / len(ok), "answers_match_recorded": sum(answered_ok) / len(ok),
                           "gpt4_accuracy": gpt4_b, "cost": cost, "all_gpt4_cost": all_cost,
                           "savings": 1 - cost / all_cost if all_cost else float("nan")}
    finally:
        replay.terminate()
        replay.wait()
    print(f"| set | rows | method ({args.model}) | local accuracy | AUROC | ECE | APGR to GPT-4 ({{gpt4}}) | ms/request |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for m, v in r["methods"].items():
            print(f"| {r['set']} | {r['rows']} | {METHODS[m]} | {v['accuracy']:.1%} | {v['auroc']:.3f} | {v['ece']:.3f} | "
                  f"{v['apgr']:.3f} ({r['gpt4_accuracy']:.1%}) | {v['ms_median']:.0f} |")
    print()
    print("| set | live cascade on half B | threshold (from half A) | escalation | accuracy | GPT-4 alone | "
          "GPT-4 $ | all-GPT-4 $ | saved |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        v = r["live"]
        print(f"| {r['set']} | {METHODS[v['method']]} | {v['threshold']:.3f} | {v['escalation']:.1%} | {v['accuracy']:.1%} | "
              f"{v['gpt4_accuracy']:.1%} | {v['cost']:.3f} | {v['all_gpt4_cost']:.3f} | {v['savings']:.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results,
                                               "trained": {f"{k[0]}|{k[1]}": v for k, v in trained.items()}}, indent=1))


if __name__ == "__main__":
    main()
