"""Budgets: `[budgets]` held against the ledger's spend. Two replicas sharing one PostgreSQL
ledger hold one budget between them (what one spends, the other refuses); a spent budget that
says `local` answers on the embedded tier instead (the reason says `budget`), on a named tier
and in a cascade that would escalate; one that says `refuse` gets 429 `budget_exceeded` with
`Retry-After`, on chat completions, messages (Anthropic's error) and responses; a key's budget
holds only that key back; a free tier is never held back."""

import os
import time

import anthropic
import httpx
import pytest
from openai import OpenAI, RateLimitError

from conftest import model_path, spawn, stop
from fault_upstream import Upstream
from test_ledger import Store

HELLO = [{"role": "user", "content": "Say hello."}]
# The mock frontier's usage is 5 prompt and 3 completion tokens: at $2.50 / $10 a million,
# $0.0000425 a request.
COST = (5 * 2.5 + 3 * 10.0) / 1e6
# Spent by the fifth request, not by the fourth.
BUDGET = 4.5 * COST
REFRESH_MS = 100


def config_text(upstream, store, budgets, server=""):
    return f"""
[server]
{server}

[tiers.local]
backend = "embedded"
model = "{model_path()}"
threads = 2
ctx = 1024

[tiers.frontier]
backend = "openai"
model = "mock-frontier"
base_url = "{upstream.base('frontier')}"
context_window = 8192
price = {{ input = 2.5, output = 10.0 }}

[tasks.sentiment]
labels = ["positive", "negative"]
threshold = 0.999

[ledger]
{store.toml}
commit_ms = 20

[budgets]
refresh_ms = {REFRESH_MS}
{budgets}
"""


@pytest.fixture(scope="module")
def upstream():
    up = Upstream({"frontier": ["ok"]})
    yield up
    up.close()


def frontier_calls(upstream):
    return sum(1 for entry in upstream.log if entry[0] == "frontier")


def settle():
    """Long enough for a record to be committed and read again by every replica."""
    time.sleep(0.02 + 4 * REFRESH_MS / 1000)


def test_two_replicas_hold_one_budget(binary, tmp_path_factory, upstream):
    store = Store("postgres", tmp_path_factory.mktemp("budget-store"))
    budgets = f'[budgets.tiers.frontier]\ndaily_usd = {BUDGET}\nwhen_exceeded = "refuse"\n'
    servers = []
    try:
        for name in ("a", "b"):
            d = tmp_path_factory.mktemp(f"budget-{name}")
            (d / "smallfirst.toml").write_text(config_text(upstream, store, budgets))
            servers.append((*spawn(binary, ["--config", str(d / "smallfirst.toml")], d), d))
        (_, a, _), (_, b, _) = servers
        clients = {base: OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) for base in (a, b)}
        before = frontier_calls(upstream)
        # Three on A, one on B: $0.00017 of $0.00019, under the budget on both.
        for base in (a, a, a, b):
            clients[base].chat.completions.create(model="frontier", messages=HELLO)
            settle()
        # B's fifth request spends it; B alone has spent two, so A's three count on B.
        r = clients[b].chat.completions.with_raw_response.create(model="frontier", messages=HELLO)
        assert r.headers["x-smallfirst-tier"] == "frontier"
        settle()
        for base in (a, b):
            with pytest.raises(RateLimitError) as e:
                clients[base].chat.completions.create(model="frontier", messages=HELLO)
            assert e.value.status_code == 429
            assert e.value.body["code"] == "budget_exceeded", e.value.body
            assert "tier `frontier`'s budget" in e.value.body["message"]
            assert 1 <= int(e.value.response.headers["retry-after"]) <= 86_400
        # Anthropic's error shape on /v1/messages, and the Responses API, refused the same.
        with pytest.raises(anthropic.RateLimitError) as e:
            anthropic.Anthropic(base_url=a, api_key="x", max_retries=0).messages.create(
                model="frontier", max_tokens=8, messages=HELLO)
        assert e.value.body["error"]["type"] == "rate_limit_error"
        with pytest.raises(RateLimitError):
            clients[b].responses.create(model="frontier", input="Say hello.")
        assert frontier_calls(upstream) - before == 5, "nothing was sent on after the budget was spent"
        # The free tier is not held back.
        assert clients[a].chat.completions.create(model="local", messages=HELLO, max_tokens=3).choices
        settle()
        rows = store.query(f"SELECT status, http_status, tier, cost FROM {store.table} ORDER BY id")
        assert [r["status"] for r in rows] == ["answered"] * 5 + ["refused"] * 4 + ["answered"]
        assert all(r["http_status"] == 429 for r in rows[5:9])
        assert sum(r["cost"] for r in rows) == pytest.approx(5 * COST)
    finally:
        for proc, _, d in servers:
            stop(proc, d)


