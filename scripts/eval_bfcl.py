#!/usr/bin/env python3
"""Tool-call schema validity and BFCL-style correctness of the embedded model, through HTTP.

usage: scripts/eval_bfcl.py [--limit 50] [--threads 2] MODEL [MODEL ...]

For each MODEL (a catalog name, pulled first) it starts `smallfirst serve` on a loopback port and
sends the Berkeley Function Calling Leaderboard rows in ../shared/data/evals as OpenAI `tools`
requests (BFCL types mapped to JSON Schema: dict→object, float→number, tuple→array, any→no type;
dots in names → `_`). simple_python, multiple, parallel and parallel_multiple use
`tool_choice: "required"`, so every row yields calls to check (`parallel_tool_calls` only on the
two parallel sets, whose rows expect several calls); irrelevance uses `"auto"` and expects no
call. Reported per set:

- validity: calls whose name is an offered tool and whose arguments parse and validate (the
  `jsonschema` package) against the schema sent (objects closed, as `strict: true` asks);
- correct: rows whose calls match the expected functions and argument values (BFCL's AST rules,
  simplified: order-free, `""` = may be omitted, numbers compared as numbers, strings
  case-insensitively);
- no_call: rows answered without a call (the right answer on irrelevance);
- refused: rows the server refused with a 400 (a schema that cannot be satisfied as sent,
  e.g. a required key missing from `properties` under strict mode); these count as wrong.

Writes a Markdown table to stdout; --json writes every row's result.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema

ROOT = Path(__file__).resolve().parents[1]
SMALLFIRST = ROOT / "target" / "release" / "smallfirst"
DATA = Path(os.environ.get("SMALLFIRST_SHARED", ROOT.parent / "shared")) / "data" / "evals"
SETS = [("simple_python", "required"), ("multiple", "required"), ("parallel", "required"),
        ("parallel_multiple", "required"), ("irrelevance", "auto")]
TYPES = {"dict": "object", "float": "number", "tuple": "array"}


def to_schema(s):
    """BFCL's parameter dialect → JSON Schema."""
    if isinstance(s, list):
        return [to_schema(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k == "optional":
            continue
        if k == "type":
            if v == "any":
                continue
            out[k] = TYPES.get(v, v)
        elif k == "properties":
            out[k] = {name: to_schema(p) for name, p in v.items()}
        elif k in ("items", "additionalProperties", "anyOf", "oneOf", "allOf"):
            out[k] = to_schema(v)
        else:
            out[k] = v
    return out


def closed(s):
    """The schema as strict mode enforces it: objects without `additionalProperties` closed."""
    if isinstance(s, list):
        return [closed(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {k: (closed(v) if k in ("items", "additionalProperties", "anyOf", "oneOf", "allOf") else v)
           for k, v in s.items()}
    if "properties" in s:
        out["properties"] = {n: closed(p) for n, p in s["properties"].items()}
    is_object = s.get("type") == "object" or (isinstance(s.get("type"), list) and "object" in s["type"]) or (
        "type" not in s and "properties" in s)
    if is_object and "additionalProperties" not in s:
        out["additionalProperties"] = False
    return out


def tools_of(row):
    tools, schemas, names = [], {}, {}
    for f in row["functions"]:
        name = f["name"].replace(".", "_")
        params = to_schema(f.get("parameters") or {"type": "object", "properties": {}})
        tools.append({"type": "function", "function": {"name": name, "description": f.get("description", ""),
                                                       "parameters": params, "strict": True}})
        schemas[name] = closed(params)
        names[name] = f["name"]
    return tools, schemas, names


def norm(v):
    if isinstance(v, str):
        return v.strip().lower()
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    return v


def call_matches(name, args, expected):
    (exp_name, exp_args), = expected.items()
    if name != exp_name:
        return False
    for arg, accepted in exp_args.items():
        if arg not in args:
            if "" not in accepted:
                return False
            continue
        if norm(args[arg]) not in [norm(a) for a in accepted if a != ""]:
            return False
    return all(arg in exp_args for arg in args)


def correct(calls, expected):
    """Order-free one-to-one match of the calls against the expected ones."""
    if len(calls) != len(expected):
        return False
    left = list(expected)
    for name, args in calls:
        hit = next((e for e in left if call_matches(name, args, e)), None)
        if hit is None:
            return False
        left.remove(hit)
    return True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model, threads, ctx):
    port = free_port()
    proc = subprocess.Popen([str(SMALLFIRST), "serve", "-m", model, "-t", str(threads), "--ctx", str(ctx),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start for {model}")


def evaluate(port, name, mode, limit):
    rows = [json.loads(line) for line in (DATA / f"bfcl_{name}.jsonl").open()][:limit]
    out = []
    for row in rows:
        tools, schemas, names = tools_of(row)
        body = {"model": "local", "messages": row["messages"], "tools": tools, "tool_choice": mode,
                "parallel_tool_calls": name.startswith("parallel"), "temperature": 0, "max_tokens": 256}
        t0 = time.perf_counter()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=600)
        elapsed = time.perf_counter() - t0
        result = {"id": row["id"], "status": r.status_code, "seconds": elapsed, "calls": [], "valid": []}
        if r.status_code != 200:
            result["error"] = r.text
            if name != "irrelevance":
                result["correct"] = False
            out.append(result)
            continue
        choice = r.json()["choices"][0]
        result["finish_reason"] = choice["finish_reason"]
        parsed = []
        for call in choice["message"].get("tool_calls") or []:
            fname = call["function"]["name"]
            ok = fname in schemas
            args = None
            try:
                args = json.loads(call["function"]["arguments"])
                if ok:
                    jsonschema.validate(args, schemas[fname])
            except (json.JSONDecodeError, jsonschema.ValidationError) as e:
                ok = False
                result.setdefault("invalid", []).append(str(e)[:300])
            result["calls"].append({"name": fname, "arguments": args})
            result["valid"].append(ok)
            parsed.append((names.get(fname, fname), args if isinstance(args, dict) else {}))
        if name != "irrelevance":
            result["correct"] = correct(parsed, row["expected"])
        out.append(result)
    return out


def summary(results):
    calls = sum(len(r["valid"]) for r in results)
    valid = sum(sum(r["valid"]) for r in results)
    rows = len(results)
    errors = sum(r["status"] != 200 for r in results)
    scored = [r for r in results if "correct" in r]
    return {
        "rows": rows, "errors": errors, "calls": calls, "valid_calls": valid,
        "validity": valid / calls if calls else float("nan"),
        "correct": sum(r["correct"] for r in scored) / len(scored) if scored else float("nan"),
        "no_call": sum(not r["calls"] for r in results) / rows if rows else float("nan"),
        "length_cut": sum(r.get("finish_reason") == "length" for r in results),
        "median_s": sorted(r["seconds"] for r in results)[rows // 2] if rows else float("nan"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--limit", type=int, default=50, help="rows per set (the first N)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--json")
    args = ap.parse_args()
    all_results = {}
    print("| model | set | tool_choice | rows | refused (400) | calls | valid calls | validity | correct | no call "
          "| cut by length |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        subprocess.run([str(SMALLFIRST), "pull", model], check=True, stdout=subprocess.DEVNULL)
        proc, port = serve(model, args.threads, args.ctx)
        try:
            for name, mode in SETS:
                print(f"[{model}] {name}", file=sys.stderr)
                results = evaluate(port, name, mode, args.limit)
                all_results[f"{model}/{name}"] = results
                s = summary(results)
                correct_cell = "—" if name == "irrelevance" else f"{s['correct']:.1%}"
                print(f"| {model} | {name} | {mode} | {s['rows']} | {s['errors']} | {s['calls']} | {s['valid_calls']} | "
                      f"{s['validity']:.1%} | {correct_cell} | {s['no_call']:.1%} | {s['length_cut']} |", flush=True)
                if s["errors"]:
                    print(f"  {s['errors']} requests failed", file=sys.stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))


if __name__ == "__main__":
    main()
