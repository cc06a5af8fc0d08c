#!/usr/bin/env python3
"""Writes small seed inputs for the fuzz targets (little GGUFs with every key fit reads, pickles,
a safetensors file, chat completion bodies with schemas and tools) into CORPUS/<target>/, a
libFuzzer dictionary of GGUF key names to DICT, and one of request fields and JSON Schema keywords
beside it (request.dict), so the fuzzers start from the formats' shapes rather than nothing.

    python3 scripts/fuzz_seeds.py fuzz/corpus fuzz/gguf.dict
"""

import json
import struct
import sys
from pathlib import Path


def s(b):
    return struct.pack("<Q", len(b)) + b


# The architecture keys fit reads (after "llama.").
FIT_KEYS = ["block_count", "embedding_length", "feed_forward_length", "attention.head_count",
            "attention.head_count_kv", "attention.key_length", "attention.value_length",
            "attention.sliding_window", "attention.sliding_window_pattern", "context_length",
            "vocab_size"]


def u32_array(key, values):
    return s(key) + struct.pack("<IIQ", 9, 4, len(values)) + struct.pack(f"<{len(values)}I", *values)


def gguf(wide=False):
    """A 2-layer llama; `wide` adds every other key fit reads, some as per-layer arrays or u64."""
    kv = [
        s(b"general.architecture") + struct.pack("<I", 8) + s(b"llama"),
        s(b"llama.block_count") + struct.pack("<II", 4, 2),
        s(b"llama.embedding_length") + struct.pack("<II", 4, 8),
        s(b"llama.attention.head_count") + struct.pack("<II", 4, 2),
        s(b"llama.attention.head_count_kv") + struct.pack("<II", 4, 1),
        s(b"llama.context_length") + struct.pack("<II", 4, 512),
        s(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 4) + b"".join(s(t) for t in [b"a", b"b", b"c", b"d"]),
        s(b"tokenizer.chat_template") + struct.pack("<I", 8) + s(b"{% for m in messages %}{{ m.content }}{% endfor %}"),
    ]
    if wide:
        kv += [
            u32_array(b"llama.feed_forward_length", [16, 32]),
            s(b"llama.attention.key_length") + struct.pack("<IQ", 10, 4),
            s(b"llama.attention.value_length") + struct.pack("<II", 4, 4),
            s(b"llama.attention.sliding_window") + struct.pack("<II", 4, 256),
            s(b"llama.attention.sliding_window_pattern") + struct.pack("<IIQ", 9, 7, 2) + bytes([1, 0]),
            s(b"llama.vocab_size") + struct.pack("<IQ", 10, 4),
            s(b"tokenizer.ggml.merges") + struct.pack("<IIQ", 9, 8, 1) + s(b"a b"),
        ]
    tensors = [(b"token_embd.weight", [8, 4], 0, 0), (b"blk.0.attn_q.weight", [8, 8], 0, 128),
               (b"blk.1.attn_q.weight", [8, 8], 0, 384)]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv)
    for name, dims, ty, off in tensors:
        head += s(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ty, off)
    head += b"\0" * ((-len(head)) % 32)
    return head + bytes(640)


def main():
    root = Path(sys.argv[1])
    seeds = {
        "gguf": {"clean.gguf": gguf(), "keys.gguf": gguf(wide=True)},
        "pickle": {
            # os.system through GLOBAL, and through STACK_GLOBAL with memo round trips.
            "global.pkl": b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02R.",
            "stack.pkl": b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94.",
            "dict.pkl": b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02G?\xf0\x00\x00\x00\x00\x00\x00u.",
        },
        "safetensors": {},
        "request": {},
    }
    user = [{"role": "user", "content": "hi"}]
    person = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 40, "pattern": "^[A-Z][a-z]+$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
        "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
        "required": ["name", "age"], "$defs": {"D": {"type": "number", "multipleOf": 0.5}}}
    bodies = {
        "plain.json": {"model": "local", "messages": user, "max_tokens": 4, "seed": 42.0,
                       "stop": ["\n"], "logit_bias": {"5": -100}, "logprobs": True, "top_logprobs": 2},
        "schema.json": {"model": "local", "messages": user, "response_format": {"type": "json_schema",
                        "json_schema": {"name": "p", "strict": True, "schema": person}}},
        "tools.json": {"model": "auto", "messages": user, "tool_choice": {"type": "function",
                       "function": {"name": "f"}}, "parallel_tool_calls": False,
                       "tools": [{"type": "function", "function": {"name": "f", "parameters": person}}]},
        "object.json": {"model": "local", "messages": [{"role": "system", "content": [{"type": "text", "text": "s"}]}] + user,
                        "response_format": {"type": "json_object"}, "metadata": {"privacy": "local-only"}},
    }
    # Anthropic Messages and Responses bodies: the same request target translates them too.
    bodies["messages.json"] = {
        "model": "local", "max_tokens": 16, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"},
                     {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                                                  {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}],
        "tools": [{"name": "f", "input_schema": person}], "tool_choice": {"type": "any"}, "stop_sequences": ["x"]}
    bodies["responses.json"] = {
        "model": "local", "instructions": "s", "max_output_tokens": 16,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
        "tools": [{"type": "function", "name": "f", "parameters": person}],
        "text": {"format": {"type": "json_schema", "name": "p", "schema": person, "strict": True}}}
    for name, body in bodies.items():
        seeds["request"][name] = json.dumps(body).encode()
    Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
    with open(Path(sys.argv[2]).with_name("request.dict"), "w") as d:
        for k in ["model", "messages", "role", "content", "response_format", "json_schema", "schema",
                  "tools", "tool_choice", "function", "parameters", "strict", "type", "properties",
                  "required", "items", "prefixItems", "anyOf", "oneOf", "allOf", "$ref", "$defs", "#/$defs/",
                  "enum", "const", "pattern", "format", "minLength", "maxLength", "minItems", "maxItems",
                  "minimum", "maximum", "multipleOf", "additionalProperties", "object", "array", "string",
                  "integer", "number", "boolean", "null", "max_tokens", "stop", "logit_bias", "seed",
                  "system", "tool_use", "tool_result", "tool_use_id", "input", "input_schema", "stop_sequences",
                  "instructions", "input_text", "function_call", "function_call_output", "call_id", "text",
                  "max_output_tokens"]:
            d.write(f'"\\"{k}\\""\n')
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "__metadata__": {"format": "pt"}}).encode()
    seeds["safetensors"]["small.safetensors"] = struct.pack("<Q", len(header)) + header + bytes(16)
    with open(sys.argv[2], "w") as d:
        for k in FIT_KEYS:
            d.write(f'"llama.{k}"\n')
        for k in ["general.architecture", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                  "tokenizer.chat_template", "output.weight", "token_embd.weight", "gemma3"]:
            d.write(f'"{k}"\n')
    for target, files in seeds.items():
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)


if __name__ == "__main__":
    main()
