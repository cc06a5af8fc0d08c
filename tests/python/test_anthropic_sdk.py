"""The official `anthropic` SDK against `POST /v1/messages`: on the embedded tier, through an
OpenAI-compatible tier (the session's own server, a real smallfirst, as upstream), and passed
through untouched to an Anthropic tier (the loopback fixture upstream of test_providers)."""

import json
import os

import anthropic
import httpx
import pytest

from conftest import frontier_tier, spawn_with_config, stop
from fault_upstream import Upstream

WEATHER = {"name": "get_weather", "description": "Weather in a place",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string", "maxLength": 24}},
                            "required": ["location"]}}


def sdk(base):
    return anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local(server):
    return sdk(server)


def test_create_on_the_embedded_tier(local):
    r = local.messages.with_raw_response.create(
        model="local", max_tokens=12, system="You are terse.",
        messages=[{"role": "user", "content": "Say hello."}])
    assert r.headers["x-smallfirst-tier"] == "local"
    m = r.parse()
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens > 0 and 0 < m.usage.output_tokens <= 12


def test_multi_turn_and_stop_sequences(local):
    m = local.messages.create(
        model="local", max_tokens=8, stop_sequences=["\n"],
        messages=[{"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
                  {"role": "user", "content": [{"type": "text", "text": "Another one."}]}])
    assert m.content and "\n" not in m.content[0].text


def test_stream_helper_gives_the_events_and_the_final_message(local):
    kinds = []
    with local.messages.stream(model="local", max_tokens=10,
                               messages=[{"role": "user", "content": "Count to three."}]) as s:
        for event in s:
            kinds.append(event.type)
        final = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    for k in ("content_block_start", "content_block_delta", "content_block_stop", "message_delta"):
        assert k in kinds, kinds
    assert final.content[0].text and final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_tools_round_trip(local):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    m = local.messages.create(model="local", max_tokens=120, tools=[WEATHER],
                              tool_choice={"type": "tool", "name": "get_weather"}, messages=[question])
    assert m.stop_reason == "tool_use", m
    call = next(b for b in m.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input["location"], str)
    follow = [question, {"role": "assistant", "content": [b.model_dump() for b in m.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                            "content": "18 degrees and sunny"}]}]
    again = local.messages.create(model="local", max_tokens=20, tools=[WEATHER], messages=follow)
    assert again.type == "message" and again.content


def test_count_tokens(local):
    short = local.messages.count_tokens(model="local", messages=[{"role": "user", "content": "Hi"}])
    long = local.messages.count_tokens(model="local", system="You answer questions about weather.",
                                       messages=[{"role": "user", "content": "Hi " * 50}], tools=[WEATHER])
    assert 0 < short.input_tokens < long.input_tokens


