"""The official `openai` SDK's legacy Completions API (`POST /v1/completions`) and `n`: text and
token prompts, fill-in-the-middle on a model with FIM tokens (Qwen2.5-Coder), echo, logprobs,
stop, streaming with usage; `n` choices on chat and completions; pass-through to an
OpenAI-compatible tier."""

import os

import openai
import pytest
from openai import OpenAI

from conftest import spawn, spawn_with_config, stop

FIM_PREFIX = "def add(a, b):\n    "
FIM_SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def coder(binary, tmp_path_factory):
    """A server on the upstream test model, which has fill-in-the-middle tokens."""
    path = os.environ.get("SMALLFIRST_UPSTREAM_MODEL")
    if not path:
        pytest.fail("SMALLFIRST_UPSTREAM_MODEL is not set (scripts/test.sh sets it)")
    log_dir = tmp_path_factory.mktemp("coder")
    proc, base = spawn(binary, ["--model", path, "--threads", "2", "--ctx", "1024"], log_dir)
    yield base
    stop(proc, log_dir)


@pytest.fixture(scope="module")
def coder_client(coder):
    return OpenAI(base_url=f"{coder}/v1", api_key="unused", max_retries=0, timeout=120)


def test_text_completion_with_usage_stop_and_echo(client):
    r = client.completions.create(model="local", prompt="One, two, three,", max_tokens=12, temperature=0,
                                  stop=["\n"])
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].finish_reason in ("stop", "length") and "\n" not in r.choices[0].text
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 12
    echoed = client.completions.create(model="local", prompt="One, two, three,", max_tokens=12, temperature=0,
                                       stop=["\n"], echo=True)
    assert echoed.choices[0].text == "One, two, three," + r.choices[0].text
    # OpenAI's default budget is 16 tokens.
    short = client.completions.create(model="local", prompt="Once upon a time", temperature=0.8, seed=1)
    assert short.usage.completion_tokens <= 16


def test_logprobs_and_token_prompts(client):
    r = client.completions.create(model="local", prompt="The sky is", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) > 0
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(len(t) <= 2 for t in lp.top_logprobs) and all(x <= 0 for x in lp.token_logprobs)
    ids = client.completions.create(model="local", prompt=[[1, 2, 3], [4, 5]], max_tokens=3, temperature=0)
    assert [c.index for c in ids.choices] == [0, 1]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="local", prompt=[10_000_000], max_tokens=3)
    assert "vocabulary" in e.value.message


def test_fill_in_the_middle_on_a_model_with_fim_tokens(coder_client):
    r = coder_client.completions.create(model="local", prompt=FIM_PREFIX, suffix=FIM_SUFFIX, max_tokens=24,
                                        temperature=0)
    assert "return a + b" in r.choices[0].text
    chunks = list(coder_client.completions.create(model="local", prompt=FIM_PREFIX, suffix=FIM_SUFFIX,
                                                  max_tokens=24, temperature=0, stream=True,
                                                  stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    # The second request reuses the first one's cached prefix, and a batch of another shape
    # rounds differently, so greedy text may part late: the two agree through the answer.
    cut = r.choices[0].text.index("return a + b") + len("return a + b")
    assert text[:cut] == r.choices[0].text[:cut]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert 0 < chunks[-1].usage.completion_tokens <= 24


def test_suffix_on_a_model_without_fim_tokens_names_the_model(client, server):
    model = client.models.list().data[0].id
    try:
        client.completions.create(model="local", prompt="a", suffix="b", max_tokens=4)
    except openai.BadRequestError as e:
        assert e.body["param"] == "suffix" and model in e.message
    else:
        pytest.skip("the test model has fill-in-the-middle tokens")


def test_n_choices_on_chat_and_completions(client):
    msgs = [{"role": "user", "content": "Name a colour."}]
    greedy = client.chat.completions.create(model="local", messages=msgs, n=3, temperature=0, max_tokens=8)
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    assert len({c.message.content for c in greedy.choices}) == 1, "greedy choices are identical"
    sampled = client.chat.completions.create(model="local", messages=msgs, n=3, temperature=1.5, seed=5,
                                             max_tokens=12)
    assert len({c.message.content for c in sampled.choices}) > 1, "sampled choices are independent"
    again = client.chat.completions.create(model="local", messages=msgs, n=3, temperature=1.5, seed=5,
                                           max_tokens=12)
    assert [c.message.content for c in again.choices] == [c.message.content for c in sampled.choices]
    chunks = list(client.chat.completions.create(model="local", messages=msgs, n=3, temperature=0, max_tokens=8,
                                                 stream=True, stream_options={"include_usage": True}))
    by_index = {}
    for c in chunks:
        for ch in c.choices:
            by_index.setdefault(ch.index, []).append(ch.delta.content or "")
    assert sorted(by_index) == [0, 1, 2]
    assert "".join(by_index[0]) == greedy.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == greedy.usage.completion_tokens
    r = client.completions.create(model="local", prompt="Colours: red,", n=3, max_tokens=5, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2] and len({c.text for c in r.choices}) == 1
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local", messages=msgs, n=99)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="local", prompt=["a", "b"], n=9, max_tokens=2)
    assert e.value.body["param"] == "n"


def test_bad_completion_requests_are_clear_400s(client):
    for kwargs, param in [({"logprobs": 9}, "logprobs"), ({"echo": True, "suffix": "x"}, "echo"),
                          ({"best_of": 3}, "best_of"), ({"max_tokens": 0}, "max_tokens"),
                          ({"extra_body": {"mystery": 1}}, "mystery")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model="local", prompt="x", **kwargs)
        assert e.value.body["param"] == param, kwargs
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="local", prompt={"a": 1})
    assert e.value.body["param"] == "prompt"


def test_completions_pass_through_to_an_openai_compatible_tier(binary, tmp_path_factory, coder):
    log_dir = tmp_path_factory.mktemp("completions-gateway")
    toml = (f'[tiers.frontier]\nbackend = "openai"\nmodel = "local"\nbase_url = "{coder}/v1"\n'
            'context_window = 1024\n\n[tasks.secret]\nprivacy = "local-only"\n')
    proc, base = spawn_with_config(binary, log_dir, toml)
    try:
        c = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        raw = c.completions.with_raw_response.create(model="frontier", prompt=FIM_PREFIX, suffix=FIM_SUFFIX,
                                                     max_tokens=24, temperature=0)
        assert raw.headers["x-smallfirst-tier"] == "frontier"
        assert "return a + b" in raw.parse().choices[0].text
        chunks = list(c.completions.create(model="frontier", prompt="def f():", max_tokens=5, temperature=0,
                                           stream=True))
        assert any(ch.choices and ch.choices[0].text for ch in chunks)
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model="frontier", prompt="x", max_tokens=2,
                                 extra_headers={"x-smallfirst-privacy": "local-only"})
        assert e.value.body["code"] == "local_only"
        # A task whose privacy is local-only keeps it on the machine too, named by header or metadata.
        for kwargs in [{"extra_headers": {"x-smallfirst-task": "secret"}},
                       {"extra_body": {"metadata": {"task": "secret"}}}]:
            with pytest.raises(openai.BadRequestError) as e:
                c.completions.create(model="frontier", prompt="x", max_tokens=2, **kwargs)
            assert e.value.body["code"] == "local_only", kwargs
            with pytest.raises(openai.BadRequestError) as e:
                c.embeddings.create(model="frontier", input="x", **kwargs)
            assert e.value.body["code"] == "local_only", kwargs
    finally:
        stop(proc, log_dir)
