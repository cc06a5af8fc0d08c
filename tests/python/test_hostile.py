"""Hostile input against a live server: every request of hostile.py gets its 4xx in OpenAI's
shape, quickly, and the server keeps serving; deadlines and caps on connections; API keys;
privacy hints that fail closed; answers the token budget cut say so; a model file whose template
grows without bound; bounded, escaped client text in headers and logs."""

import json
import os
import socket
import struct
import subprocess
import time

import httpx
import pytest
from openai import OpenAI

from conftest import model_path, spawn, stop
from fault_upstream import Upstream
from hostile import cases

HELLO = [{"role": "user", "content": "Say hello."}]


def send(base, request, timeout=60):
    method, path, headers, body = request
    return httpx.request(method, f"{base}{path}", headers=headers, content=body, timeout=timeout)


def assert_shape(r):
    v = r.json()
    e = v["error"]
    assert isinstance(e["message"], str) and e["message"], v
    assert "\n" not in e["message"] and len(e["message"]) <= 1100, e["message"][:200]
    assert isinstance(e["type"], str), v
    assert "param" in e and "code" in e, v
    return e


def normal(base):
    r = httpx.post(f"{base}/v1/chat/completions", json={"model": "local", "messages": HELLO, "max_tokens": 4},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r


@pytest.mark.parametrize("name,request_,status,code", cases(), ids=[c[0] for c in cases()])
def test_every_hostile_request_is_refused_in_shape_and_the_server_goes_on(server, name, request_, status, code):
    start = time.monotonic()
    r = send(server, request_)
    took = time.monotonic() - start
    assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
    e = assert_shape(r)
    if code is not None:
        assert e["code"] == code, f"{name}: {e}"
    # The grammar library's state never reaches a client.
    assert "non-verbose" not in e["message"] and "Parser Error" not in e["message"], e["message"]
    # A hang detector, not a benchmark (BENCHMARKS.md has the times).
    assert took < 10, f"{name} took {took:.1f} s to refuse"
    assert r.headers.get("x-request-id"), r.headers
    for h in ("x-smallfirst-reason", "x-smallfirst-tier"):
        if h in r.headers:
            assert len(r.headers[h]) <= 300 and "\r" not in r.headers[h], r.headers[h][:100]
    normal(server)


def test_client_text_is_escaped_in_the_log(server, tmp_path_factory):
    r = httpx.post(f"{server}/v1/chat/completions", timeout=30, json={
        "model": "x\r\n2026-01-01T00:00:00Z  INFO forged: yes", "messages": HELLO})
    assert r.status_code == 404
    log_dir = [p for p in tmp_path_factory.getbasetemp().iterdir() if p.name.startswith("server")][0]
    text = (log_dir / "serve.log").read_text(errors="replace")
    assert "\nforged" not in text and "\n2026-01-01T00:00:00Z  INFO forged" not in text
    assert "forged: yes" in text, "the line is there, escaped"


def test_whole_number_floats_are_integers_and_request_ids_are_kept(server):
    r = httpx.post(f"{server}/v1/chat/completions", timeout=60, headers={"x-request-id": "trace-42"},
                   json={"model": "local", "messages": HELLO, "max_tokens": 4.0, "seed": 42.0})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "trace-42"
    assert r.json()["usage"]["completion_tokens"] <= 4
    r = httpx.post(f"{server}/v1/chat/completions", timeout=60, json={"model": "local", "messages": [
        {"role": {}, "content": "x"}]})
    assert r.json()["error"]["param"] == "messages[0].role"


PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
ASK = [{"role": "user", "content": "John Smith is 31 years old. Give his name and age."}]


def test_a_structured_answer_the_budget_cut_says_length(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "strict": True, "schema": PERSON}}
    free = client.chat.completions.create(model="local", messages=ASK, response_format=fmt, temperature=0,
                                          max_tokens=200)
    assert free.choices[0].finish_reason == "stop"
    n = free.usage.completion_tokens
    for budget in range(max(4, n - 10), n + 3):
        r = client.chat.completions.create(model="local", messages=ASK, response_format=fmt, temperature=0,
                                           max_tokens=budget)
        c = r.choices[0]
        if c.finish_reason == "stop":
            # A normal finish is the answer the model gives with room to spare, never a cut one.
            assert c.message.content == free.choices[0].message.content, (budget, n, c.message.content)
        else:
            assert c.finish_reason == "length", (budget, c.finish_reason)
            assert budget < n, (budget, n)


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}}


