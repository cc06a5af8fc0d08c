"""The official `openai` SDK's `embeddings.create` against `POST /v1/embeddings`: pooled,
normalized vectors from the embedded model, float and base64, batched the same as alone,
paraphrases closer than unrelated sentences; pass-through to an OpenAI-compatible tier."""

import base64
import math
import struct

import openai
import pytest
from openai import OpenAI

from conftest import spawn_with_config, stop

TEXTS = ["The cat sat on the mat.", "A cat was sitting on the rug.", "Quarterly revenue rose by eight percent."]


def cos(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_embeddings_are_normalized_deterministic_and_meaningful(client):
    r = client.embeddings.create(model="local", input=TEXTS)
    assert r.object == "list" and [d.index for d in r.data] == [0, 1, 2]
    vs = [d.embedding for d in r.data]
    assert len({len(v) for v in vs}) == 1 and len(vs[0]) > 0
    for v in vs:
        assert abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3
    assert cos(vs[0], vs[1]) > cos(vs[0], vs[2]), "paraphrases are closer than unrelated sentences"
    alone = client.embeddings.create(model="local", input=TEXTS[2]).data[0].embedding
    assert max(abs(a - b) for a, b in zip(alone, vs[2])) < 1e-3, "batched and alone agree"
    again = client.embeddings.create(model="local", input=TEXTS).data[0].embedding
    assert max(abs(a - b) for a, b in zip(again, vs[0])) < 1e-5, "deterministic"
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens


def test_base64_and_token_inputs(client):
    floats = client.embeddings.create(model="local", input="hello world").data[0].embedding
    raw = client.embeddings.with_raw_response.create(model="local", input="hello world", encoding_format="base64")
    b64 = raw.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(floats)}f", base64.b64decode(b64))
    assert max(abs(a - b) for a, b in zip(decoded, floats)) < 1e-6
    ids = client.embeddings.create(model="local", input=[[1, 2, 3], [4, 5]])
    assert len(ids.data) == 2


def test_bad_embedding_requests_are_clear_400s(client):
    for kwargs, param in [({"input": ""}, "input[0]"), ({"input": []}, "input"),
                          ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
                          ({"input": "x", "dimensions": 3}, "dimensions"),
                          ({"input": [10_000_000]}, "input[0]")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(model="local", **kwargs)
        assert e.value.body["param"] == param, kwargs


def test_embeddings_pass_through_to_an_openai_compatible_tier(binary, tmp_path_factory, server, client):
    log_dir = tmp_path_factory.mktemp("embeddings-gateway")
    toml = f'[tiers.frontier]\nbackend = "openai"\nmodel = "local"\nbase_url = "{server}/v1"\ncontext_window = 512\n'
    proc, base = spawn_with_config(binary, log_dir, toml)
    try:
        c = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        raw = c.embeddings.with_raw_response.create(model="frontier", input=TEXTS[0])
        assert raw.headers["x-smallfirst-tier"] == "frontier"
        direct = client.embeddings.create(model="local", input=TEXTS[0]).data[0].embedding
        assert max(abs(a - b) for a, b in zip(raw.parse().data[0].embedding, direct)) < 1e-5
    finally:
        stop(proc, log_dir)
