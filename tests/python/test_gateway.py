"""Upstream tiers: a second `smallfirst serve` on another loopback port plays `frontier`, reached
through the first with the official `openai` SDK; requests and answers pass through."""

import json
import os

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI

from conftest import free_port, model_path, spawn, stop

UPSTREAM_MODEL = "qwen2.5-coder-0.5b-instruct"


def upstream_model_path():
    path = os.environ.get("SMALLFIRST_UPSTREAM_MODEL")
    if not path:
        pytest.skip("SMALLFIRST_UPSTREAM_MODEL is not set (scripts/test.sh sets it)")
    return path


@pytest.fixture(scope="module")
def gateway(binary, tmp_path_factory):
    up_dir = tmp_path_factory.mktemp("upstream")
    up, up_base = spawn(binary, ["--model", upstream_model_path(), "--threads", "1", "--ctx", "1024"], up_dir)
    gw_dir = tmp_path_factory.mktemp("gateway")
    config = gw_dir / "smallfirst.toml"
    dead = free_port()
    config.write_text(f"""
[tiers.local]
backend = "embedded"
model = "{model_path()}"
threads = 1
ctx = 512

[tiers.frontier]
backend = "openai"
model = "{UPSTREAM_MODEL}"
base_url = "{up_base}/v1"
context_window = 1024
capabilities = ["tools", "json_schema"]

[tiers.gone]
backend = "openai"
model = "nothing-here"
base_url = "http://127.0.0.1:{dead}/v1"
context_window = 1024
""")
    gw, gw_base = spawn(binary, ["--config", str(config)], gw_dir)
    yield gw_base
    stop(gw, gw_dir)
    stop(up, up_dir)


@pytest.fixture(scope="module")
def gw_client(gateway):
    return OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=120)


HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


def test_models_lists_tiers(gw_client):
    ids = [m.id for m in gw_client.models.list()]
    assert "frontier" in ids and UPSTREAM_MODEL in ids and "gone" in ids
    assert gw_client.models.retrieve("frontier").owned_by == "smallfirst:frontier"


def test_tier_name_reaches_the_upstream(gateway, gw_client):
    r = gw_client.chat.completions.with_raw_response.create(model="frontier", messages=HELLO, max_tokens=8,
                                                             temperature=0)
    assert r.headers["x-smallfirst-tier"] == "frontier"
    completion = r.parse()
    assert completion.model == UPSTREAM_MODEL
    assert completion.choices[0].message.content
    local = httpx.post(f"{gateway}/v1/chat/completions",
                       json={"model": "local", "messages": HELLO, "max_tokens": 4})
    assert local.headers["x-smallfirst-tier"] == "local"


def test_the_upstream_model_name_reaches_it_too_and_streams(gw_client):
    kwargs = dict(model=UPSTREAM_MODEL, messages=HELLO, max_tokens=8, temperature=0)
    plain = gw_client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(gw_client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
    assert chunks[-1].usage.completion_tokens >= 1


def test_structured_output_and_tools_pass_through(gw_client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"],
              "additionalProperties": False}
    r = gw_client.chat.completions.create(
        model="frontier", messages=[{"role": "user", "content": "Name a city in France."}], temperature=0,
        max_tokens=24, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema,
                                                                                "strict": True}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": schema, "strict": True}}
    r = gw_client.chat.completions.create(model="frontier", messages=[{"role": "user", "content": "Weather in Nice?"}],
                                          tools=[tool], tool_choice="required", parallel_tool_calls=False,
                                          temperature=0, max_tokens=40)
    assert r.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(r.choices[0].message.tool_calls[0].function.arguments), schema)


def test_logprobs_pass_through(gw_client):
    r = gw_client.chat.completions.create(model="frontier", messages=HELLO, max_tokens=4, temperature=0,
                                          logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert "".join(t.token for t in content) == r.choices[0].message.content


def test_upstream_errors_keep_their_shape_and_status(gw_client):
    with pytest.raises(openai.BadRequestError) as e:
        gw_client.chat.completions.create(model="frontier", messages=HELLO, temperature=9)
    assert e.value.body["param"] == "temperature"


def test_an_unreachable_tier_is_a_502_in_openai_shape(gateway, gw_client):
    r = httpx.post(f"{gateway}/v1/chat/completions", json={"model": "gone", "messages": HELLO})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unreachable"
    assert r.headers.get("x-smallfirst-tier") is None or r.headers["x-smallfirst-tier"] == "gone"
    # The gateway keeps serving.
    ok = gw_client.chat.completions.create(model="local", messages=HELLO, max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_unknown_model_is_still_404(gw_client):
    with pytest.raises(openai.NotFoundError):
        gw_client.chat.completions.create(model="no-such-tier", messages=HELLO)
