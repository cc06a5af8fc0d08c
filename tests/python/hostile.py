"""Hostile requests, each with the answer a hardened server gives it: sent raw (method, path,
headers, body bytes) so that nothing on the client side cleans them up. Shared by
test_hostile.py (which asserts every answer) and scripts/bench_hostile.py (which measures how
fast they are refused)."""

import json

USER = [{"role": "user", "content": "hi"}]
JSON = {"content-type": "application/json"}


def chat(body, headers=None, model="local"):
    body = {"model": model, "messages": USER, "max_tokens": 4, **body}
    return ("POST", "/v1/chat/completions", {**JSON, **(headers or {})}, json.dumps(body).encode())


def schema(s):
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}}


def nested(depth, inner):
    s = inner
    for _ in range(depth):
        s = {"type": "array", "items": s}
    return s


def cases():
    """(name, request, status, code or None), the request as (method, path, headers, body)."""
    props = {f"p{i}": {"type": "integer"} for i in range(7500)}
    optional = {f"p{i}": {"type": "integer"} for i in range(5000)}
    parens = "(" * 500 + "a" + ")" * 500
    tool = lambda i: {"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}}
    out = [
        ("schema: 7,500 properties", chat(schema({"type": "object", "properties": props,
                                                   "required": list(props)})), 400, "schema_too_complex"),
        ("schema: 5,000 optional properties", chat(schema({"type": "object", "properties": optional})),
         400, "schema_too_complex"),
        ("schema: $ref cycle", chat(schema({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})),
         400, None),
        ("schema: $ref to nothing", chat(schema({"$ref": "#/$defs/missing"})), 400, None),
        ("schema: pattern c{1000}{1000}", chat(schema({"type": "string", "pattern": "c{1000}{1000}"})),
         400, "schema_too_complex"),
        ("schema: 500 nested groups in a pattern", chat(schema({"type": "string", "pattern": parens})),
         400, None),
        ("schema: 100 levels deep", chat(schema(nested(100, {"type": "string"}))), 400, "schema_too_complex"),
        ("schema: 5,000 enum values", chat(schema({"enum": list(range(5000))})), 400, "schema_too_complex"),
        ("schema: maxLength 10^9", chat(schema({"type": "string", "maxLength": 10**9})), 400,
         "schema_too_complex"),
        ("schema: not a schema", chat(schema({"type": "objekt"})), 400, None),
        ("messages: 50,000 empty", chat({"messages": [{"role": "user", "content": ""}] * 50000}), 400, None),
        ("messages: none", chat({"messages": []}), 400, None),
        ("tools: 3,000", chat({"tools": [tool(i) for i in range(3000)]}), 400, None),
        ("tool_choice: allowed_tools", chat({"tools": [tool(0)], "tool_choice": {
            "type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}}), 400, "unsupported_value"),
        ("role: an object", chat({"messages": [{"role": {}, "content": "x"}]}), 400, None),
        ("content: a number", chat({"messages": [{"role": "user", "content": 3}]}), 400, None),
        ("stop: five", chat({"stop": ["a", "b", "c", "d", "e"]}), 400, None),
        ("stop: 300 bytes", chat({"stop": "x" * 300}), 400, None),
        ("logit_bias: 2,000 tokens", chat({"logit_bias": {str(i): 1 for i in range(2000)}}), 400, None),
        ("n: 17", chat({"n": 17}), 400, None),
        ("temperature: 5", chat({"temperature": 5}), 400, None),
        ("top_logprobs: 50", chat({"logprobs": True, "top_logprobs": 50}), 400, None),
        ("max_tokens: 10^30", chat({"max_tokens": 10**30}), 400, None),
        ("max_tokens: 4.5", chat({"max_tokens": 4.5}), 400, None),
        ("max_tokens: past the context", chat({"max_tokens": 100000}), 400, "context_length_exceeded"),
        ("prompt: 600,000 characters", chat({"messages": [{"role": "user", "content": "word " * 120000}]}),
         400, "context_length_exceeded"),
        ("privacy: unknown value", chat({}, {"x-smallfirst-privacy": "locl-only"}), 400, "invalid_privacy"),
        ("privacy: metadata not a string", chat({"metadata": {"privacy": True}}), 400, "invalid_privacy"),
        ("labels: 5,000", chat({"metadata": {"labels": [f"l{i}" for i in range(5000)]}}, model="auto"), 400, None),
        ("model: 1 MB name", chat({}, model="m" * (1 << 20)), 404, "model_not_found"),
        ("model: CR/LF in the name", chat({}, model="x\r\nInjected: yes"), 404, "model_not_found"),
        ("json: not JSON", ("POST", "/v1/chat/completions", JSON, b"{not json"), 400, None),
        ("json: nested 10,000 deep", ("POST", "/v1/chat/completions", JSON, b"[" * 10000 + b"]" * 10000),
         400, None),
        ("json: a lone surrogate", ("POST", "/v1/chat/completions", JSON,
                                    b'{"model": "local", "messages": [{"role": "user", "content": "\\ud800"}]}'),
         400, None),
        ("json: duplicate field", ("POST", "/v1/chat/completions", JSON,
                                   b'{"model": "local", "model": "local", "messages": []}'), 400, None),
        ("body: over 2 MiB", chat({"user": "x" * (3 << 20)}), 413, "request_too_large"),
        ("content-type: text/plain", ("POST", "/v1/chat/completions", {"content-type": "text/plain"},
                                      json.dumps({"model": "local", "messages": USER}).encode()), 415,
         "unsupported_media_type"),
        ("content-type: a form", ("POST", "/v1/chat/completions",
                                  {"content-type": "application/x-www-form-urlencoded"}, b"model=local"), 415,
         "unsupported_media_type"),
        ("content-type: none", ("POST", "/v1/chat/completions", {}, b"{}"), 415, "unsupported_media_type"),
        ("host: another site (DNS rebinding)", chat({}, {"host": "attacker.example.com:8080"}), 403,
         "host_not_allowed"),
        ("host: 0.0.0.0", chat({}, {"host": "0.0.0.0:8080"}), 403, "host_not_allowed"),
        ("origin: another site", chat({}, {"origin": "https://attacker.example.com"}), 403, "origin_not_allowed"),
        ("origin: null", chat({}, {"origin": "null"}), 403, "origin_not_allowed"),
        ("preflight: another site", ("OPTIONS", "/v1/chat/completions",
                                     {"origin": "https://attacker.example.com",
                                      "access-control-request-method": "POST"}, b""), 403, "origin_not_allowed"),
        ("route: unknown", ("GET", "/v1/nothing", {}, b""), 404, "unknown_url"),
        ("route: wrong method", ("DELETE", "/v1/chat/completions", {}, b""), 405, "method_not_allowed"),
    ]
    return out
