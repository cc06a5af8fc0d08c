"""Verifiers end to end: `smallfirst train --verifier` answers a slice of banking77 through the
embedded tier as the server would (label decoding over the task's labels), learns which answers
were right, writes the verifier beside the configuration and names it there; `smallfirst
serve` then judges the task's decoded answers by it (`verifier_probability` in the headers and
the body, through the official `openai` SDK). A verifier named as a head, and a head named as a
verifier, are refused at start."""

import json
import os
import subprocess

import pytest
from openai import OpenAI

from conftest import ROOT, model_path, spawn, stop

DATA = ROOT / "tests" / "data"


def rows(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


LABELS = sorted({r["expected"] for r in rows("banking77_slice_train.jsonl")})


@pytest.fixture(scope="module")
def trained(binary, tmp_path_factory):
    d = tmp_path_factory.mktemp("verifier")
    config = d / "smallfirst.toml"
    config.write_text(f"""[tiers.local]
backend = "embedded"
model = "{model_path()}"
threads = 2
ctx = 1024

[tasks.banking]
labels = {json.dumps(LABELS)}
threshold = 0.0
""")
    env = {**os.environ, "XDG_CACHE_HOME": str(d / "cache")}
    out = subprocess.run(
        [str(binary), "train", "banking", "--verifier", "--config", str(config),
         "--data", str(DATA / "banking77_slice_train.jsonl"), "--holdout", "0.25",
         "--test", str(DATA / "banking77_slice_test.jsonl"), "--predictions", str(d / "predictions.jsonl"), "--json"],
        capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr
    return d, config, json.loads(out.stdout)


def test_train_answers_every_row_and_names_the_verifier(trained):
    d, config, report = trained
    assert report["rows"] == 200 and report["method"] == "label_probability"
    assert 0 < report["local_accuracy"] < 1
    assert 0 <= report["holdout_ece"] <= 1 and report["temperature"] > 0
    assert 'verifier = "banking.verifier.json"' in config.read_text()
    v = json.loads((d / "banking.verifier.json").read_text())
    assert v["labels"] == ["wrong", "right"] and v["features"][0] == "confidence"
    predictions = [json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == report["test"]["rows"] > 0
    for p in predictions:
        assert p["answer"] in LABELS and p["right"] == (p["answer"] == p["expected"])
        assert 0 < p["verifier"] < 1
    assert len({round(p["verifier"], 6) for p in predictions}) > 1, "the verifier reads nothing"


@pytest.fixture(scope="module")
def served(binary, trained):
    d, config, _ = trained
    proc, base = spawn(binary, ["--config", str(config)], d)
    yield OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    stop(proc, d)


def test_the_task_is_judged_by_its_verifier(served, trained):
    d, _, _ = trained
    predicted = {p["input"]: p for p in map(json.loads, (d / "predictions.jsonl").read_text().splitlines())}
    for r in rows("banking77_slice_test.jsonl")[:6]:
        raw = served.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": r["input"]}], temperature=0,
            extra_headers={"x-smallfirst-task": "banking"})
        value, method = raw.headers["x-smallfirst-confidence"].split("; ")
        assert method == "verifier_probability" and raw.headers["x-smallfirst-tier"] == "local"
        c = raw.parse()
        answer = c.choices[0].message.content
        assert answer in LABELS
        info = c.model_extra["smallfirst"]
        assert info["confidence"]["method"] == "verifier_probability"
        assert info["label"]["label"] == answer
        # What train measured is what the server applies (greedy, the same prompt).
        p = predicted[r["input"]]
        if p["answer"] == answer:
            assert float(value) == pytest.approx(p["verifier"], abs=0.05)


def test_labels_in_the_request_are_judged_by_the_decode_not_the_verifier(served):
    raw = served.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Where is my new card?"}], temperature=0,
        max_tokens=16, extra_body={"metadata": {"task": "banking", "labels": ["card_arrival", "exchange_rate"]}})
    assert raw.headers["x-smallfirst-confidence"].endswith("; label_probability")
    assert raw.parse().choices[0].message.content in ["card_arrival", "exchange_rate"]


@pytest.mark.parametrize("key,other", [("head", "verifier"), ("verifier", "head")])
def test_a_file_of_the_other_kind_is_refused_at_start(binary, trained, tmp_path, key, other):
    d, config, _ = trained
    if key == "head":
        (tmp_path / "f.json").write_text((d / "banking.verifier.json").read_text())
    else:
        # A classification head: the verifier with its features dropped reads as one.
        v = json.loads((d / "banking.verifier.json").read_text())
        del v["features"]
        (tmp_path / "f.json").write_text(json.dumps(v))
    text = config.read_text().replace('verifier = "banking.verifier.json"', f'{key} = "f.json"')
    (tmp_path / "smallfirst.toml").write_text(text)
    out = subprocess.run([str(binary), "serve", "--config", str(tmp_path / "smallfirst.toml"), "--port", "0"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XDG_CACHE_HOME": str(d / "cache")})
    assert out.returncode != 0
    assert f"tasks.banking.{key}" in out.stderr and f"`{other} = " in out.stderr, out.stderr


def test_a_verifier_needs_the_task_config(binary, tmp_path):
    out = subprocess.run([str(binary), "train", "t", "--verifier", "--data", str(DATA / "banking77_slice_train.jsonl"),
                          "--model", model_path()], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--verifier needs --config" in out.stderr, out.stderr
