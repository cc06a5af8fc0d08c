"""The official `openai` SDK against a live `smallfirst serve` on the real 135M model."""

import httpx
import openai
import pytest

from conftest import MODEL_ID

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL_ID]


def test_non_streaming(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=16, temperature=0)
    choice = r.choices[0]
    assert r.object == "chat.completion"
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.message.refusal is None
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 1 <= r.usage.completion_tokens <= 16


def test_streaming_matches_non_streaming(client):
    kwargs = dict(model="local", messages=HELLO, max_tokens=12, temperature=0)
    plain = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in chunks[:-1])


def test_logprobs_and_top_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL_ID, messages=HELLO, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert t.top_logprobs[0].token == t.token
    assert "".join(t.token for t in content) == r.choices[0].message.content


def test_streamed_logprobs(client):
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=HELLO, max_tokens=6, temperature=0, logprobs=True, top_logprobs=1, stream=True
    )
    tokens = [t for c in stream if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert 1 <= len(tokens) <= 6


def test_stop_sequence(client):
    messages = [{"role": "user", "content": "List the numbers from 1 to 10, separated by commas."}]
    full = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=40, temperature=0)
    text = full.choices[0].message.content
    assert "5" in text, text
    cut = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=40, temperature=0, stop=["5"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index("5")]


def test_max_tokens_gives_length(client):
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, max_completion_tokens=7)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7


def test_ignore_eos_runs_to_max_tokens(client):
    """llama.cpp's and vLLM's `ignore_eos` extension, sent the way the SDK sends extensions."""
    messages = [{"role": "user", "content": "Reply with the word yes."}]
    short = client.chat.completions.create(model="local", messages=messages, max_tokens=40, temperature=0)
    assert short.usage.completion_tokens < 40 and short.choices[0].finish_reason == "stop"
    long = client.chat.completions.create(model="local", messages=messages, max_tokens=40, temperature=0,
                                          extra_body={"ignore_eos": True})
    assert long.usage.completion_tokens == 40 and long.choices[0].finish_reason == "length"


def test_same_seed_same_text(client):
    kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Invent a name for a cat."}],
                  max_tokens=24, temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=HELLO)
    assert e.value.body["code"] == "model_not_found"


def test_context_length_exceeded(client):
    long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=long, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"


MALFORMED = [
    (b"{not json", 400),
    (b'{"model": "local"}', 400),
    (b'{"model": "local", "messages": [{"role": "user"}]}', 400),
    (b'{"model": "local", "messages": [{"role": "user", "content": "x"}], "temperature": 9}', 400),
    (b'{"model": "local", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}', 400),
    (b'{"model": "local", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', 400),
    (b'{"model": "local", "messages": [{"role": "user", "content": "x"}], "stop": 5}', 400),
    (b'[]', 400),
]


@pytest.mark.parametrize("body,status", MALFORMED)
def test_malformed_requests_get_error_shape_and_server_keeps_serving(server, client, body, status):
    r = httpx.post(f"{server}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert "param" in error and "code" in error
    ok = client.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_plain_curl_style_request(server):
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    r = httpx.post(f"{server}/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["x-smallfirst-tier"] == "local"
    assert r.json()["choices"][0]["message"]["content"] is not None
