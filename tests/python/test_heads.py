"""Task heads end to end: `smallfirst train` on a slice of banking77 writes a head beside the
configuration and names it there; `smallfirst serve` answers the task from the head (no
decoding), its calibrated probability in the headers and the body, through the official
`openai` SDK; a head trained on another model is refused at start."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from openai import OpenAI

from conftest import ROOT, model_path, spawn, stop

DATA = ROOT / "tests" / "data"


def rows(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(binary, tmp_path_factory):
    d = tmp_path_factory.mktemp("heads")
    config = d / "smallfirst.toml"
    config.write_text(f"""# a comment train keeps
[tiers.local]
backend = "embedded"
model = "{model_path()}"
threads = 2
ctx = 512

[tasks.banking]
threshold = 0.0
""")
    env = {**os.environ, "XDG_CACHE_HOME": str(d / "cache")}
    out = subprocess.run(
        [str(binary), "train", "banking", "--config", str(config), "--data", str(DATA / "banking77_slice_train.jsonl"),
         "--holdout", "0.2", "--json"],
        capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    return d, config, json.loads(out.stdout)


def test_train_reports_and_names_the_head_in_the_config(trained):
    d, config, report = trained
    assert report["labels"] == 8 and report["rows"] + report["holdout_rows"] == 200
    assert 0 < report["temperature"] and 0 <= report["holdout_ece"] <= 1
    assert report["holdout_accuracy"] > 0.3
    text = config.read_text()
    assert text.startswith("# a comment train keeps") and 'head = "banking.head.json"' in text
    head = json.loads((d / "banking.head.json").read_text())
    assert head["format"] == "smallfirst-head/1" and len(head["model"]["sha256"]) == 64


@pytest.fixture(scope="module")
def served(binary, trained):
    d, config, _ = trained
    proc, base = spawn(binary, ["--config", str(config)], d)
    yield OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    stop(proc, d)


def test_the_task_is_answered_by_its_head_with_its_calibrated_probability(served):
    test = rows("banking77_slice_test.jsonl")
    labels = sorted({r["expected"] for r in test})
    right = 0
    for r in test:
        raw = served.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": r["input"]}],
            extra_headers={"x-smallfirst-task": "banking"})
        h = raw.headers
        value, method = h["x-smallfirst-confidence"].split("; ")
        assert method == "head_probability" and h["x-smallfirst-tier"] == "local"
        c = raw.parse()
        answer = c.choices[0].message.content
        assert answer in labels and c.choices[0].finish_reason == "stop"
        info = c.model_extra["smallfirst"]
        assert info["confidence"] == {"value": pytest.approx(float(value), abs=1e-3), "method": "head_probability"}
        assert info["label"]["label"] == answer and 0 < info["label"]["probability"] <= 1
        assert info["label"]["margin"] is not None
        # One prefill, no decoding.
        assert c.usage.completion_tokens == 0 and c.usage.prompt_tokens > 0
        right += answer == r["expected"]
    assert right / len(test) >= 0.5, f"{right}/{len(test)}"


def test_labels_in_the_request_are_decoded_rather_than_read_from_the_head(served):
    labels = ["card_arrival", "exchange_rate"]
    raw = served.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Where is my new card?"}], temperature=0,
        max_tokens=16, extra_body={"metadata": {"task": "banking", "labels": labels}})
    assert raw.headers["x-smallfirst-confidence"].endswith("label_probability")
    assert raw.parse().choices[0].message.content in labels


def test_a_head_trained_on_another_model_is_refused_at_start(binary, trained, tmp_path):
    d, config, _ = trained
    head = json.loads((d / "banking.head.json").read_text())
    head["model"]["sha256"] = "0" * 64
    (tmp_path / "banking.head.json").write_text(json.dumps(head))
    (tmp_path / "smallfirst.toml").write_text(config.read_text())
    out = subprocess.run([str(binary), "serve", "--config", str(tmp_path / "smallfirst.toml"), "--port", "0"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XDG_CACHE_HOME": str(d / "cache")})
    assert out.returncode != 0
    assert "was trained on" in out.stderr and "smallfirst train banking" in out.stderr, out.stderr


def test_train_refuses_bad_input_with_a_hint(binary, tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"input": "hi", "expected": "a"}\nnot json\n')
    out = subprocess.run([str(binary), "train", "t", "--data", str(bad), "--model", model_path()],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "rows.jsonl:2: not JSON" in out.stderr, out.stderr
    out = subprocess.run([str(binary), "train", "t", "--data", str(bad), "--wrapper", "no placeholder"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "{text}" in out.stderr, out.stderr
    # A configured label with no row is refused before any embedding, naming the label.
    rows = tmp_path / "two.jsonl"
    rows.write_text('{"input": "hi", "expected": "a"}\n{"input": "yo", "expected": "b"}\n')
    config = tmp_path / "labels.toml"
    config.write_text(f'[tiers.local]\nbackend = "embedded"\nmodel = "{model_path()}"\n\n'
                      '[tasks.t]\nlabels = ["a", "b", "c"]\n')
    out = subprocess.run([str(binary), "train", "t", "--data", str(rows), "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "label `c`" in out.stderr and "--max-rows" in out.stderr, out.stderr
