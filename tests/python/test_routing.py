"""Routing end to end with real parts: `model: "auto"` through a router whose local tier is the
embedded SmolLM2-135M and whose `frontier` is a second `smallfirst serve` with Qwen2.5-0.5B,
reached through a recording loopback proxy (fault_upstream.py) so the tests can see exactly
what the frontier received. The official `openai` SDK is the client."""

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import model_path, spawn, stop
from fault_upstream import Upstream
from test_gateway import upstream_model_path

LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "refund_not_showing_up"]
QUERY = [{"role": "user", "content": "I ordered a new card two weeks ago and it still has not come."}]


@pytest.fixture(scope="module")
def frontier(binary, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("frontier")
    proc, base = spawn(binary, ["--model", upstream_model_path(), "--threads", "1", "--ctx", "2048"], log_dir)
    recorder = Upstream({"frontier": ["proxy"]})
    recorder.target = f"{base}/v1"
    yield recorder
    recorder.close()
    stop(proc, log_dir)


@pytest.fixture(scope="module")
def router(binary, tmp_path_factory, frontier):
    log_dir = tmp_path_factory.mktemp("router")
    config = log_dir / "smallfirst.toml"
    labels = ", ".join(f'"{l}"' for l in LABELS)
    config.write_text(f"""
[tiers.local]
backend = "embedded"
model = "{model_path()}"
threads = 1
ctx = 512

[tiers.frontier]
backend = "openai"
model = "qwen2.5-coder-0.5b-instruct"
base_url = "{frontier.base("frontier")}"
context_window = 2048
capabilities = ["tools", "json_schema"]

[policy]
threshold = 0.5

[[policy.rules]]
task = "summarize"
tier = "frontier"

[tasks.sure]
labels = [{labels}]
threshold = 0.0

[tasks.unsure]
labels = [{labels}]
threshold = 1.0

[tasks.secret]
labels = [{labels}]
threshold = 1.0
privacy = "local-only"
""")
    proc, base = spawn(binary, ["--config", str(config)], log_dir)
    yield base
    stop(proc, log_dir)


@pytest.fixture(scope="module")
def client(router):
    return OpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0, timeout=120)


def auto(client, task=None, privacy=None, **kwargs):
    headers = {}
    if task:
        headers["x-smallfirst-task"] = task
    if privacy:
        headers["x-smallfirst-privacy"] = privacy
    kwargs.setdefault("messages", QUERY)
    return client.chat.completions.with_raw_response.create(model="auto", extra_headers=headers, temperature=0,
                                                             **kwargs)


def test_a_confident_local_answer_stays_local_with_its_label(client, frontier):
    before = len(frontier.requests("frontier"))
    r = auto(client, task="sure", max_tokens=16)
    h = r.headers
    assert (h["x-smallfirst-tier"], h["x-smallfirst-escalated"]) == ("local", "false")
    assert h["x-smallfirst-reason"].startswith("task=sure")
    value, method = h["x-smallfirst-confidence"].split("; ")
    assert 0 < float(value) <= 1 and method == "label_probability"
    c = r.parse()
    assert c.choices[0].message.content in LABELS
    label = c.model_extra["smallfirst"]["label"]
    assert label["label"] == c.choices[0].message.content and label["probability"] == pytest.approx(float(value), abs=1e-3)
    assert label["margin"] is not None
    assert len(frontier.requests("frontier")) == before


def test_a_low_confidence_answer_escalates_with_the_original_request(client, frontier):
    before = len(frontier.requests("frontier"))
    r = auto(client, task="unsure", max_tokens=16)
    h = r.headers
    assert (h["x-smallfirst-tier"], h["x-smallfirst-escalated"]) == ("frontier", "true")
    assert h["x-smallfirst-reason"].startswith("low_confidence ") and "<1.00" in h["x-smallfirst-reason"]
    assert float(h["x-smallfirst-confidence"].split(";")[0]) < 1
    assert r.parse().model == "qwen2.5-coder-0.5b-instruct"
    got = frontier.requests("frontier")
    assert len(got) == before + 1
    sent = got[-1][1]
    assert sent["messages"] == QUERY and sent["model"] == "qwen2.5-coder-0.5b-instruct"


def test_labels_in_metadata_are_not_sent_on(client, frontier):
    r = auto(client, task="unsure", max_tokens=16, metadata={"labels": LABELS, "team": "cards"})
    assert r.headers["x-smallfirst-escalated"] == "true"
    sent = frontier.requests("frontier")[-1][1]
    assert sent["metadata"] == {"team": "cards"}, "OpenAI takes only string metadata values"