def test_errors_have_anthropics_shape(local, server):
    with pytest.raises(anthropic.NotFoundError) as e:
        local.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        local.messages.create(model="local", max_tokens=5,
                              messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t",
                                                                      "name": "f", "input": {}}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content" in e.value.body["error"]["message"]
    # The guard's refusals (not JSON) and a missing `max_tokens` are shaped the same way.
    r = httpx.post(f"{server}/v1/messages", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["type"] == "error", r.text
    r = httpx.post(f"{server}/v1/messages", json={"model": "local", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]
    # A parameter the embedded tier does not know is refused by name, not ignored.
    with pytest.raises(anthropic.BadRequestError) as e:
        local.messages.create(model="local", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                              extra_body={"container": "c1"})
    assert "container" in e.value.body["error"]["message"]


@pytest.fixture(scope="module")
def claude_upstream():
    up = Upstream({"anthropic": ["anthropic"], "gemini": ["gemini"]})
    yield up
    up.close()


@pytest.fixture(scope="module")
def gateway(binary, tmp_path_factory, server, claude_upstream):
    """A smallfirst with no model of its own: `frontier` is the session's server (OpenAI
    protocol), `claude` the Anthropic fixture upstream."""
    log_dir = tmp_path_factory.mktemp("messages-gateway")
    os.environ["SMALLFIRST_TEST_ANTHROPIC_KEY"] = "sk-ant-test-key"
    proc, base = spawn_with_config(binary, log_dir, frontier_tier(server) + f"""
[tiers.claude]
backend = "anthropic"
model = "claude-sonnet-4-5"
base_url = "{claude_upstream.base("anthropic")}"
api_key_env = "SMALLFIRST_TEST_ANTHROPIC_KEY"
context_window = 200000

[tiers.gemini]
backend = "gemini"
model = "gemini-2.5-flash"
base_url = "{claude_upstream.base("gemini")}beta"
context_window = 1000000
""")
    yield base
    stop(proc, log_dir)


def test_through_an_openai_compatible_tier(gateway):
    client = sdk(gateway)
    r = client.messages.with_raw_response.create(
        model="frontier", max_tokens=10, messages=[{"role": "user", "content": "Say hello."}])
    assert r.headers["x-smallfirst-tier"] == "frontier"
    m = r.parse()
    assert m.content[0].type == "text" and m.usage.output_tokens > 0
    with client.messages.stream(model="frontier", max_tokens=10,
                                messages=[{"role": "user", "content": "Count to three."}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].text == text
    m = client.messages.create(model="frontier", max_tokens=120, tools=[WEATHER],
                               tool_choice={"type": "any", "disable_parallel_tool_use": True},
                               messages=[{"role": "user", "content": "Weather in Oslo?"}])
    call = next(b for b in m.content if b.type == "tool_use")
    assert m.stop_reason == "tool_use" and call.name == "get_weather"


def test_a_local_only_request_does_not_leave_the_machine(gateway):
    client = sdk(gateway)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                               extra_headers={"x-smallfirst-privacy": "local-only"})
    assert "local-only" in e.value.body["error"]["message"]


def test_an_anthropic_tier_gets_the_request_untouched(gateway, claude_upstream):
    # Spacing and key order a re-serializing gateway would change.
    system = b'[{"type": "text",  "text": "Long instructions.", "cache_control": {"type":"ephemeral", "ttl": "5m"}}]'
    body = (b'{"model": "claude", "max_tokens": 50, "system": ' + system +
            b', "thinking": {"type": "enabled", "budget_tokens": 1024},'
            b' "messages": [{"role": "user", "content": "Hello"}]}')
    r = httpx.post(f"{gateway}/v1/messages", content=body,
                   headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
                            "anthropic-beta": "prompt-caching-2024-07-31"})
    assert r.status_code == 200, r.text
    assert r.headers["x-smallfirst-tier"] == "claude"
    assert r.json()["content"][0]["text"] == "Hi! My name is Claude."
    sent = claude_upstream.last_raw("anthropic")
    assert system in sent, sent
    assert b'"thinking":{"type": "enabled", "budget_tokens": 1024}' in sent, "each member's value as sent"
    assert json.loads(sent)["model"] == "claude-sonnet-4-5"
    _, headers, _ = claude_upstream.last("anthropic")
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert headers["x-api-key"] == "sk-ant-test-key"


def test_smallfirst_hints_do_not_reach_the_anthropic_tier(gateway, claude_upstream):
    client = sdk(gateway)
    m = client.messages.create(model="claude", max_tokens=20, messages=[{"role": "user", "content": "Hello"}],
                               metadata={"user_id": "u-1", "privacy": "any", "task": "chat"})
    assert m.content[0].text
    sent = json.loads(claude_upstream.last_raw("anthropic"))
    assert sent["metadata"] == {"user_id": "u-1"}, sent


def test_an_anthropic_stream_passes_through(gateway):
    client = sdk(gateway)
    with client.messages.stream(model="claude", max_tokens=50,
                                messages=[{"role": "user", "content": "Hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].text == text
    assert final.usage.input_tokens == 25


def test_through_a_gemini_tier(gateway, claude_upstream):
    """Anthropic in, Gemini behind: translated both ways, through OpenAI's shape."""
    client = sdk(gateway)
    r = client.messages.with_raw_response.create(
        model="gemini", max_tokens=50, system="You are terse.", messages=[{"role": "user", "content": "Hello"}])
    assert r.headers["x-smallfirst-tier"] == "gemini"
    m = r.parse()
    assert m.content[0].type == "text" and m.content[0].text and m.usage.output_tokens > 0
    _, _, body = claude_upstream.last("gemini")
    assert body["systemInstruction"]["parts"][0]["text"] == "You are terse."
    with client.messages.stream(model="gemini", max_tokens=50,
                                messages=[{"role": "user", "content": "Hello"}]) as s:
        text = "".join(s.text_stream)
    assert text


def test_unknown_chat_fields_go_on_to_a_remote_tier(gateway):
    """The gateway does not refuse what it does not know for a remote tier: the tier decides.
    (This tier is another smallfirst, whose embedded model refuses it, by name.)"""
    body = {"model": "frontier", "max_tokens": 4,
            "messages": [{"role": "assistant", "content": "x", "reasoning_content": "r"},
                         {"role": "user", "content": "hi"}]}
    r = httpx.post(f"{gateway}/v1/chat/completions", json=body)
    assert r.headers["x-smallfirst-tier"] == "frontier"
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].reasoning_content", r.text