def test_a_tool_call_the_budget_cut_says_length_and_one_that_fits_is_returned(client):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    kw = dict(model="local", messages=ask, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
              temperature=0)
    free = client.chat.completions.create(max_tokens=200, **kw)
    assert free.choices[0].finish_reason == "tool_calls"
    n = free.usage.completion_tokens
    exact = client.chat.completions.create(max_tokens=n, **kw)
    assert exact.choices[0].finish_reason == "tool_calls", exact
    assert exact.choices[0].message.tool_calls[0].function.arguments == \
        free.choices[0].message.tool_calls[0].function.arguments
    short = client.chat.completions.create(max_tokens=n - 1, **kw)
    assert short.choices[0].finish_reason == "length"
    named = client.chat.completions.create(max_tokens=200, **{**kw, "parallel_tool_calls": True,
                                                              "tool_choice": {"type": "function",
                                                                              "function": {"name": "get_weather"}}})
    assert len(named.choices[0].message.tool_calls) == 1, "a named function is one call"


# --- A server with remote tiers: privacy must keep requests on the machine. -------------------

@pytest.fixture(scope="module")
def upstream():
    up = Upstream({"remote": ["ok"]})
    yield up
    up.close()


@pytest.fixture(scope="module")
def gateway(binary, tmp_path_factory, upstream):
    log_dir = tmp_path_factory.mktemp("private")
    config = log_dir / "smallfirst.toml"
    config.write_text(f'[tiers.local]\nbackend = "embedded"\nmodel = "{model_path()}"\nthreads = 1\nctx = 512\n'
                      f'\n[tiers.remote]\nbackend = "openai"\nmodel = "mock-remote"\n'
                      f'base_url = "{upstream.base("remote")}"\ncontext_window = 4096\n')
    proc, base = spawn(binary, ["--config", str(config)], log_dir)
    yield base
    stop(proc, log_dir)