def test_a_held_stream_replays_the_judged_answer(client):
    r = auto(client, task="sure", stream=True, stream_options={"include_usage": True}, max_tokens=16)
    assert r.headers["x-smallfirst-escalated"] == "false"
    chunks = list(r.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in LABELS
    assert chunks[-1].usage.completion_tokens >= 1


def test_open_ended_work_goes_to_the_frontier_and_rules_come_first(client, frontier):
    r = auto(client, messages=[{"role": "user", "content": "Write an essay about the sea."}], max_tokens=8)
    assert (r.headers["x-smallfirst-tier"], r.headers["x-smallfirst-reason"].split(";")[0]) == \
        ("frontier", "task=open_ended")
    assert r.headers["x-smallfirst-task"] == "open_ended; inferred"
    r = auto(client, messages=[{"role": "user", "content": "Summarize: the meeting moved to Tuesday."}], max_tokens=8)
    assert (r.headers["x-smallfirst-tier"], r.headers["x-smallfirst-reason"].split(";")[0]) == ("frontier", "rule=1")
    r = auto(client, messages=[{"role": "user", "content": "Hi!"}], max_tokens=4)
    assert (r.headers["x-smallfirst-tier"], r.headers["x-smallfirst-reason"].split(";")[0]) == ("local", "default")
    assert r.headers["x-smallfirst-confidence"] == "none"


def test_long_input_skips_to_a_tier_whose_window_fits(client):
    long = [{"role": "user", "content": "Classify this complaint. " + "My card was charged twice. " * 120}]
    r = auto(client, messages=long, max_tokens=4)
    assert r.headers["x-smallfirst-tier"] == "frontier"
    assert r.headers["x-smallfirst-reason"].startswith("context>local_window")


def test_local_only_never_reaches_the_frontier(client, frontier, router):
    before = len(frontier.requests("frontier"))
    # Low confidence under a threshold of 1: answered locally, marked, not escalated.
    r = auto(client, task="unsure", privacy="local-only", max_tokens=16)
    h = r.headers
    assert (h["x-smallfirst-tier"], h["x-smallfirst-escalated"]) == ("local", "false")
    assert h["x-smallfirst-reason"].startswith("low_confidence") and "local-only" in h["x-smallfirst-reason"]
    # A task whose policy is local-only, the same.
    assert auto(client, task="secret", max_tokens=16).headers["x-smallfirst-tier"] == "local"
    # Too long for the local window: an error, never the frontier.
    long = [{"role": "user", "content": "Classify: " + "my card was charged twice " * 150}]
    with pytest.raises(openai.BadRequestError) as e:
        auto(client, privacy="local-only", messages=long, max_tokens=4)
    assert e.value.body["code"] == "no_route" and "local-only" in e.value.body["message"]
    assert e.value.response.headers["x-smallfirst-reason"].startswith("no_route")
    # A privacy value that is not understood is refused, never read as "any".
    with pytest.raises(openai.BadRequestError) as e:
        auto(client, task="unsure", privacy="local_only", max_tokens=4)
    assert e.value.body["code"] == "invalid_privacy"
    # Naming the frontier outright is refused too.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="frontier", messages=QUERY, max_tokens=4,
                                       extra_headers={"x-smallfirst-privacy": "local-only"})
    assert e.value.body["code"] == "local_only"
    assert len(frontier.requests("frontier")) == before, "the frontier received nothing"


def test_every_response_says_how_it_was_answered(router):
    r = httpx.post(f"{router}/v1/chat/completions", json={"model": "local", "messages": QUERY, "max_tokens": 2})
    assert r.headers["x-smallfirst-reason"].startswith("model=local")
    assert {"x-smallfirst-tier", "x-smallfirst-confidence", "x-smallfirst-escalated"} <= set(r.headers)


def test_a_local_only_answer_below_its_threshold_can_be_refused(binary, tmp_path):
    config = tmp_path / "smallfirst.toml"
    labels = ", ".join(f'"{l}"' for l in LABELS)
    config.write_text(f'[tiers.local]\nbackend = "embedded"\nmodel = "{model_path()}"\nthreads = 1\nctx = 512\n\n'
                      f'[policy]\nlocal_only_low_confidence = "refuse"\n\n'
                      f'[tasks.secret]\nlabels = [{labels}]\nthreshold = 1.0\nprivacy = "local-only"\n')
    proc, base = spawn(binary, ["--config", str(config)], tmp_path)
    try:
        r = httpx.post(f"{base}/v1/chat/completions", headers={"x-smallfirst-task": "secret"},
                       json={"model": "auto", "messages": QUERY, "max_tokens": 16}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["code"] == "low_confidence", r.text
    finally:
        stop(proc, tmp_path)
