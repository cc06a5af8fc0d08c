"""Faults on the path to a remote tier, injected by a loopback upstream (fault_upstream.py):
retries with backoff and `Retry-After`, failover down the fallback chain (to the embedded model
too), the circuit breaker, and the connect / first-byte / total deadlines — through the `openai`
SDK where a client would see them."""

import socket
import time

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import model_path, spawn, stop
from fault_upstream import Upstream

HELLO = [{"role": "user", "content": "Say hello."}]

# key: (script, tier settings)
TIERS = {
    "backup": (["ok"], ""),
    "flaky": (["500", "ok"], 'retry = { attempts = 3, backoff = 0.05 }'),
    "limited": (["429", "ok"], 'retry = { attempts = 2, backoff = 0.05, max_backoff = 2 }'),
    "slowdown": (["429_long"], 'retry = { attempts = 3, backoff = 0.05 }\nfallback = "backup"'),
    "dead": (["reset"], 'retry = { attempts = 2, backoff = 0.05 }\nbreaker = { failures = 2, cooldown = 60 }\n'
                        'fallback = "backup"'),
    "probed": (["reset", "reset", "ok"], 'retry = { attempts = 1 }\nbreaker = { failures = 2, cooldown = 0.5 }'),
    "stuck": (["hang"], 'retry = { attempts = 1 }\ntimeouts = { first_byte = 0.5, total = 1.5 }'),
    "garbled": (["garbled"], 'retry = { attempts = 2, backoff = 0.05 }\nfallback = "local"'),
    "strict": (["400"], 'retry = { attempts = 3, backoff = 0.05 }\nfallback = "backup"'),
    "cut": (["sse_cut"], 'retry = { attempts = 3, backoff = 0.05 }\nfallback = "backup"'),
    "stall": (["sse_stall"], 'retry = { attempts = 1 }\ntimeouts = { first_byte = 0.5 }'),
    "trickle": (["sse_trickle"], 'retry = { attempts = 1 }\ntimeouts = { first_byte = 1, total = 1.5 }'),
    "early": (["sse_early", "ok"], 'retry = { attempts = 2, backoff = 0.05 }'),
    "roleonly": (["sse_role_only", "ok"], 'retry = { attempts = 2, backoff = 0.05 }'),
}


@pytest.fixture(scope="module")
def upstream():
    up = Upstream({k: script for k, (script, _) in TIERS.items()})
    yield up
    up.close()


