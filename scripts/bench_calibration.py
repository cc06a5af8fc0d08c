#!/usr/bin/env python3
"""The calibrated threshold's guarantee on real data: `smallfirst calibrate` on one half of a
set's rows, the realized error among kept answers on the other half against α, with the
escalation rate and the cost saved there.

usage: scripts/bench_calibration.py [--sets banking77,clinc150,arc,winogrande] [--rows 600]
                                    [--train-rows 1000] [--alphas 0.05,0.10] [--confidence 0.9]
                                    [--model smollm2-135m-instruct] [--json FILE] [--dir DIR]

- banking77, CLINC150: a head trained (`smallfirst train --max-rows`) on --train-rows of the
  training file (train's own hashed order; the head's labels are those its rows carry); --rows
  test rows sampled (seed 0) form the eval set, answered by the head. No frontier tier: the embedded tier costs nothing, so the cost saved against
  all-frontier is the share kept locally.
- arc, winogrande (RouterBench train splits): the first --rows rows, answered by label decoding
  over the letters on the embedded model, with GPT-4-1106's recorded answers as the frontier
  (`../shared/bench/replay-upstream.py`, priced at $10 / $30 per million input / output tokens,
  tokens estimated at 4 bytes each): the cascade's quality and cost against all-frontier.

Rows are split in half by their sha256 (calibrate's own split); the same eval results serve
every α (stored beside the set in a temporary folder, or in --dir, where a rerun with the same
rows reuses the heads and the stored answers).
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import SMALLFIRST, free_port, model_path

DATA = benchlib.SHARED / "data"
HEADS = {
    "banking77": ("evals/banking77_train.jsonl", "evals/banking77_test.jsonl"),
    "clinc150": ("evals/clinc150_train_plus_oos.jsonl", "evals/clinc150_test_plus_oos.jsonl"),
}
ROUTERBENCH = {
    "arc": ("routerbench/routerbench_arc_challenge_train.jsonl", ["A", "B", "C", "D"]),
    "winogrande": ("routerbench/routerbench_winogrande_train.jsonl", ["A", "B"]),
}
REPLAY = benchlib.SHARED / "bench" / "replay-upstream.py"


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run(cmd):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(map(str, cmd))}\n{out.stderr}")
    return out.stdout


def calibrate(config, task, set_path, alphas, confidence, frontier):
    out = []
    for alpha in alphas:
        r = json.loads(run([SMALLFIRST, "calibrate", task, "--set", set_path, "--config", config,
                            "--max-error", alpha, "--confidence", confidence, "--frontier", frontier, "--json"]))
        out.append(r)
    return out


def head_set(name, args, tmp, model):
    train_file, test_file = HEADS[name]
    test = random.Random(0).sample(read(DATA / test_file), args.rows)
    set_path = tmp / f"{name}.jsonl"
    set_path.write_text("".join(json.dumps({"id": r["id"], "task": "classification", "input": r["input"],
                                            "expected": r["expected"]}) + "\n" for r in test))
    config = tmp / f"{name}.toml"
    config.write_text(f'[tiers.local]\nbackend = "embedded"\nmodel = "{model}"\nthreads = 2\nctx = 2048\n\n'
                      f"[tasks.{name}]\n")
    if not (tmp / f"{name}.head.json").exists():
        run([SMALLFIRST, "train", name, "--config", config, "--data", DATA / train_file,
             "--max-rows", args.train_rows, "--json"])
    else:
        config.write_text(config.read_text() + f'head = "{name}.head.json"\n')
    return calibrate(config, name, set_path, args.alphas, args.confidence, "none")


def routerbench_set(name, args, tmp, model):
    file, letters = ROUTERBENCH[name]
    rows = read(DATA / file)[: args.rows]
    set_path = tmp / f"{name}.jsonl"
    set_path.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"], "labels": letters,
                                            "expected": r["expected"]}) + "\n" for r in rows))
    port = free_port()
    replay = subprocess.Popen([sys.executable, str(REPLAY), str(port), str(DATA / file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        benchlib.wait_http(f"http://127.0.0.1:{port}/v1/models")
        config = tmp / f"{name}.toml"
        config.write_text(f'[tiers.local]\nbackend = "embedded"\nmodel = "{model}"\nthreads = 2\nctx = 2048\n\n'
                          f'[tiers.frontier]\nbackend = "openai"\nmodel = "gpt-4-1106-preview"\n'
                          f'base_url = "http://127.0.0.1:{port}/v1"\ncontext_window = 128000\n'
                          f"price = {{ input = 10.0, output = 30.0 }}\n\n[tasks.{name}]\nlabels = {json.dumps(letters)}\n")
        return calibrate(config, name, set_path, args.alphas, args.confidence, "frontier")
    finally:
        replay.terminate()
        replay.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="banking77,clinc150,arc,winogrande")
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--train-rows", type=int, default=1000)
    ap.add_argument("--alphas", default="0.05,0.10")
    ap.add_argument("--confidence", default="0.9")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--json")
    ap.add_argument("--dir", help="keep sets, heads and eval results here; a rerun answers only what is missing")
    args = ap.parse_args()
    args.alphas = args.alphas.split(",")
    model = model_path(args.model)
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    tmp.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.sets.split(","):
        results[name] = head_set(name, args, tmp, model) if name in HEADS else routerbench_set(name, args, tmp, model)
    print("| set | α | threshold | calibration rows (kept, error) | held-out rows | held-out error among kept | "
          "escalated | cascade quality vs all-frontier | cost saved |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        for r in runs:
            c, h = r["calibration"], r["held_out"]
            t = "none" if r["threshold"] is None else f"{r['threshold']:.2f}"
            err = "—" if h["error_rate"] is None else f"{h['error_rate']:.1%}"
            cerr = "—" if c["error_rate"] is None else f"{c['error_rate']:.1%}"
            if h.get("frontier_cost"):
                quality = f"{h['cascade_quality']:.1%} vs {h['frontier_quality']:.1%}"
                saved = f"{1 - h['cascade_cost'] / h['frontier_cost']:.1%}"
            else:
                quality, saved = "—", f"{1 - h['escalation']:.1%} (kept share)"
            print(f"| {name} | {r['alpha']} | {t} | {c['rows']} ({c['kept']}, {cerr}) | {h['rows']} | {err} | "
                  f"{h['escalation']:.1%} | {quality} | {saved} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
