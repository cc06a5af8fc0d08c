"""Anthropic and Gemini tiers through the gateway, with the official `openai` SDK as the client.
No provider can be reached from here, so a loopback upstream (fault_upstream.py) answers in each
provider's documented wire format, replaying the translation fixtures, and records what it got."""

import json
import os

import openai
import pytest
from openai import OpenAI

from conftest import spawn, stop
from fault_upstream import Upstream

KEY = "sk-ant-test-key"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a place",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


@pytest.fixture(scope="module")
def upstream():
    up = Upstream({"anthropic": ["anthropic"], "overloaded": ["anthropic_overloaded", "anthropic"],
                   "midfail": ["anthropic_error_event", "anthropic"], "gemini": ["gemini"],
                   "exhausted": ["gemini_exhausted"]})
    yield up
    up.close()


@pytest.fixture(scope="module")
def client(binary, tmp_path_factory, upstream):
    log_dir = tmp_path_factory.mktemp("providers")
    config = log_dir / "smallfirst.toml"
    retry = 'retry = { attempts = 2, backoff = 0.05 }'
    config.write_text(f"""
[tiers.claude]
backend = "anthropic"
model = "claude-sonnet-4-5"
base_url = "{upstream.base("anthropic")}"
api_key_env = "SMALLFIRST_TEST_ANTHROPIC_KEY"
context_window = 200000

[tiers.claude-busy]
backend = "anthropic"
model = "claude-busy"
base_url = "{upstream.base("overloaded")}"
context_window = 200000
{retry}

[tiers.claude-midfail]
backend = "anthropic"
model = "claude-midfail"
base_url = "{upstream.base("midfail")}"
context_window = 200000
{retry}

[tiers.gemini]
backend = "gemini"
model = "gemini-2.5-flash"
base_url = "{upstream.base("gemini")}beta"
api_key_env = "SMALLFIRST_TEST_GEMINI_KEY"
context_window = 1000000

[tiers.gemini-quota]
backend = "gemini"
model = "gemini-quota"
base_url = "{upstream.base("exhausted")}beta"
context_window = 1000000
retry = {{ attempts = 1 }}
""")
    os.environ["SMALLFIRST_TEST_ANTHROPIC_KEY"] = KEY
    os.environ["SMALLFIRST_TEST_GEMINI_KEY"] = "gm-test-key"
    proc, base = spawn(binary, ["--config", str(config)], log_dir)
    yield OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
    stop(proc, log_dir)


def test_anthropic_chat(client, upstream):
    r = client.chat.completions.with_raw_response.create(model="claude", messages=MESSAGES, max_tokens=50)
    assert r.headers["x-smallfirst-tier"] == "claude"
    c = r.parse()
    assert c.choices[0].message.content == "Hi! My name is Claude."
    assert c.choices[0].finish_reason == "stop"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (10, 12)
    path, headers, body = upstream.last("anthropic")
    assert path == "/anthropic/v1/messages"
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert body["model"] == "claude-sonnet-4-5" and body["max_tokens"] == 50
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": "user", "content": "Hello"}]


def test_anthropic_stream_with_usage(client):
    chunks = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.prompt_tokens == 25 and chunks[-1].usage.completion_tokens == 15


def test_anthropic_tool_use_and_cache_control(client, upstream):
    messages = [{"role": "system", "content": [{"type": "text", "text": "Long instructions.",
                                                "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "Weather in San Francisco?"}]
    c = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER])
    call = c.choices[0].message.tool_calls[0]
    assert c.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    _, _, body = upstream.last("anthropic")
    assert body["system"] == [{"type": "text", "text": "Long instructions.", "cache_control": {"type": "ephemeral"}}]
    assert body["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
    # The tool's answer goes back as a tool_result in the next turn.
    follow = messages + [c.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": "15 degrees"}]
    client.chat.completions.create(model="claude", messages=follow, tools=[WEATHER])
    _, _, body = upstream.last("anthropic")
    assert body["messages"][-1]["content"][0] == {"type": "tool_result", "tool_use_id": call.id,
                                                  "content": "15 degrees"}


def test_anthropic_overloaded_is_retried(client, upstream):
    c = client.chat.completions.create(model="claude-busy", messages=MESSAGES)
    assert c.choices[0].message.content == "Hi! My name is Claude."
    assert len(upstream.requests("overloaded")) == 2


def test_an_error_event_before_any_content_is_a_failed_try_and_retried(client, upstream):
    chunks = list(client.chat.completions.create(model="claude-midfail", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert len(upstream.requests("midfail")) == 2


def test_an_unsupported_parameter_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude", messages=MESSAGES, n=2)
    assert e.value.body["param"] == "n"


def test_gemini_chat_stream_and_function_calls(client, upstream):
    c = client.chat.completions.create(model="gemini", messages=MESSAGES)
    path, headers, body = upstream.last("gemini")
    assert path == "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    assert headers["x-goog-api-key"] == "gm-test-key"
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]
    assert c.choices[0].message.content
    chunks = list(client.chat.completions.create(model="gemini", messages=MESSAGES, stream=True))
    path, _, _ = upstream.last("gemini")
    assert path == "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == \
        "AI learns patterns from data to make predictions."
    c = client.chat.completions.create(model="gemini", messages=MESSAGES, tools=[WEATHER])
    calls = c.choices[0].message.tool_calls
    assert [json.loads(t.function.arguments)["location"] for t in calls] == ["London", "Paris"]
    assert len({t.id for t in calls}) == 2
    assert c.choices[0].finish_reason == "tool_calls"


def test_a_gemini_error_keeps_its_status_in_openai_shape(client):
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gemini-quota", messages=MESSAGES)
    assert e.value.status_code == 429
    assert e.value.body["message"]
