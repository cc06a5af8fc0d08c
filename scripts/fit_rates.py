#!/usr/bin/env python3
"""Measures llama.cpp's CPU kernel speed per weight type, for `smallfirst fit`'s decode and prompt
estimates.

For each ggml type it writes two synthetic llama-architecture GGUF files whose every matrix has
that type (filled with noise that decodes to small finite numbers): a wide one (few long rows)
and a deep narrow one (many short rows), both larger than any CPU cache, and runs
`smallfirst bench` on each. Decode time per token is modelled as
    bytes of weights / rate(type) + matrix rows × row cost(type) + layers × LAYER_S,
so the two shapes give the type's rate (bytes per second per thread) and its cost per row (the
dot product's setup, which short rows do not amortise). Prompt time per token is modelled the
same way, as arithmetic / rate(type) + matrix rows × row cost(type).

Nothing here is a shipped model: the shipped models are what `scripts/bench_p7.py` checks the
estimates against.

    .venv/bin/python scripts/fit_rates.py [--types Q4_K,Q8_0] [--threads 2]
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import SMALLFIRST

# ggml type id, block elements, block bytes, offsets of the block's f16 scale fields.
TYPES = {
    "F32": (0, 1, 4, None),
    "F16": (1, 1, 2, None),
    "BF16": (30, 1, 2, None),
    "Q4_0": (2, 32, 18, [0]),
    "Q4_1": (3, 32, 20, [0, 2]),
    "Q5_0": (6, 32, 22, [0]),
    "Q5_1": (7, 32, 24, [0, 2]),
    "Q8_0": (8, 32, 34, [0]),
    "Q2_K": (10, 256, 84, [80, 82]),
    "Q3_K": (11, 256, 110, [108]),
    "Q4_K": (12, 256, 144, [0, 2]),
    "Q5_K": (13, 256, 176, [0, 2]),
    "Q6_K": (14, 256, 210, [208]),
    "IQ4_NL": (20, 32, 18, [0]),
    "IQ4_XS": (23, 256, 136, [0]),
}

VOCAB = 2048
# (n_embd, n_ff, layers): deep and narrow, where the rows show, and wide, where the bytes do.
SHAPES = [(512, 1536, 48), (2048, 5632, 4)]
# Per layer, beside its matrices (graph nodes, barriers): fit's LAYER_OVERHEAD_S.
LAYER_S = 13e-6


def kv(key, value):
    """One metadata pair."""
    k = key.encode()
    out = struct.pack("<Q", len(k)) + k
    if isinstance(value, bool):
        return out + struct.pack("<I?", 7, value)
    if isinstance(value, int):
        return out + struct.pack("<II", 4, value)
    if isinstance(value, float):
        return out + struct.pack("<If", 6, value)
    if isinstance(value, str):
        v = value.encode()
        return out + struct.pack("<IQ", 8, len(v)) + v
    kind, items = value
    if kind == "str":
        body = b"".join(struct.pack("<Q", len(s.encode())) + s.encode() for s in items)
        return out + struct.pack("<IIQ", 9, 8, len(items)) + body
    if kind == "f32":
        return out + struct.pack("<IIQ", 9, 6, len(items)) + struct.pack(f"<{len(items)}f", *items)
    return out + struct.pack("<IIQ", 9, 5, len(items)) + struct.pack(f"<{len(items)}i", *items)


def tensor_data(type_name, n):
    """`n` elements of `type_name` that decode to small finite values."""
    gid, block, size, scales = TYPES[type_name]
    if scales is None:
        pattern = [((i * 7919) % 200 - 100) / 4000.0 for i in range(4096)]
        if type_name == "F32":
            one = struct.pack("<4096f", *pattern)
        elif type_name == "F16":
            one = struct.pack("<4096e", *pattern)
        else:
            one = b"".join(struct.pack("<f", v)[2:] for v in pattern)
        reps = -(-n // 4096)
        return (one * reps)[: n * size]
    blocks = n // block
    buf = bytearray(os.urandom(blocks * size))
    # Every scale 2^-7 (0x2000 as f16): finite, so the logits are numbers.
    for off in scales:
        buf[off::size] = b"\x00" * blocks
        buf[off + 1::size] = b"\x20" * blocks
    return bytes(buf)


def write_model(path, type_name, n_embd, n_ff, layers):
    n_head = n_embd // 64
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581t{i}" for i in range(VOCAB - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259)
    meta = [
        ("general.architecture", "llama"),
        ("general.name", f"synthetic {type_name} {n_embd}"),
        ("llama.block_count", layers),
        ("llama.context_length", 4096),
        ("llama.embedding_length", n_embd),
        ("llama.feed_forward_length", n_ff),
        ("llama.attention.head_count", n_head),
        ("llama.attention.head_count_kv", n_head),
        ("llama.attention.layer_norm_rms_epsilon", 1e-5),
        ("tokenizer.ggml.model", "llama"),
        ("tokenizer.ggml.tokens", ("str", tokens)),
        ("tokenizer.ggml.scores", ("f32", [0.0] * VOCAB)),
        ("tokenizer.ggml.token_type", ("i32", types)),
        ("tokenizer.ggml.bos_token_id", 1),
        ("tokenizer.ggml.eos_token_id", 2),
        ("tokenizer.ggml.unknown_token_id", 0),
    ]
    tensors = [("token_embd.weight", [n_embd, VOCAB], type_name),
               ("output_norm.weight", [n_embd], "F32"),
               ("output.weight", [n_embd, VOCAB], type_name)]
    for i in range(layers):
        b = f"blk.{i}."
        tensors += [(b + "attn_norm.weight", [n_embd], "F32"),
                    (b + "attn_q.weight", [n_embd, n_embd], type_name),
                    (b + "attn_k.weight", [n_embd, n_embd], type_name),
                    (b + "attn_v.weight", [n_embd, n_embd], type_name),
                    (b + "attn_output.weight", [n_embd, n_embd], type_name),
                    (b + "ffn_norm.weight", [n_embd], "F32"),
                    (b + "ffn_gate.weight", [n_embd, n_ff], type_name),
                    (b + "ffn_up.weight", [n_embd, n_ff], type_name),
                    (b + "ffn_down.weight", [n_ff, n_embd], type_name)]
    infos, datas, offset = b"", [], 0
    for name, dims, t in tensors:
        n = 1
        for d in dims:
            n *= d
        data = tensor_data(t, n)
        nm = name.encode()
        infos += struct.pack("<Q", len(nm)) + nm + struct.pack("<I", len(dims))
        infos += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", TYPES[t][0], offset)
        pad = (-len(data)) % 32
        datas.append(data + b"\x00" * pad)
        offset += len(data) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(kv(k, v) for k, v in meta)
    head += infos
    head += b"\x00" * ((-len(head)) % 32)
    with open(path, "wb") as f:
        f.write(head)
        for d in datas:
            f.write(d)
    read = [(len(d), dims) for d, (name, dims, t) in zip(datas, tensors) if t == type_name and len(dims) == 2 and name != "token_embd.weight"]
    return sum(b for b, _ in read), sum(dims[1] for _, dims in read)


def solve(a1, r1, t1, a2, r2, t2):
    """x, y with t = a·x + r·y at both points."""
    det = a1 * r2 - a2 * r1
    return (t1 * r2 - t2 * r1) / det, (a1 * t2 - a2 * t1) / det


def bench(path, threads, reps):
    out = subprocess.run([str(SMALLFIRST), "bench", "-m", str(path), "-t", str(threads), "--ctx", "512",
                          "--parallel", "1", "-p", "128", "-n", "64", "-r", str(reps), "--json"],
                         check=True, capture_output=True, text=True).stdout
    runs = json.loads(out)["report"]["runs"]
    med = lambda xs: sorted(xs)[len(xs) // 2]
    return med([r["decode_tokens_per_s"] for r in runs]), med([r["prompt_tokens_per_s"] for r in runs])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in args.types.split(","):
            points = []
            for n_embd, n_ff, layers in SHAPES:
                path = Path(tmp) / f"{t}-{n_embd}.gguf"
                nbytes, rows = write_model(path, t, n_embd, n_ff, layers)
                tg, pp = bench(path, args.threads, args.reps)
                flops = 2 * (layers * (4 * n_embd * n_embd + 3 * n_embd * n_ff))
                points.append((nbytes, rows, 1.0 / tg - layers * LAYER_S, flops, 1.0 / pp))
                path.unlink()
                print(f"{t} {n_embd}x{layers}: {nbytes / 1e6:.1f} MB, {rows} rows, tg {tg:.1f} tok/s, pp {pp:.1f} tok/s",
                      file=sys.stderr)
            (b1, r1, t1, f1, p1), (b2, r2, t2, f2, p2) = points
            x, y = solve(b1, r1, t1, b2, r2, t2)
            px, py = solve(f1, r1, p1, f2, r2, p2)
            results[t] = {
                "decode_bytes_per_s_per_thread": 1.0 / x / args.threads,
                "row_s_per_thread": y * args.threads,
                "prompt_flops_per_thread": 1.0 / px / args.threads,
                "prompt_row_s_per_thread": py * args.threads,
            }
    print(json.dumps({"threads": args.threads, "types": results}, indent=1))


if __name__ == "__main__":
    main()