@pytest.fixture(scope="module")
def local_when_spent(binary, tmp_path_factory, upstream):
    d = tmp_path_factory.mktemp("budget-local")
    store = Store("sqlite", d)
    budgets = ('daily_usd = 0\nwhen_exceeded = "local"\n'
               f'[budgets.keys.ops]\ndaily_usd = 0\nwhen_exceeded = "refuse"\n')
    (d / "smallfirst.toml").write_text(
        config_text(upstream, store, budgets, server='api_keys_env = "SMALLFIRST_TEST_KEYS"'))
    os.environ["SMALLFIRST_TEST_KEYS"] = "ci:sk-test-aaaaaaaa,ops:sk-test-bbbbbbbb"
    try:
        proc, base = spawn(binary, ["--config", str(d / "smallfirst.toml")], d)
    finally:
        del os.environ["SMALLFIRST_TEST_KEYS"]
    yield base, store
    stop(proc, d)


def test_a_spent_budget_that_says_local_answers_here(local_when_spent, upstream):
    base, store = local_when_spent
    client = OpenAI(base_url=f"{base}/v1", api_key="sk-test-aaaaaaaa", max_retries=0)
    before = frontier_calls(upstream)
    # Named for the frontier: answered by the embedded tier, marked.
    r = client.chat.completions.with_raw_response.create(model="frontier", messages=HELLO, max_tokens=4)
    assert r.headers["x-smallfirst-tier"] == "local"
    assert r.headers["x-smallfirst-reason"].startswith("budget;")
    assert r.parse().choices[0].message.content is not None
    # A cascade that would escalate (the threshold is 0.999) keeps its local answer.
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Great product, works well."}],
        extra_headers={"x-smallfirst-task": "sentiment"})
    assert r.headers["x-smallfirst-tier"] == "local"
    assert r.headers["x-smallfirst-reason"].startswith("budget;")
    assert r.headers.get("x-smallfirst-escalated") in (None, "false")
    assert r.parse().choices[0].message.content in ("positive", "negative")
    # Streamed too.
    chunks = list(client.chat.completions.create(model="frontier", messages=HELLO, max_tokens=4, stream=True))
    assert chunks
    assert frontier_calls(upstream) == before, "a spent budget sent nothing to the frontier"


def test_a_keys_budget_holds_that_key_alone(local_when_spent, upstream):
    base, store = local_when_spent
    ops = OpenAI(base_url=f"{base}/v1", api_key="sk-test-bbbbbbbb", max_retries=0)
    # ops's budget refuses, before the overall budget's `local`.
    with pytest.raises(RateLimitError) as e:
        ops.chat.completions.create(model="frontier", messages=HELLO)
    assert "key `ops`'s budget" in e.value.body["message"]
    # Its requests to the free tier go on.
    assert ops.chat.completions.create(model="local", messages=HELLO, max_tokens=3).choices
    r = httpx.post(f"{base}/v1/chat/completions", json={"model": "frontier", "messages": HELLO, "max_tokens": 3},
                   headers={"authorization": "Bearer sk-test-aaaaaaaa"})
    assert r.status_code == 200 and r.headers["x-smallfirst-reason"].startswith("budget;")
    settle()
    rows = store.query(f"SELECT key, reason, status, http_status FROM {store.table} WHERE key = 'ops' ORDER BY id")
    assert [(r["status"], r["http_status"]) for r in rows] == [("refused", 429), ("answered", 200)]
    moved = store.query(f"SELECT reason, tier FROM {store.table} WHERE key = 'ci' AND reason = 'budget'")
    assert len(moved) >= 4 and {r["tier"] for r in moved} == {"local"}


def test_budgets_need_the_ledger(binary, tmp_path):
    config = tmp_path / "smallfirst.toml"
    config.write_text(f'[tiers.local]\nbackend = "embedded"\nmodel = "{model_path()}"\n'
                      '[ledger]\nenabled = false\n[budgets]\ndaily_usd = 1\n')
    out = __import__("subprocess").run([str(binary), "serve", "--config", str(config), "--port", "0"],
                                       capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "budgets are read from the ledger" in out.stderr, out.stderr
