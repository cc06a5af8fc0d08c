#!/usr/bin/env python3
"""Task heads against what a user would assemble instead, same model, same run: llama.cpp's
`llama-server --embedding --pooling mean` plus scikit-learn's `LogisticRegression` for
accuracy and confidence, and `llama-server` answering with a grammar of the labels (prompt
cache on) for requests/s.

usage: scripts/bench_heads_reference.py [--model smollm2-135m-instruct] [--set banking77]
                                        [--train-rows 1000] [--test-rows 300] [--http-rows 100]
                                        [--llama-bin DIR] [--json FILE]

Rows as in scripts/bench_heads.py: the first --train-rows of the training file in the order
`smallfirst train` draws them (sha256 of the text), --test-rows sampled from the test file
(seed 0). The head: `smallfirst train` (embeddings cached from earlier runs are reused; the
reference's are computed here, so its texts/s is measured and the head's is not). The reference:
every text embedded through llama-server's `/v1/embeddings` (mean pooling, 32 texts a request),
then `make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))`. Requests/s, one at a
time over the first --http-rows test rows: smallfirst answering by the head; smallfirst by label
decoding (the labels listed in the system prompt, the answer constrained to one of them);
llama-server with the same system prompt and labels and a GBNF grammar that allows only the
labels, `cache_prompt` on.
"""

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import benchlib
from bench_heads import DATA, SETS, SYSTEM, read, run_http, serve
from benchlib import SMALLFIRST, auroc, ece, free_port, model_path, stop


def embed_all(base, texts):
    out = []
    for i in range(0, len(texts), 32):
        r = httpx.post(f"{base}/v1/embeddings", json={"input": texts[i:i + 32]}, timeout=600)
        r.raise_for_status()
        out.extend(d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"]))
    return out


def gbnf(labels):
    return "root ::= " + " | ".join(json.dumps(l) for l in labels)


def llama_server(binary, model, port, extra):
    return benchlib.start([str(binary), "-m", model, "--port", str(port), "--host", "127.0.0.1", "-t", "2",
                           "-c", "2048", "-np", "1", *extra], port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--set", default="banking77")
    ap.add_argument("--train-rows", type=int, default=1000)
    ap.add_argument("--test-rows", type=int, default=300)
    ap.add_argument("--http-rows", type=int, default=100)
    ap.add_argument("--llama-bin")
    ap.add_argument("--json")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    server_bin = benchlib.llama_bin(args.llama_bin) / "llama-server"
    model = model_path(args.model)
    train_file, test_file, labels_file = SETS[args.set]
    labels = json.loads((DATA / labels_file).read_text())
    train = sorted(read(DATA / train_file), key=lambda r: hashlib.sha256(r["input"].encode()).digest())
    train = train[: args.train_rows]
    test = random.Random(0).sample(read(DATA / test_file), args.test_rows)
    tmp = Path(tempfile.mkdtemp(prefix="bench-heads-ref-"))
    test_path, train_path = tmp / "test.jsonl", tmp / "train.jsonl"
    test_path.write_text("".join(json.dumps(r) + "\n" for r in test))
    train_path.write_text("".join(json.dumps(r) + "\n" for r in train))
    result = {"set": args.set, "model": args.model, "train_rows": len(train), "test_rows": len(test)}

    # The head.
    head_path, preds = tmp / "head.json", tmp / "predictions.jsonl"
    out = subprocess.run([str(SMALLFIRST), "train", args.set, "-m", model, "-t", "2", "--data", str(train_path),
                          "--test", str(test_path), "--predictions", str(preds), "--out", str(head_path), "--json"],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    p = read(preds)
    ok = [r["predicted"] == r["expected"] for r in p]
    conf = [r["probability"] for r in p]
    result["head"] = {"accuracy": sum(ok) / len(ok), "auroc": auroc(conf, ok), "ece": ece(conf, ok)}

    # llama-server embeddings + scikit-learn.
    port = free_port()
    proc = llama_server(server_bin, model, port, ["--embedding", "--pooling", "mean", "-b", "2048", "-ub", "2048"])
    try:
        started = time.perf_counter()
        x_train = embed_all(f"http://127.0.0.1:{port}", [r["input"] for r in train])
        embed_s = time.perf_counter() - started
        x_test = embed_all(f"http://127.0.0.1:{port}", [r["input"] for r in test])
    finally:
        stop(proc)
    started = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x_train, [r["expected"] for r in train])
    fit_s = time.perf_counter() - started
    proba = clf.predict_proba(x_test)
    pred = [clf.classes_[row.argmax()] for row in proba]
    ok = [a == r["expected"] for a, r in zip(pred, test)]
    conf = [float(row.max()) for row in proba]
    result["reference"] = {"accuracy": sum(ok) / len(ok), "auroc": auroc(conf, ok), "ece": ece(conf, ok),
                           "embed_texts_per_s": len(train) / embed_s, "fit_seconds": fit_s}

    # Requests/s, one at a time.
    http = test[: args.http_rows]
    tasks = {f"{args.set}_head": f'head = "{head_path}"\n', f"{args.set}_labels": f"labels = {json.dumps(labels)}\n"}
    proc, base = serve(model, tmp, tasks)
    try:
        run_http(base, f"{args.set}_head", http[:3], False)
        _, head_rps = run_http(base, f"{args.set}_head", http, False)
        run_http(base, f"{args.set}_labels", http[:3], True)
        _, labels_rps = run_http(base, f"{args.set}_labels", http, True)
    finally:
        stop(proc)
    port = free_port()
    proc = llama_server(server_bin, model, port, [])
    system = SYSTEM + "\n\nPossible labels:\n" + "\n".join(labels) + "\nAnswer with the label only."
    grammar = gbnf(labels)

    def ask(text):
        body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
                "temperature": 0, "max_tokens": 24, "grammar": grammar, "cache_prompt": True}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]

    try:
        for r in http[:3]:
            ask(r["input"])
        started = time.perf_counter()
        got = [ask(r["input"]) for r in http]
        llama_rps = len(http) / (time.perf_counter() - started)
    finally:
        stop(proc)
    result["http"] = {"rows": len(http), "head_rps": head_rps, "labels_rps": labels_rps, "llama_server_rps": llama_rps,
                      "llama_server_accuracy": sum(a == r["expected"] for a, r in zip(got, http)) / len(http),
                      "head_vs_llama_server": head_rps / llama_rps, "head_vs_labels": head_rps / labels_rps}
    print(json.dumps(result, indent=1))
    h, ref, x = result["head"], result["reference"], result["http"]
    print(f"\n| figure | smallfirst head | llama-server --embedding --pooling mean + LogisticRegression |")
    print("|---|---|---|")
    print(f"| accuracy, {len(test)} test rows | {h['accuracy']:.1%} | {ref['accuracy']:.1%} |")
    print(f"| confidence AUROC | {h['auroc']:.3f} | {ref['auroc']:.3f} |")
    print(f"| ECE | {h['ece']:.3f} | {ref['ece']:.3f} |")
    print(f"\n| requests/s ({x['rows']} rows, one at a time) | smallfirst head | smallfirst label decoding | "
          f"llama-server, grammar + prompt cache |")
    print("|---|---|---|---|")
    print(f"| {args.set} | {x['head_rps']:.2f} | {x['labels_rps']:.2f} | {x['llama_server_rps']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
