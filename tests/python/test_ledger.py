"""The ledger: a record for every request on every ingress (answered, escalated, failed over,
refused, failed, cancelled, streamed), tokens read from streamed upstream answers without the
client seeing a usage chunk it did not ask for, counts equal to the requests sent under
concurrent load, the report over HTTP and from the CLI, and what a clean stop and `kill -9`
keep — each on SQLite and on a real PostgreSQL server (scripts/test.sh starts one and names it
in SMALLFIRST_TEST_POSTGRES); and two replicas sharing one PostgreSQL ledger."""

import concurrent.futures
import csv
import io
import json
import os
import uuid
import signal
import sqlite3
import subprocess
import threading
import time

import anthropic
import httpx
import pytest
from openai import OpenAI

from conftest import model_path, spawn, stop
from fault_upstream import Upstream

HELLO = [{"role": "user", "content": "Say hello."}]
# Dollars per million tokens: the frontier's input and output.
FRONTIER_IN, FRONTIER_OUT = 2.5, 10.0


class Store:
    """Where a test's ledger is: a SQLite file, or a database of its own on the test run's
    PostgreSQL server."""

    def __init__(self, kind, tmp):
        self.kind = kind
        if kind == "sqlite":
            self.path = tmp / "ledger.sqlite"
            self.target = str(self.path)
            self.toml = f'path = "{self.path}"'
            return
        server = os.environ.get("SMALLFIRST_TEST_POSTGRES")
        if not server:
            pytest.skip("no PostgreSQL server (scripts/test.sh starts one and sets SMALLFIRST_TEST_POSTGRES)")
        name = f"ledger_{uuid.uuid4().hex[:12]}"
        subprocess.run(["psql", server, "-q", "-c", f"CREATE DATABASE {name}"], check=True, timeout=60)
        self.target = server.rsplit("/", 1)[0] + "/" + name
        self.toml = f'url = "{self.target}"'

    def query(self, sql):
        """Rows as dicts, booleans as 0 / 1 and numbers as numbers, whichever the store."""
        if self.kind == "sqlite":
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
                db.row_factory = sqlite3.Row
                return [dict(r) for r in db.execute(sql).fetchall()]
        out = subprocess.run(["psql", self.target, "--csv", "-c", sql], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        return [{k: pg_value(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(out))]

    @property
    def table(self):
        return "requests" if self.kind == "sqlite" else "smallfirst_requests"


def pg_value(v):
    if v == "":
        return None
    if v in ("t", "f"):
        return int(v == "t")
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_kind(request):
    return request.param


def config_text(upstream, store, extra=""):
    return f"""
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
price = {{ input = {FRONTIER_IN}, output = {FRONTIER_OUT} }}

[tiers.broken]
backend = "openai"
model = "mock-broken"
base_url = "{upstream.base('broken')}"
context_window = 8192
retry = {{ attempts = 1 }}
fallback = "frontier"

[tiers.down]
backend = "openai"
model = "mock-down"
base_url = "{upstream.base('down')}"
context_window = 8192
retry = {{ attempts = 1 }}

[tasks.sentiment]
labels = ["positive", "negative"]
threshold = 0.999

[ledger]
{store.toml}
baseline = "frontier"
{extra}
"""


@pytest.fixture(scope="module")
def upstream():
    up = Upstream({"frontier": ["ok"], "broken": ["500"], "down": ["500"]})
    yield up
    up.close()


@pytest.fixture(scope="module")
def gateway(binary, tmp_path_factory, upstream, store_kind):
    log_dir = tmp_path_factory.mktemp("ledger")
    store = Store(store_kind, log_dir)
    config = log_dir / "smallfirst.toml"
    config.write_text(config_text(upstream, store))
    proc, base = spawn(binary, ["--config", str(config)], log_dir)
    yield base, store, config
    stop(proc, log_dir)


@pytest.fixture(scope="module")
def client(gateway):
    return OpenAI(base_url=f"{gateway[0]}/v1", api_key="unused", max_retries=0, timeout=60)


def report(base, **params):
    r = httpx.get(f"{base}/v1/smallfirst/report", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def rows(store, request_ids):
    """The ledger's rows for these requests, by request id (request ids are `[A-Za-z0-9_]`)."""
    ids = ",".join(f"'{i}'" for i in request_ids)
    return {r["request_id"]: r for r in store.query(f"SELECT * FROM {store.table} WHERE request_id IN ({ids})")}


def test_every_ingress_and_outcome_is_recorded(gateway, client, upstream):
    base, ledger, _ = gateway
    sent = {}  # request id -> what the record must say

    def expect(response, **want):
        sent[response.headers["x-request-id"]] = want

    r = client.chat.completions.with_raw_response.create(model="local", messages=HELLO, max_tokens=4)
    expect(r, ingress="chat", tier="local", status="answered", on_machine=1, cost=0.0)
    with client.chat.completions.with_streaming_response.create(
            model="local", messages=HELLO, max_tokens=4, stream=True) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        expect(s, ingress="chat", tier="local", status="answered", streamed=True)
    # The client did not ask for usage, so it sees none; the ledger counted it all the same.
    assert all("usage" not in c or c["usage"] is None for c in chunks)
    assert all(c["choices"] for c in chunks)

    r = client.chat.completions.with_raw_response.create(model="frontier", messages=HELLO)
    expect(r, ingress="chat", tier="frontier", status="answered", on_machine=0, prompt_tokens=5,
           completion_tokens=3)
    with client.chat.completions.with_streaming_response.create(model="frontier", messages=HELLO, stream=True) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        expect(s, ingress="chat", tier="frontier", status="answered", prompt_tokens=5, completion_tokens=3,
               streamed=True)
    assert [c for c in chunks if not c["choices"]] == [], "the usage chunk reached a client that did not ask"
    assert upstream.last("frontier")[2]["stream_options"] == {"include_usage": True}
    with client.chat.completions.with_streaming_response.create(
            model="frontier", messages=HELLO, stream=True, stream_options={"include_usage": True}) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        expect(s, ingress="chat", tier="frontier", status="answered", prompt_tokens=5, completion_tokens=3)
    assert chunks[-1]["usage"]["prompt_tokens"] == 5, "a client that asked for usage keeps it"

    r = client.chat.completions.with_raw_response.create(model="broken", messages=HELLO)
    expect(r, ingress="chat", tier="frontier", status="answered", tried="broken,frontier")
    r = httpx.post(f"{base}/v1/chat/completions", json={"model": "down", "messages": HELLO}, timeout=30)
    assert r.status_code >= 500
    expect(r, ingress="chat", tier="down", status="failed")
    r = httpx.post(f"{base}/v1/chat/completions", content=b'{"model": "local", "messages": [',
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400
    expect(r, ingress="chat", status="refused", reason="rejected")

    # Escalated: the label's probability is below the task's threshold of 0.999.
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "I love this phone!"}],
        extra_headers={"x-smallfirst-task": "sentiment"})
    expect(r, ingress="chat", tier="frontier", status="answered", escalated=1, tried="local,frontier",
           task="sentiment", task_source="header")

    claude = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
    m = claude.messages.with_raw_response.create(model="local", max_tokens=4, messages=HELLO)
    expect(m, ingress="messages", tier="local", status="answered")
    with claude.messages.with_streaming_response.create(model="frontier", max_tokens=4, messages=HELLO,
                                                        stream=True) as s:
        s.read()
        expect(s, ingress="messages", tier="frontier", status="answered", prompt_tokens=5, completion_tokens=3)

    r = client.responses.with_raw_response.create(model="frontier", input="Say hello.")
    expect(r, ingress="responses", tier="frontier", status="answered", prompt_tokens=5, completion_tokens=3)
    with client.responses.with_streaming_response.create(model="local", input="Say hello.", max_output_tokens=16,
                                                         stream=True) as s:
        s.read()
        expect(s, ingress="responses", tier="local", status="answered", streamed=True)

    r = client.embeddings.with_raw_response.create(model="local", input=["one", "two words"])
    expect(r, ingress="embeddings", tier="local", status="answered")
    r = client.completions.with_raw_response.create(model="local", prompt="Once upon", max_tokens=3)
    expect(r, ingress="completions", tier="local", status="answered", completion_tokens=3)

    # Cancelled: the client leaves after the first chunk of a long local answer.
    with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=60,
                      json={"model": "local", "messages": HELLO, "max_tokens": 400, "stream": True}) as s:
        next(s.iter_lines())
        expect(s, ingress="chat", tier="local", status="cancelled")

    report(base)  # flushes
    deadline = time.monotonic() + 10
    while True:
        got = rows(ledger, sent)
        if len(got) == len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(got) == set(sent), f"missing records: {set(sent) - set(got)}"
    for rid, want in sent.items():
        row = got[rid]
        streamed = want.pop("streamed", False)
        for k, v in want.items():
            assert row[k] == v, f"{rid} ({want}): {k} = {row[k]!r}, wanted {v!r}"
        if row["status"] == "answered" and row["ingress"] != "embeddings":
            assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0, row
            # Priced on the baseline with the same tokens.
            assert row["baseline_cost"] == pytest.approx(
                (row["prompt_tokens"] * FRONTIER_IN + row["completion_tokens"] * FRONTIER_OUT) / 1e6)
        if row["tier"] == "frontier" and row["status"] == "answered":
            assert row["cost"] == pytest.approx(row["baseline_cost"])
        if streamed:
            assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]
        assert row["latency_ms"] > 0 and row["replica"] and row["prompt"] is None and row["answer"] is None


