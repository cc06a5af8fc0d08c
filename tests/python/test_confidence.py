"""Confidence methods end to end, through the official `openai` SDK: a task configured for
debiased label confidence answers from the label distribution divided by the model's
content-free prior; a request may name its own method in `metadata.confidence` (permuted
label order, self-consistency); every method names itself in `x-smallfirst-confidence` and
the `smallfirst` body field; a method that does not exist is refused."""

import json
from collections import Counter

import openai
import pytest
from openai import OpenAI

from conftest import ROOT, model_path, spawn_with_config, stop

TEST = [json.loads(line) for line in (ROOT / "tests" / "data" / "banking77_slice_test.jsonl").read_text().splitlines()
        if line.strip()]
LABELS = sorted({r["expected"] for r in TEST})
SYSTEM = "Classify the customer's message by its intent."


@pytest.fixture(scope="module")
def served(binary, tmp_path_factory):
    d = tmp_path_factory.mktemp("confidence")
    proc, base = spawn_with_config(binary, d, f"""
[tiers.local]
backend = "embedded"
model = "{model_path()}"
threads = 2
ctx = 1024

[tasks.banking]
labels = {json.dumps(LABELS)}
confidence = "debiased"
threshold = 0.0
""")
    yield OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    stop(proc, d)


def ask(client, text, **metadata):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", temperature=0, max_tokens=24,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        extra_headers={"x-smallfirst-task": "banking"}, metadata=metadata or None)
    value, method = raw.headers["x-smallfirst-confidence"].split("; ")
    c = raw.parse()
    info = c.model_extra["smallfirst"]
    assert info["confidence"] == {"value": pytest.approx(float(value), abs=1e-3), "method": method}
    return c.choices[0].message.content, float(value), method, info, c


def test_the_task_answers_by_debiased_labels_and_spreads_off_the_first(served):
    debiased, raw = [], []
    for r in TEST[:40]:
        answer, p, method, info, c = ask(served, r["input"])
        assert method == "debiased_label_probability" and answer in LABELS
        assert info["label"]["label"] == answer and info["label"]["probability"] == pytest.approx(p, abs=1e-3)
        # Read in one pass: nothing decoded.
        assert c.usage.completion_tokens == 0 and c.usage.prompt_tokens > 0
        debiased.append(answer == r["expected"])
        answer, _, method, _, _ = ask(served, r["input"], confidence="label")
        assert method == "label_probability"
        raw.append(answer)
    # The raw decode leans on a few labels; the corrected distribution does not.
    top_raw = Counter(raw).most_common(1)[0][1]
    assert sum(debiased) >= sum(a == r["expected"] for a, r in zip(raw, TEST)), (sum(debiased), raw)
    assert sum(debiased) / len(debiased) > 1 / len(LABELS), sum(debiased)
    print(f"debiased right {sum(debiased)}/40; raw top label share {top_raw}/40")


def test_a_request_names_its_own_method(served):
    text = TEST[0]["input"]
    answer, p, method, _, _ = ask(served, text, confidence="permuted")
    assert method == "permuted_label_probability" and answer in LABELS and 0 < p <= 1
    # Greedy samples all agree with each other.
    answer, p, method, info, c = ask(served, text, confidence="self_consistency", samples="3")
    assert (method, p) == ("self_consistency", 1.0) and answer in LABELS
    assert info["label"]["label"] == answer
    # Every sample was decoded and is counted.
    _, _, _, _, one = ask(served, text, confidence="label")
    assert c.usage.completion_tokens >= 3 * max(1, min(one.usage.completion_tokens, 1))


def test_an_unknown_method_is_refused(served):
    with pytest.raises(openai.BadRequestError) as e:
        ask(served, "hi", confidence="vibes")
    err = e.value.body
    assert err["param"] == "metadata.confidence" and "vibes" in err["message"]
    with pytest.raises(openai.BadRequestError):
        ask(served, "hi", confidence="self_consistency", samples="99")
