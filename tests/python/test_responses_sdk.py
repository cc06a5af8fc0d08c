"""The official `openai` SDK's Responses API against `POST /v1/responses`: `create`, `stream`
and `parse` (pydantic) on the embedded tier, and through an OpenAI-compatible tier (the
session's own server as upstream)."""

import json
from typing import Literal

import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from conftest import frontier_tier, spawn_with_config, stop

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a place",
           "parameters": {"type": "object", "properties": {"location": {"type": "string", "maxLength": 24}},
                          "required": ["location"], "additionalProperties": False}, "strict": True}


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]


@pytest.fixture(scope="module")
def gateway(binary, tmp_path_factory, server):
    log_dir = tmp_path_factory.mktemp("responses-gateway")
    proc, base = spawn_with_config(binary, log_dir, frontier_tier(server))
    yield OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    stop(proc, log_dir)


@pytest.fixture(params=["local", "frontier"])
def target(request, client, gateway):
    """The embedded tier on the session's server, or the tier behind the gateway."""
    return (client, "local") if request.param == "local" else (gateway, "frontier")


def test_create_text_and_items(target):
    c, model = target
    raw = c.responses.with_raw_response.create(model=model, instructions="You are terse.",
                                               input="Say hello.", max_output_tokens=12)
    assert raw.headers["x-smallfirst-tier"] == model
    r = raw.parse()
    assert r.object == "response" and r.id.startswith("resp_") and r.output_text
    assert r.status in ("completed", "incomplete")
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 12
    r = c.responses.create(model=model, max_output_tokens=8, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Blue."}]},
        {"role": "user", "content": "Another."}])
    assert r.output[0].type == "message" and r.output_text


def test_stream_helper_gives_the_final_response(target):
    """A schema-constrained answer ends by construction (a free-text one may run to the limit),
    so the stream must close with `response.completed` and the SDK must assemble it."""
    c, model = target
    deltas, kinds = [], []
    with c.responses.stream(model=model, input="The product broke after a day. Sentiment?",
                            text_format=Sentiment, max_output_tokens=40) as s:
        for event in s:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_item.done" in kinds
    assert final.output_text == "".join(deltas) and final.usage.output_tokens > 0
    assert isinstance(final.output_parsed, Sentiment)


def test_stream_cut_by_the_limit_ends_incomplete(target):
    c, model = target
    events = list(c.responses.create(model=model, input="Tell me a long story.",
                                     max_output_tokens=3, stream=True))
    last = events[-1]
    assert events[0].type == "response.created" and last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.usage.output_tokens == 3


def test_parse_into_a_pydantic_model(target):
    c, model = target
    r = c.responses.parse(model=model, input="The product broke after a day. Sentiment?",
                          text_format=Sentiment, max_output_tokens=40)
    assert isinstance(r.output_parsed, Sentiment)


def test_function_call_round_trip(target):
    c, model = target
    question = {"role": "user", "content": "What is the weather in Paris?"}
    r = c.responses.create(model=model, input=[question], tools=[WEATHER],
                           tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=120)
    call = next(o for o in r.output if o.type == "function_call")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["location"], str)
    r = c.responses.create(model=model, tools=[WEATHER], max_output_tokens=20, input=[
        question, {"type": "function_call", "call_id": call.call_id, "name": call.name,
                   "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees"}])
    assert r.output


def test_stateless_and_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="local", input="x", previous_response_id="resp_123")
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="local", input=[{"type": "reasoning", "summary": []}])
    assert e.value.body["param"] == "input[0].type"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