def test_counts_equal_the_requests_sent_under_concurrent_load(gateway, client):
    base, _, _ = gateway
    before = report(base)["total"]["requests"]

    def one(i):
        if i % 8 == 0:
            return client.chat.completions.create(model="local", messages=HELLO, max_tokens=1)
        if i % 3 == 0:
            with client.chat.completions.with_streaming_response.create(
                    model="frontier", messages=HELLO, stream=True) as s:
                s.read()
            return None
        return client.chat.completions.create(model="frontier", messages=HELLO)

    n = 96
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))
    after = report(base, by="tier")
    assert after["total"]["requests"] - before == n
    tiers = {g["key"]: g for g in after["groups"]}
    assert {"local", "frontier"} <= set(tiers)


def test_the_report_from_http_and_from_the_cli_agree(gateway, binary):
    base, ledger, config = gateway
    over_http = report(base, by="tier", since="1d")
    out = subprocess.run([str(binary), "report", "--config", str(config), "--by", "tier", "--since", "1d",
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    from_cli = json.loads(out.stdout)
    drop = lambda r: {k: v for k, v in r.items() if k not in ("since_ms", "until_ms")}  # noqa: E731
    assert drop(from_cli) == drop(over_http)
    t = from_cli["total"]
    assert t["requests"] == t["answered"] + t["refused"] + t["failed"] + t["cancelled"]
    assert 0 < t["local_share"] < 1 and t["baseline_cost"] > t["cost"] > 0
    assert t["savings"] == pytest.approx(t["baseline_cost"] - t["cost"])
    assert t["savings_pct"] == pytest.approx(t["savings"] / t["baseline_cost"])
    assert sum(t["tiers"].values()) == t["answered"]

    table = subprocess.run([str(binary), "report", "--ledger", ledger.target, "--by", "tier"],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "frontier" in table.stdout and "total" in table.stdout, table.stderr
    as_csv = subprocess.run([str(binary), "report", "--ledger", ledger.target, "--by", "day", "--csv"],
                            capture_output=True, text=True, timeout=60)
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert parsed[-1]["group"] == "total" and int(parsed[-1]["requests"]) >= t["requests"]
    assert parsed[0]["group"] == time.strftime("%Y-%m-%d", time.gmtime())

    bad = subprocess.run([str(binary), "report", "--ledger", ledger.target, "--since", "yesterday"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--since" in bad.stderr and "\n" == bad.stderr[-1] and bad.stderr.count("\n") == 1
    r = httpx.get(f"{base}/v1/smallfirst/report", params={"by": "colour"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "by"


def crash_server(binary, tmp_path, upstream, kind, extra=""):
    store = Store(kind, tmp_path)
    config = tmp_path / "smallfirst.toml"
    config.write_text(config_text(upstream, store, extra))
    proc, base = spawn(binary, ["--config", str(config)], tmp_path)
    return proc, base, store


def count(store):
    return store.query(f"SELECT COUNT(*) AS n FROM {store.table}")[0]["n"]


def test_a_clean_stop_keeps_every_record(binary, tmp_path, upstream, store_kind):
    proc, base, ledger = crash_server(binary, tmp_path, upstream, store_kind, "commit_ms = 5000")
    with httpx.Client(timeout=30) as h:
        for _ in range(40):
            assert h.post(f"{base}/v1/chat/completions", json={"model": "frontier", "messages": HELLO}).status_code == 200
    # A commit window of 5 s: nothing need be committed yet; the stop commits it.
    stop(proc, tmp_path)
    assert count(ledger) == 40


def test_kill_9_loses_at_most_the_commit_window(binary, tmp_path, upstream, store_kind):
    window_s = 0.05
    proc, base, ledger = crash_server(binary, tmp_path, upstream, store_kind, "commit_ms = 50")
    done = []  # monotonic times at which an answer was complete
    halt = threading.Event()

    def load():
        with httpx.Client(timeout=30) as h:
            while not halt.is_set():
                try:
                    r = h.post(f"{base}/v1/chat/completions", json={"model": "frontier", "messages": HELLO})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    done.append(time.monotonic())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    killed = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    halt.set()
    for t in threads:
        t.join(timeout=30)
    answered = [t for t in done if t <= killed]
    kept = count(ledger)
    # Answers complete before the last window (and a margin for the commit itself and the
    # scheduler) were committed; what is lost is at most what came in that window.
    margin = 0.2
    recent = sum(1 for t in answered if t > killed - window_s - margin)
    assert len(answered) > 50, "the load was too light to test anything"
    assert kept >= len(answered) - recent, f"{len(answered)} answered, {kept} kept, {recent} in the last window"
    assert kept <= len(done) + len(threads), "records for answers that were never sent"


def test_two_replicas_share_one_postgresql_ledger(binary, tmp_path_factory, upstream):
    store = Store("postgres", tmp_path_factory.mktemp("replicas"))
    servers = []
    for name in ("a", "b"):
        d = tmp_path_factory.mktemp(f"replica-{name}")
        config = d / "smallfirst.toml"
        config.write_text(config_text(upstream, store))
        servers.append((spawn(binary, ["--config", str(config)], d), d))
    try:
        sent = {"a": 7, "b": 5}
        for ((_, base), _), n in zip(servers, sent.values()):
            with httpx.Client(timeout=30) as h:
                for _ in range(n):
                    assert h.post(f"{base}/v1/chat/completions",
                                  json={"model": "frontier", "messages": HELLO}).status_code == 200
        for (_, base), _ in servers:
            report(base)  # each flushes its own
        for (_, base), _ in servers:
            assert report(base)["total"]["requests"] == sum(sent.values()), "a replica sees the other's requests"
        replicas = store.query(f"SELECT replica, COUNT(*) AS n FROM {store.table} GROUP BY replica ORDER BY n DESC")
        assert [r["n"] for r in replicas] == [7, 5]
    finally:
        for (proc, _), d in servers:
            stop(proc, d)
