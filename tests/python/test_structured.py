"""Structured outputs and tool calls through the official `openai` SDK, on the real 135M model."""

import json
from enum import Enum
from typing import List, Optional

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from conftest import MODEL_ID


class Mood(str, Enum):
    happy = "happy"
    sad = "sad"
    neutral = "neutral"


class Pet(BaseModel):
    kind: str = Field(max_length=20)
    name: str = Field(max_length=20)


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=130)
    mood: Mood
    pets: List[Pet] = Field(max_length=2)
    nickname: Optional[str] = Field(max_length=20)


def test_parse_returns_a_pydantic_object(client):
    r = client.chat.completions.parse(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Describe Ana, 31, who owns a cat called Tom."}],
        response_format=Person,
        temperature=0,
        max_tokens=160,
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop", msg.content
    assert isinstance(msg.parsed, Person), msg.content
    assert 0 <= msg.parsed.age <= 130


def test_json_schema_validates_when_sampled(client):
    schema = {
        "type": "object",
        "properties": {
            "label": {"enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "keywords": {"type": "array", "items": {"type": "string", "maxLength": 15}, "maxItems": 3},
        },
        "required": ["label", "score", "keywords"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "sentiment", "schema": schema, "strict": True}}
    for seed in range(3):
        r = client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": "Classify: 'The food was great but the service was slow.'"}],
            response_format=fmt, temperature=1.0, seed=seed, max_tokens=80,
        )
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_json_object(client):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Give facts about Mars as JSON."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=64,
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_streamed_json_schema_is_the_same_json(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "strict": True, "schema": Person.model_json_schema()}}
    kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Invent a person."}],
                  response_format=fmt, temperature=0, max_tokens=160)
    plain = client.chat.completions.create(**kwargs).choices[0].message.content
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs)
                   if c.choices)
    assert text == plain
    Person.model_validate_json(text)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today, in celsius?"}]


def test_tool_round_trip(client):
    first = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           parallel_tool_calls=False, temperature=0, max_tokens=64)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])

    history = ASK + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "cloudy"})},
    ]
    final = client.chat.completions.create(model=MODEL_ID, messages=history, tools=[WEATHER],
                                           tool_choice="none", temperature=0, max_tokens=40)
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].message.content


def test_streamed_tool_calls_assemble_like_openai(client):
    stream = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=[WEATHER], tool_choice="required",
                                            parallel_tool_calls=False, temperature=0, max_tokens=64, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = tc.id or entry["id"]
            entry["name"] += (tc.function.name or "") if tc.function else ""
            entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls and all(c["id"] and c["name"] == "get_weather" for c in calls.values())
    for c in calls.values():
        jsonschema.validate(json.loads(c["arguments"]), WEATHER["function"]["parameters"])


def test_pydantic_function_tool_parses(client):
    class Add(BaseModel):
        a: int
        b: int

    r = client.chat.completions.parse(
        model=MODEL_ID, messages=[{"role": "user", "content": "Add 2 and 3 with the tool."}],
        tools=[openai.pydantic_function_tool(Add)], tool_choice={"type": "function", "function": {"name": "Add"}},
        parallel_tool_calls=False, temperature=0, max_tokens=48,
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "Add"
    assert isinstance(call.function.parsed_arguments, Add)


def test_parallel_calls_each_validate(client):
    # A 135M model tends to repeat its call until max_tokens; whatever complete calls come
    # back must still validate, and a call cut short is not returned.
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=[WEATHER], tool_choice="required",
                                       temperature=0, max_tokens=64)
    choice = r.choices[0]
    assert choice.finish_reason in ("tool_calls", "length")
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_auto_may_answer_in_text(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Say hi."}],
                                       tools=[WEATHER], tool_choice="auto", temperature=0, max_tokens=24)
    msg = r.choices[0].message
    # Either shape is allowed; whichever it is must be well-formed.
    if msg.tool_calls:
        # Calls the budget cut short say so.
        assert r.choices[0].finish_reason in ("tool_calls", "length")
        for call in msg.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    else:
        assert msg.content is not None and "<tool_call>" not in msg.content


@pytest.mark.parametrize("body,param,code", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}}}},
     "response_format.json_schema.schema", "unsupported_value"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
     "response_format.json_schema.schema", None),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name", None),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name", None),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "string", "pattern": "(unclosed"}}}}, "response_format.json_schema.schema", None),
])
def test_bad_schemas_are_400_naming_the_param(server, client, body, param, code):
    payload = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4, **body}
    r = httpx.post(f"{server}/v1/chat/completions", json=payload)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert error["code"] == code, error
    if "uniqueItems" in json.dumps(body):
        assert "uniqueItems" in error["message"] and "#/properties/tags" in error["message"]
    ok = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_streamed_text_answer_with_tools_keeps_its_logprobs(client):
    kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Say hi."}], tools=[WEATHER],
                  tool_choice="none", temperature=0, max_tokens=12, logprobs=True)
    plain = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert text == plain.choices[0].message.content
    assert len(tokens) == plain.usage.completion_tokens == len(plain.choices[0].logprobs.content)