@pytest.fixture(scope="module")
def blackhole():
    """A loopback port that never completes a connection: its listen queue (backlog 0) is
    already full, so the kernel drops further SYNs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    filler = socket.create_connection(srv.getsockname())
    yield srv.getsockname()[1]
    filler.close()
    srv.close()


@pytest.fixture(scope="module")
def gateway(binary, tmp_path_factory, upstream, blackhole):
    log_dir = tmp_path_factory.mktemp("faults")
    config = log_dir / "smallfirst.toml"
    text = f'[tiers.local]\nbackend = "embedded"\nmodel = "{model_path()}"\nthreads = 1\nctx = 512\n'
    for key, (_, extra) in TIERS.items():
        text += (f'\n[tiers.{key}]\nbackend = "openai"\nmodel = "mock-{key}"\nbase_url = "{upstream.base(key)}"\n'
                 f'context_window = 4096\n{extra}\n')
    text += (f'\n[tiers.unanswered]\nbackend = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:{blackhole}/v1"\n'
             f'context_window = 4096\nretry = {{ attempts = 1 }}\ntimeouts = {{ connect = 0.5 }}\n')
    config.write_text(text)
    proc, base = spawn(binary, ["--config", str(config)], log_dir)
    yield base
    stop(proc, log_dir)


@pytest.fixture(scope="module")
def client(gateway):
    return OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=30)


def test_a_5xx_is_retried_and_then_answers(client, upstream):
    r = client.chat.completions.with_raw_response.create(model="flaky", messages=HELLO)
    assert r.headers["x-smallfirst-tier"] == "flaky"
    assert r.parse().choices[0].message.content == "answer from flaky"
    assert len(upstream.requests("flaky")) == 2


def test_retry_after_is_honoured(client, upstream):
    r = client.chat.completions.create(model="limited", messages=HELLO)
    assert r.choices[0].message.content == "answer from limited"
    (t1, _), (t2, _) = upstream.requests("limited")
    assert t2 - t1 >= 0.95, f"retried {t2 - t1:.3f} s after a Retry-After of 1 s"


def test_a_retry_after_too_long_to_wait_fails_over_at_once(client, upstream):
    before = len(upstream.requests("backup"))
    start = time.monotonic()
    r = client.chat.completions.with_raw_response.create(model="slowdown", messages=HELLO)
    assert time.monotonic() - start < 5
    assert r.headers["x-smallfirst-tier"] == "backup"
    assert r.headers["x-smallfirst-failover"] == "slowdown:upstream_error"
    assert r.parse().choices[0].message.content == "answer from backup"
    assert len(upstream.requests("slowdown")) == 1
    assert len(upstream.requests("backup")) == before + 1
    sent = upstream.requests("backup")[-1][1]
    assert sent["model"] == "mock-backup" and sent["messages"] == HELLO


def test_a_dead_tier_fails_over_and_its_circuit_opens(client, upstream):
    r = client.chat.completions.with_raw_response.create(model="dead", messages=HELLO)
    assert r.headers["x-smallfirst-tier"] == "backup"
    assert r.headers["x-smallfirst-failover"] == "dead:upstream_unreachable"
    assert len(upstream.requests("dead")) == 2, "tried twice (attempts = 2), then failed over"
    r = client.chat.completions.with_raw_response.create(model="dead", messages=HELLO)
    assert r.headers["x-smallfirst-tier"] == "backup"
    assert r.headers["x-smallfirst-failover"] == "dead:upstream_circuit_open"
    assert len(upstream.requests("dead")) == 2, "an open circuit is not tried"


def test_an_open_circuit_lets_a_probe_through_after_its_cooldown(gateway, upstream):
    url = f"{gateway}/v1/chat/completions"
    body = {"model": "probed", "messages": HELLO}
    assert httpx.post(url, json=body).status_code == 502
    assert httpx.post(url, json=body).status_code == 502
    shut = httpx.post(url, json=body)
    assert shut.status_code == 503
    assert shut.json()["error"]["code"] == "upstream_circuit_open"
    assert int(shut.headers["retry-after"]) >= 1
    assert len(upstream.requests("probed")) == 2
    time.sleep(0.6)
    ok = httpx.post(url, json=body)
    assert ok.status_code == 200, ok.text
    assert len(upstream.requests("probed")) == 3


def test_a_connection_that_never_opens_hits_the_connect_deadline(client):
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="unanswered", messages=HELLO)
    assert e.value.status_code == 504
    assert e.value.body["code"] == "upstream_timeout"
    assert "no connection" in e.value.body["message"]
    assert time.monotonic() - start < 3


def test_a_hung_upstream_hits_its_deadlines(client):
    # A stream's head is due within the first-byte timeout.
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="stuck", messages=HELLO, stream=True)
    assert e.value.status_code == 504
    assert e.value.body["code"] == "upstream_timeout" and "no response head" in e.value.body["message"]
    assert time.monotonic() - start < 1.4
    # A whole answer's head comes when the model is done: only the total deadline bounds it.
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="stuck", messages=HELLO)
    assert e.value.status_code == 504 and "total deadline" in e.value.body["message"]
    assert 1.4 < time.monotonic() - start < 4


def test_a_malformed_answer_fails_over_to_the_embedded_model(client, upstream):
    r = client.chat.completions.with_raw_response.create(model="garbled", messages=HELLO, max_tokens=4)
    assert r.headers["x-smallfirst-tier"] == "local"
    assert r.headers["x-smallfirst-failover"] == "garbled:upstream_malformed"
    assert r.parse().model.startswith("smollm2")
    assert len(upstream.requests("garbled")) == 2


def test_a_client_error_comes_back_as_it_is_without_retry_or_failover(client, upstream):
    backup = len(upstream.requests("backup"))
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="strict", messages=HELLO)
    assert e.value.body["param"] == "temperature"
    assert len(upstream.requests("strict")) == 1
    assert len(upstream.requests("backup")) == backup


def test_a_stream_cut_after_it_began_ends_in_an_error(client, upstream):
    stream = client.chat.completions.create(model="cut", messages=HELLO, stream=True)
    got = []
    with pytest.raises(openai.APIError) as e:
        for c in stream:
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "partial "
    assert "upstream_stream_broken" in str(e.value.body) or "broke" in str(e.value)
    assert len(upstream.requests("cut")) == 1, "a stream that began is never replayed"


def test_a_stalled_stream_ends_in_an_error_not_a_hang(client):
    start = time.monotonic()
    with pytest.raises(openai.APIError) as e:
        for _ in client.chat.completions.create(model="stall", messages=HELLO, stream=True):
            pass
    assert "upstream_timeout" in str(e.value.body)
    assert time.monotonic() - start < 3


def test_the_total_deadline_ends_a_stream_that_never_finishes(client):
    start = time.monotonic()
    n = 0
    with pytest.raises(openai.APIError) as e:
        for _ in client.chat.completions.create(model="trickle", messages=HELLO, stream=True):
            n += 1
    assert n >= 3, "chunks came before the deadline"
    assert "total deadline" in str(e.value)
    assert time.monotonic() - start < 4


def test_a_stream_that_breaks_before_its_first_content_is_retried(client, upstream):
    for key in ("early", "roleonly"):
        chunks = list(client.chat.completions.create(model=key, messages=HELLO, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == f"answer from {key}"
        assert len(upstream.requests(key)) == 2, key


def test_a_configuration_of_remote_tiers_only_loads_no_model(binary, tmp_path, upstream):
    config = tmp_path / "smallfirst.toml"
    config.write_text(f'[tiers.backup]\nbackend = "openai"\nmodel = "mock-backup"\n'
                      f'base_url = "{upstream.base("backup")}"\ncontext_window = 4096\n')
    proc, base = spawn(binary, ["--config", str(config)], tmp_path)
    try:
        health = httpx.get(f"{base}/health").json()
        assert health["model"] is None
        assert health["remotes"] == [{"tier": "backup", "model": "mock-backup", "circuit": "closed"}]
        c = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
        assert [m.id for m in c.models.list()] == ["backup", "mock-backup"]
        assert c.chat.completions.create(model="backup", messages=HELLO).choices[0].message.content
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="local", messages=HELLO)
        rss_kib = int(next(line.split()[1] for line in open(f"/proc/{proc.pid}/status")
                           if line.startswith("VmRSS:")))
        assert rss_kib < 100 * 1024, f"a gateway without a model holds {rss_kib} KiB"
    finally:
        stop(proc, tmp_path)
