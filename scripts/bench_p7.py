#!/usr/bin/env python3
"""P7: `smallfirst fit`'s predictions against what the engine measures.

For each shipped model at two context sizes (4 sequences each, as `serve` runs): the predicted
peak resident memory against the peak RSS of `smallfirst bench` (which loads the model with the
same settings, prefills a 256-token prompt and generates 128 tokens), and the predicted decode
and prompt speed against the measured ones (decode predicted at the bench's mean position,
256 + 64). Rounds alternate the models; medians are reported.

    .venv/bin/python scripts/bench_p7.py [--rounds 3] [--ctx 1024,4096] [MODEL ...]

`--n-prompt 3968 --ctx 4096` checks the other end of the decode range: 128 tokens generated
after a prompt that nearly fills the context.
"""

import argparse
import json
import statistics
import subprocess

from benchlib import SMALLFIRST, model_path

MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m",
          "qwen2.5-coder-1.5b-instruct"]
N_GEN = 128


def run_json(args):
    return json.loads(subprocess.run([str(SMALLFIRST), *args], check=True, capture_output=True, text=True).stdout)


def predict(path, ctx, n_prompt):
    r = run_json(["fit", path, "--ctx", str(ctx), "--json"])["models"][0]
    pos = n_prompt + N_GEN // 2
    sp = r["speed"]
    return {
        "rss": r["memory"]["total"],
        "rule": r["rule_of_thumb"],
        "decode": 1.0 / (sp["decode_fixed_s"] + sp["decode_per_position_s"] * pos),
        "prompt": sp["prompt_tokens_per_s"],
    }


def measure(path, ctx, reps, n_prompt):
    r = run_json(["bench", "-m", path, "--ctx", str(ctx), "-p", str(n_prompt), "-n", str(N_GEN), "-r", str(reps),
                  "--json"])
    runs = r["report"]["runs"]
    return {
        "rss": r["peak_rss_bytes"],
        "decode": statistics.median(x["decode_tokens_per_s"] for x in runs),
        "prompt": statistics.median(x["prompt_tokens_per_s"] for x in runs),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=MODELS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ctx", default="1024,4096")
    ap.add_argument("--n-prompt", type=int, default=256)
    args = ap.parse_args()
    ctxs = [int(c) for c in args.ctx.split(",")]
    paths = {m: model_path(m) for m in args.models}
    cases = [(m, c) for m in args.models for c in ctxs]
    predicted = {case: predict(paths[case[0]], case[1], args.n_prompt) for case in cases}
    measured = {case: [] for case in cases}
    for rnd in range(args.rounds):
        for case in cases:
            measured[case].append(measure(paths[case[0]], case[1], args.reps, args.n_prompt))
            print(f"round {rnd + 1}: {case[0]} ctx {case[1]}: {measured[case][-1]}", flush=True)
    mib = 1 << 20
    print()
    print("| model | ctx × seqs | RSS predicted | RSS measured | error | decode predicted | decode measured | error "
          "| prompt predicted | prompt measured | error | rule of thumb |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst_rss = worst_decode = 0.0
    for case in cases:
        p = predicted[case]
        m = {k: statistics.median(x[k] for x in measured[case]) for k in ("rss", "decode", "prompt")}
        err = {k: p[k] / m[k] - 1 for k in ("rss", "decode", "prompt")}
        worst_rss = max(worst_rss, abs(err["rss"]))
        worst_decode = max(worst_decode, abs(err["decode"]))
        print(f"| {case[0]} | {case[1]} × 4 | {p['rss'] / mib:.0f} MiB | {m['rss'] / mib:.0f} MiB | {err['rss']:+.1%} "
              f"| {p['decode']:.1f} | {m['decode']:.1f} | {err['decode']:+.1%} "
              f"| {p['prompt']:.0f} | {m['prompt']:.0f} | {err['prompt']:+.1%} "
              f"| {p['rule'][0] / 1e9:.1f}–{p['rule'][1] / 1e9:.1f} GB |")
    print()
    print(f"largest RSS error {worst_rss:.1%} (goal 5%), largest decode error {worst_decode:.1%} (goal 25%)")


if __name__ == "__main__":
    main()
