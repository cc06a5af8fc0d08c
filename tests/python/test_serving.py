"""The embedded engine under more than one client: a bounded queue that answers 429 with
Retry-After when full, places freed when a client goes away, and what `/metrics` shows."""

import threading
import time

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import model_path, spawn, stop

LONG = {"model": "local", "messages": [{"role": "user", "content": "Count from 1 to 500, one number per line."}],
        "max_tokens": 300, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def server(binary, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("serving")
    proc, base = spawn(binary, ["--model", model_path(), "--threads", "1", "--ctx", "512", "--parallel", "1",
                                "--max-queue", "0"], log_dir)
    yield base
    stop(proc, log_dir)


def metric(base, name):
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_full_queue_answers_429_and_later_requests_succeed(server):
    started = threading.Event()
    finished = threading.Event()

    def long_stream():
        with httpx.stream("POST", f"{server}/v1/chat/completions", json=LONG, timeout=120) as r:
            for _ in r.iter_lines():
                started.set()
        finished.set()

    t = threading.Thread(target=long_stream)
    t.start()
    assert started.wait(60)
    client = OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert e.value.body["code"] == "queue_full"
    assert e.value.response.headers["retry-after"] == "1"
    assert metric(server, "smallfirst_active_slots") == 1
    t.join(120)
    assert finished.is_set()
    ok = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert ok.choices[0].message.content is not None
    assert metric(server, "smallfirst_rejected_total") >= 1
    assert metric(server, 'smallfirst_requests_total{status="429"}') >= 1
    assert metric(server, "smallfirst_generated_tokens_total") >= 3


def test_a_client_that_goes_away_frees_its_place(server):
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=LONG, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)
        next(lines)
        assert metric(server, "smallfirst_active_slots") == 1
    deadline = time.monotonic() + 10
    while metric(server, "smallfirst_active_slots") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server, "smallfirst_active_slots") == 0
    assert metric(server, "smallfirst_queue_depth") == 0
    r = httpx.post(f"{server}/v1/chat/completions", timeout=60,
                   json={"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert r.status_code == 200, "the place was freed"


def test_metrics_are_prometheus_text(server):
    r = httpx.get(f"{server}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("smallfirst_ttft_seconds_bucket", "smallfirst_inter_token_seconds_count",
                 "smallfirst_prompt_tokens_total", "smallfirst_queue_limit 1"):
        assert name in text, name
    # The same prompt again: its prefix is kept from the request before.
    before = metric(server, "smallfirst_prefix_reuse_tokens_total")
    body = {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}
    first = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60).json()
    again = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60).json()
    assert first["choices"][0]["message"]["content"] == again["choices"][0]["message"]["content"]
    assert metric(server, "smallfirst_prefix_reuse_tokens_total") > before
    assert metric(server, "smallfirst_ttft_seconds_count") >= 2


QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers.",
             "Why is the sky blue?", "Name a famous painter.", "How do I boil an egg?"]


def test_concurrent_greedy_answers_equal_each_alone(binary, tmp_path):
    """Four slots, six clients at once (two wait for a slot): each gets what it gets alone,
    and /metrics shows more than one slot busy while they run."""
    proc, base = spawn(binary, ["--model", model_path(), "--threads", "2", "--ctx", "512", "--parallel", "4"],
                       tmp_path)
    try:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)

        def ask(q, stream=False):
            body = dict(model="local", messages=[{"role": "user", "content": q}], max_tokens=32, temperature=0)
            if not stream:
                return client.chat.completions.create(**body).choices[0].message.content
            return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**body, stream=True)
                           if c.choices)

        alone = [ask(q) for q in QUESTIONS]
        busiest = []
        running = threading.Event()

        def watch():
            while not running.is_set():
                busiest.append(metric(base, "smallfirst_active_slots"))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        results = [None] * len(QUESTIONS)

        def one(i):
            results[i] = ask(QUESTIONS[i], stream=i % 2 == 1)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        running.set()
        watcher.join()
        assert results == alone
        assert max(busiest) >= 2, "sequences decoded together"
        assert max(busiest) <= 4, "never more than the slots"
        assert metric(base, "smallfirst_queue_limit") == 64 + 4
    finally:
        stop(proc, tmp_path)


def test_a_request_past_its_time_limit_is_stopped_with_a_clear_error(binary, tmp_path):
    proc, base = spawn(binary, ["--model", model_path(), "--threads", "1", "--ctx", "512",
                                "--request-timeout", "0.3"], tmp_path)
    try:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
        body = dict(LONG)
        body.pop("stream")
        start = time.monotonic()
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(**body)
        assert e.value.status_code == 504 and e.value.body["code"] == "request_timeout"
        assert time.monotonic() - start < 3
        with pytest.raises(openai.APIError) as e:
            for _ in client.chat.completions.create(**body, stream=True):
                pass
        assert "request_timeout" in str(e.value.body)
        assert metric(base, "smallfirst_active_slots") == 0
    finally:
        stop(proc, tmp_path)


def test_shutdown_lets_a_stream_finish_then_exits(binary, tmp_path):
    import signal as sig
    proc, base = spawn(binary, ["--model", model_path(), "--threads", "1", "--ctx", "512"], tmp_path)
    lines = []
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=LONG, timeout=60) as r:
        for line in r.iter_lines():
            if not lines:
                proc.send_signal(sig.SIGTERM)
            lines.append(line)
    assert "data: [DONE]" in lines, "the stream in flight finished"
    assert proc.wait(timeout=20) == 0


def test_past_the_drain_deadline_requests_are_cut(binary, tmp_path):
    import signal as sig
    proc, base = spawn(binary, ["--model", model_path(), "--threads", "1", "--ctx", "512",
                                "--drain-timeout", "0.2"], tmp_path)
    body = dict(LONG, max_tokens=400)
    got_done = False
    start = None
    try:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if start is None:
                    start = time.monotonic()
                    proc.send_signal(sig.SIGTERM)
                got_done |= line == "data: [DONE]"
    except httpx.HTTPError:
        pass
    assert proc.wait(timeout=20) == 0
    assert time.monotonic() - start < 3
    assert not got_done, "cut before it finished"