@pytest.mark.parametrize("headers,metadata", [
    ([("x-smallfirst-privacy", "any"), ("x-smallfirst-privacy", "local-only")], None),
    ([("x-smallfirst-privacy", "local-only"), ("x-smallfirst-privacy", "any")], None),
    ([("x-smallfirst-privacy", "any, local-only")], None),
    ([("x-smallfirst-privacy", "any")], {"privacy": "local-only"}),
    ([], {"privacy": "LOCAL-ONLY"}),
], ids=["any-then-local", "local-then-any", "list", "header-vs-metadata", "metadata"])
def test_a_local_only_hint_anywhere_keeps_the_request_local(gateway, upstream, headers, metadata):
    before = len(upstream.requests("remote"))
    body = {"model": "remote", "messages": HELLO, "max_tokens": 4}
    if metadata:
        body["metadata"] = metadata
    r = httpx.post(f"{gateway}/v1/chat/completions", headers=[("content-type", "application/json")] + headers,
                   content=json.dumps(body), timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "local_only"
    assert len(upstream.requests("remote")) == before, "nothing left the machine"
    # Routed the same way, it is answered here.
    body["model"] = "auto"
    r = httpx.post(f"{gateway}/v1/chat/completions", headers=[("content-type", "application/json")] + headers,
                   content=json.dumps(body), timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-smallfirst-tier"] == "local"
    assert len(upstream.requests("remote")) == before
    ok = httpx.post(f"{gateway}/v1/chat/completions", json={"model": "remote", "messages": HELLO}, timeout=30)
    assert ok.status_code == 200 and len(upstream.requests("remote")) == before + 1


def test_a_repeated_metadata_privacy_key_keeps_the_request_local(gateway, upstream):
    before = len(upstream.requests("remote"))
    for model in ("remote", "auto"):
        body = (b'{"model": "%s", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, '
                b'"metadata": {"privacy": "local-only", "privacy": "any"}}' % model.encode())
        r = httpx.post(f"{gateway}/v1/chat/completions", content=body, timeout=60,
                       headers={"content-type": "application/json"})
        if model == "remote":
            assert r.status_code == 400 and r.json()["error"]["code"] == "local_only", r.text
        else:
            assert r.status_code == 200 and r.headers["x-smallfirst-tier"] == "local", r.text
    assert len(upstream.requests("remote")) == before, "nothing left the machine"


# --- Deadlines and the connection cap. ----------------------------------------------------------

@pytest.fixture(scope="module")
def strict_server(binary, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("deadlines")
    config = log_dir / "smallfirst.toml"
    config.write_text(f'[server]\nheader_timeout = 1\nbody_timeout = 1\nidle_timeout = 2\nmax_connections = 6\n'
                      f'\n[tiers.local]\nbackend = "embedded"\nmodel = "{model_path()}"\nthreads = 1\nctx = 512\n')
    proc, base = spawn(binary, ["--config", str(config)], log_dir)
    yield base
    stop(proc, log_dir)


def address(base):
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def closed_within(sock, limit):
    """Seconds until the server closes `sock` (reading what it sends), or None past `limit`."""
    sock.settimeout(0.1)
    start = time.monotonic()
    got = b""
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start, got
        if not chunk:
            return time.monotonic() - start, got
        got += chunk
    return None, got


def test_a_head_trickled_a_byte_at_a_time_is_cut_off(strict_server):
    s = socket.create_connection(address(strict_server))
    start = time.monotonic()
    for b in b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nx-padding: " + b"a" * 100:
        try:
            s.send(bytes([b]))
        except OSError:
            break
        time.sleep(0.05)
        if time.monotonic() - start > 4:
            break
    took, _ = closed_within(s, 3)
    assert took is not None and time.monotonic() - start < 4, "held past the 1 s head deadline"
    normal(strict_server)


def test_a_body_that_never_ends_gets_408(strict_server):
    s = socket.create_connection(address(strict_server))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
              b"transfer-encoding: chunked\r\n\r\n1\r\n{\r\n")
    start = time.monotonic()
    for _ in range(20):
        try:
            s.sendall(b"1\r\n \r\n")
        except OSError:
            break
        time.sleep(0.1)
    took, got = closed_within(s, 4)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"body_timeout" in got
    assert time.monotonic() - start < 4
    normal(strict_server)


def test_idle_connections_are_closed_and_the_cap_holds(strict_server):
    idle = socket.create_connection(address(strict_server))
    idle.sendall(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
    took, got = closed_within(idle, 5)
    assert b"200 OK" in got and took is not None and 1.5 <= took < 4, (took, got[:100])
    held = []
    for _ in range(6):
        c = socket.create_connection(address(strict_server))
        c.sendall(b"GET /health HTTP/1.1\r\n")
        held.append(c)
    time.sleep(0.2)
    extra = socket.create_connection(address(strict_server))
    took, got = closed_within(extra, 0.8)
    assert took is not None and got == b"", "the seventh connection is closed at once"
    for c in held:
        c.close()
    time.sleep(0.3)
    normal(strict_server)


# --- API keys, and what binding beyond loopback asks. -------------------------------------------

@pytest.fixture(scope="module")
def keyed_server(binary, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("keys")
    config = log_dir / "smallfirst.toml"
    config.write_text(f'[server]\napi_keys_env = "SMALLFIRST_TEST_KEYS"\n'
                      f'\n[tiers.local]\nbackend = "embedded"\nmodel = "{model_path()}"\nthreads = 1\nctx = 512\n')
    os.environ["SMALLFIRST_TEST_KEYS"] = "ci:sk-test-aaaaaaaa,ops:sk-test-bbbbbbbb"
    try:
        proc, base = spawn(binary, ["--config", str(config)], log_dir)
    finally:
        del os.environ["SMALLFIRST_TEST_KEYS"]
    yield base, log_dir
    stop(proc, log_dir)


def test_keys_are_required_and_named(keyed_server):
    base, log_dir = keyed_server
    for headers in [{}, {"authorization": "Bearer sk-wrong-000"}, {"x-api-key": "nope-nope"}]:
        r = httpx.post(f"{base}/v1/chat/completions", json={"model": "local", "messages": HELLO}, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    client = OpenAI(base_url=f"{base}/v1", api_key="sk-test-aaaaaaaa", max_retries=0)
    assert client.chat.completions.create(model="local", messages=HELLO, max_tokens=3).choices
    r = httpx.get(f"{base}/v1/models", headers={"x-api-key": "sk-test-bbbbbbbb"})
    assert r.status_code == 200
    bad = OpenAI(base_url=f"{base}/v1", api_key="sk-test-cccccccc", max_retries=0)
    with pytest.raises(Exception) as e:
        bad.models.list()
    assert getattr(e.value, "status_code", None) == 401
    assert 'key=ci' in (log_dir / "serve.log").read_text()


def test_a_non_loopback_address_without_keys_does_not_start(binary):
    r = subprocess.run([str(binary), "serve", "--model", model_path(), "--host", "0.0.0.0", "--port", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if "error" in l]
    assert lines and "--insecure-no-auth" in lines[-1], r.stderr[-500:]


# --- A model whose template grows without bound. ----------------------------------------------

def with_template(src, dst, template):
    """A copy of the GGUF at `src` whose chat template is `template`: the header rewritten, the
    tensor data copied as it is (its offsets are relative to the data section)."""
    with open(src, "rb") as f:
        data = f.read()
    at = 0

    def take(n):
        nonlocal at
        b = data[at:at + n]
        at += n
        return b

    def u32():
        return struct.unpack("<I", take(4))[0]

    def u64():
        return struct.unpack("<Q", take(8))[0]

    def skip_value(t):
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if t == 8:
            take(u64())
        elif t == 9:
            inner, n = u32(), u64()
            for _ in range(n):
                skip_value(inner)
        else:
            take(sizes[t])

    magic, version = take(4), u32()
    n_tensors, n_kv = u64(), u64()
    out = bytearray(magic + struct.pack("<IQQ", version, n_tensors, n_kv))
    alignment = 32
    for _ in range(n_kv):
        start = at
        key = take(u64()).decode()
        t = u32()
        value_start = at
        skip_value(t)
        if key == "tokenizer.chat_template":
            body = template.encode()
            out += struct.pack("<Q", len(key)) + key.encode() + struct.pack("<IQ", 8, len(body)) + body
        else:
            if key == "general.alignment":
                alignment = struct.unpack("<I", data[value_start:value_start + 4])[0]
            out += data[start:at]
    tensors_start = at
    for _ in range(n_tensors):
        take(u64())
        dims = u32()
        take(8 * dims + 4 + 8)
    out += data[tensors_start:at]
    data_start = at + (-at) % alignment
    out += b"\0" * ((-len(out)) % alignment)
    out += data[data_start:]
    with open(dst, "wb") as f:
        f.write(out)


# The scan's static reading cannot see every way to grow a value; the render's bound does.
JOIN_DOUBLING = ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = [ns.s, ns.s]|join %}"
                 "{% endfor %}{{ ns.s }}{% for m in messages %}{{ m.content }}{% endfor %}")
CONCAT_DOUBLING = ("{% set ns = namespace(s='a') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}"
                   "{% endfor %}{{ ns.s }}")


def test_a_template_that_doubles_a_string_is_flagged_refused_and_bounded(binary, tmp_path):
    doubling = tmp_path / "doubling.gguf"
    with_template(model_path(), doubling, CONCAT_DOUBLING)
    r = subprocess.run([str(binary), "scan", str(doubling), "--json"], capture_output=True, text=True)
    findings = json.loads(r.stdout)["files"][0]["findings"]
    assert any(f["rule"] == "template.growth" and f["severity"] == "critical" for f in findings), findings
    r = subprocess.run([str(binary), "serve", "--model", str(doubling), "--port", "1"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "template.growth" in r.stderr, r.stderr[-400:]

    sneaky = tmp_path / "join.gguf"
    with_template(model_path(), sneaky, JOIN_DOUBLING)
    proc, base = spawn(binary, ["--model", str(sneaky), "--threads", "1", "--ctx", "512"], tmp_path)
    try:
        start = time.monotonic()
        r = httpx.post(f"{base}/v1/chat/completions", json={"model": "local", "messages": HELLO}, timeout=60)
        assert r.status_code == 400, r.text
        assert "chat template was stopped" in r.json()["error"]["message"]
        assert time.monotonic() - start < 10
        assert httpx.get(f"{base}/health").status_code == 200, "the server is still up"
    finally:
        stop(proc, tmp_path)
