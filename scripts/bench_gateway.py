#!/usr/bin/env python3
"""P5: what the gateway path adds. The same request, sent by `wrk` straight to a static nginx
upstream (shared/bench/upstream-nginx.sh), through smallfirst, and through LiteLLM
(shared/bench/litellm-proxy.sh), targets alternating within each round (BENCHMARKING.md).

usage: scripts/bench_gateway.py [--duration 10] [--rounds 3] [--baseline BINARY | --ledger-off]
                               [--json FILE]

Three modes: a chat completion answered as JSON, the same streamed, and an Anthropic Messages
request (`POST /v1/messages`) passed through to an Anthropic-shaped upstream (a second static
nginx answering a fixed message). With --baseline, an earlier build of smallfirst serves the
same configuration as one more target in the same rounds; with --ledger-off, the baseline is
this build with `[ledger] enabled = false` (smallfirst itself records every request, in a
ledger in a temporary data directory).

Added latency = the gateway's percentile minus the direct percentile measured in the same
round; medians over rounds. Max req/s: the highest throughput of a closed-loop sweep over
connection counts whose p99 stays under 20 ms. Peak RSS: VmHWM of the process tree after the
run. Needs target/release/smallfirst, wrk and nginx (apt), and the LiteLLM venv (the script
installs it on first use). The gateways run with the machine otherwise idle.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SMALLFIRST = ROOT / "target" / "release" / "smallfirst"
SHARED = Path(os.environ.get("SMALLFIRST_SHARED", ROOT.parent / "shared"))

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"errors":%d,"non2xx":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=180, headers=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"{url} did not come up")


def tree_hwm_kib(pid):
    """Peak RSS (VmHWM) of a process and its descendants, KiB."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
            for t in Path(f"/proc/{p}/task").iterdir():
                kids = (t / "children").read_text().split()
                stack.extend(int(k) for k in kids)
        except OSError:
            pass
    return total


def wrk(url, body, conns, duration, lua):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", lua, url],
        check=True, capture_output=True, text=True, env={**os.environ, "BENCH_BODY": body},
    ).stdout
    row = json.loads(out.strip().splitlines()[-1])
    row["rps"] = row["requests"] / (row["duration_us"] / 1e6)
    return row


ANTHROPIC_MESSAGE = ('{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench",'
                     '"content":[{"type":"text","text":"billing"}],"stop_reason":"end_turn","stop_sequence":null,'
                     '"usage":{"input_tokens":42,"output_tokens":1}}')


def anthropic_upstream(port, tmp):
    """nginx on loopback answering POST /v1/messages with one fixed Anthropic message."""
    d = tmp / "anthropic-nginx"
    tmp.chmod(0o755)  # nginx workers run as another user
    (d / "logs").mkdir(parents=True)
    (d / "message.json").write_text(ANTHROPIC_MESSAGE)
    (d / "nginx.conf").write_text(f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_buffer_size 1m;
  server {{
    listen 127.0.0.1:{port};
    location = /v1/messages {{ default_type application/json; alias {d}/message.json; error_page 405 =200 $uri; }}
  }}
}}
""")
    subprocess.run(["nginx", "-c", str(d / "nginx.conf")], check=True)
    return d / "nginx.pid"


def litellm_messages(port, upstream, tmp, rust):
    """LiteLLM proxy (the venv litellm-proxy.sh installs) serving `/v1/messages` for model
    `claude-bench` on its Anthropic provider, pointed at `upstream`; with `rust`, on LiteLLM's
    Rust path for Anthropic messages (`LITELLM_RUST=true`)."""
    venv = Path.home() / ".cache" / "smallfirst-bench" / "litellm-venv"
    cfg = tmp / f"litellm-messages-{'rust' if rust else 'python'}.yaml"
    cfg.write_text(f"""model_list:
  - model_name: claude-bench
    litellm_params: {{model: anthropic/claude-bench, api_base: "{upstream}", api_key: x}}
litellm_settings: {{drop_params: true}}
general_settings: {{master_key: sk-bench}}
""")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_RUST": "true" if rust else "false"}
    return subprocess.Popen([str(venv / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
                             "--port", str(port), "--num_workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / f"{cfg.stem}.log", "wb"), start_new_session=True)


def messages_body(model):
    return json.dumps({"model": model, "max_tokens": 8,
                       "system": [{"type": "text", "text": "Classify the ticket.", "cache_control": {"type": "ephemeral"}}],
                       "messages": [{"role": "user", "content": "I was charged twice for my card."}]})


def body(model, stream):
    b = {"model": model, "messages": [{"role": "user", "content": "Classify: I was charged twice for my card."}],
         "max_tokens": 8}
    if stream:
        b["stream"] = True
    return json.dumps(b)


MODES = ("json", "stream", "messages")


def wait_ready_post(url, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, content=b"{}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} did not come up")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", default="1,32")
    ap.add_argument("--sweep", default="1,2,4,8,16,32,64")
    ap.add_argument("--baseline", help="an earlier smallfirst binary, measured as one more target")
    ap.add_argument("--ledger-off", action="store_true",
                    help="the baseline is this build with the ledger off")
    ap.add_argument("--json")
    args = ap.parse_args()

    procs = []
    up_port, sf_port, ll_port, ll_stream_port = free_port(), free_port(), free_port(), free_port()
    an_port, base_port, llm_port, llr_port = free_port(), free_port(), free_port(), free_port()
    an_pid = None
    nginx = SHARED / "bench" / "upstream-nginx.sh"
    subprocess.run(["bash", str(nginx), "start", str(up_port)], check=True)
    direct = f"http://127.0.0.1:{up_port}"
    wait_ready(f"{direct}/v1/models", None)
    tmp = Path(tempfile.mkdtemp(prefix="bench-p5-"))
    # smallfirst's ledger goes in the run's own directory.
    os.environ["SMALLFIRST_DATA_DIR"] = str(tmp / "data")
    try:
        config = tmp / "smallfirst.toml"
        config.write_text(
            f'[tiers.bench]\nbackend = "openai"\nmodel = "bench-upstream"\nbase_url = "{direct}/v1"\n'
            f'context_window = 8192\n\n'
            f'[tiers.bench-stream]\nbackend = "openai"\nmodel = "bench-upstream"\n'
            f'base_url = "{direct}/stream/v1"\ncontext_window = 8192\n')
        an_pid = anthropic_upstream(an_port, tmp)
        anthropic_direct = f"http://127.0.0.1:{an_port}"
        wait_ready_post(f"{anthropic_direct}/v1/messages")
        # The Anthropic tier only where the build has the /v1/messages ingress to reach it.
        anthropic_tier = (f'\n[tiers.claude]\nbackend = "anthropic"\nmodel = "claude-bench"\n'
                          f'base_url = "{anthropic_direct}/v1"\ncontext_window = 200000\n')
        config_messages = tmp / "smallfirst-messages.toml"
        config_messages.write_text(config.read_text() + anthropic_tier)
        sf = subprocess.Popen([str(SMALLFIRST), "serve", "--config", str(config_messages), "--port", str(sf_port)],
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "smallfirst.log", "wb"))
        procs.append(sf)
        base_proc = None
        if args.ledger_off:
            config_off = tmp / "smallfirst-ledger-off.toml"
            config_off.write_text(config.read_text() + "\n[ledger]\nenabled = false\n")
            args.baseline, config_baseline = str(SMALLFIRST), config_off
        else:
            config_baseline = config
        if args.baseline:
            base_proc = subprocess.Popen([args.baseline, "serve", "--config", str(config_baseline), "--port",
                                          str(base_port)],
                                         stdout=subprocess.DEVNULL, stderr=open(tmp / "baseline.log", "wb"))
            procs.append(base_proc)
        litellm = SHARED / "bench" / "litellm-proxy.sh"
        ll = subprocess.Popen(["bash", str(litellm), str(ll_port), f"{direct}/v1"], stdout=subprocess.DEVNULL,
                              stderr=open(tmp / "litellm.log", "wb"), start_new_session=True)
        ll_s = subprocess.Popen(["bash", str(litellm), str(ll_stream_port), f"{direct}/stream/v1"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "litellm-stream.log", "wb"),
                                start_new_session=True)
        ll_m = litellm_messages(llm_port, anthropic_direct, tmp, rust=False)
        ll_r = litellm_messages(llr_port, anthropic_direct, tmp, rust=True)
        procs += [ll, ll_s, ll_m, ll_r]
        wait_ready(f"http://127.0.0.1:{sf_port}/health", sf)
        if base_proc:
            wait_ready(f"http://127.0.0.1:{base_port}/health", base_proc)
        auth = {"Authorization": "Bearer sk-bench"}
        wait_ready(f"http://127.0.0.1:{ll_port}/v1/models", ll, 600, auth)
        wait_ready(f"http://127.0.0.1:{ll_stream_port}/v1/models", ll_s, 600, auth)
        wait_ready(f"http://127.0.0.1:{llm_port}/v1/models", ll_m, 600, auth)
        wait_ready(f"http://127.0.0.1:{llr_port}/v1/models", ll_r, 600, auth)
        base_rss = {"smallfirst": tree_hwm_kib(sf.pid), "litellm": tree_hwm_kib(ll.pid)}
        lua = tmp / "post.lua"
        lua.write_text(WRK_LUA)

        def targets(mode):
            if mode == "messages":
                return {
                    "direct": (f"{anthropic_direct}/v1/messages", messages_body("claude-bench")),
                    "smallfirst": (f"http://127.0.0.1:{sf_port}/v1/messages", messages_body("claude")),
                    "litellm": (f"http://127.0.0.1:{llm_port}/v1/messages", messages_body("claude-bench")),
                    "litellm-rust": (f"http://127.0.0.1:{llr_port}/v1/messages", messages_body("claude-bench")),
                }
            stream = mode == "stream"
            path = "/stream/v1/chat/completions" if stream else "/v1/chat/completions"
            out = {
                "direct": (f"{direct}{path}", body("bench-upstream", stream)),
                "smallfirst": (f"http://127.0.0.1:{sf_port}/v1/chat/completions",
                               body("bench-stream" if stream else "bench", stream)),
                "litellm": (f"http://127.0.0.1:{ll_stream_port if stream else ll_port}/v1/chat/completions",
                            body("bench", stream)),
            }
            if base_proc:
                out["baseline"] = (f"http://127.0.0.1:{base_port}/v1/chat/completions",
                                   body("bench-stream" if stream else "bench", stream))
            return out

        # Every target answers correctly before anything is timed.
        for mode in MODES:
            for name, (url, b) in targets(mode).items():
                r = httpx.post(url, content=b, headers={**auth, "content-type": "application/json"}, timeout=30)
                assert r.status_code == 200 and "billing" in r.text, f"{name} {mode}: {r.status_code} {r.text[:200]}"
                wrk(url, b, 8, 3, lua)  # warm-up

        results = {"latency": [], "sweep": [], "rss_kib": {}}
        conns = [int(c) for c in args.conns.split(",")]
        for mode in MODES:
            for c in conns:
                for rnd in range(args.rounds):
                    order = list(targets(mode).items())
                    if rnd % 2:
                        order.reverse()
                    for name, (url, b) in order:
                        row = wrk(url, b, c, args.duration, lua)
                        row.update(target=name, stream=mode, conns=c, round=rnd)
                        results["latency"].append(row)
                        print(f"  {mode:<8} c={c:<3} r{rnd} {name:<10} "
                              f"p50 {row['p50_us']:>7} us p99 {row['p99_us']:>7} us {row['rps']:>8.0f} req/s "
                              f"err {row['errors']}+{row['non2xx']}", file=sys.stderr)
        sweep = [int(c) for c in args.sweep.split(",")]
        for mode in ("json", "stream"):
            for c in sweep:
                for name, (url, b) in targets(mode).items():
                    row = wrk(url, b, c, max(3, args.duration // 2), lua)
                    row.update(target=name, stream=mode, conns=c)
                    results["sweep"].append(row)
                    print(f"  sweep {mode:<8} c={c:<3} {name:<10} p99 {row['p99_us']:>7} us "
                          f"{row['rps']:>8.0f} req/s", file=sys.stderr)
        results["rss_kib"] = {
            "smallfirst": tree_hwm_kib(sf.pid), "litellm": tree_hwm_kib(ll.pid),
            "smallfirst_before": base_rss["smallfirst"], "litellm_before": base_rss["litellm"],
        }
        report(results, conns)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM) if p is not procs[0] else p.send_signal(signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["bash", str(nginx), "stop"], check=False)
        if an_pid and an_pid.exists():
            subprocess.run(["kill", an_pid.read_text().strip()], check=False)


def report(results, conns):
    rows = results["latency"]
    names = [n for n in ("smallfirst", "baseline", "litellm", "litellm-rust") if any(r["target"] == n for r in rows)]
    print("| mode | c | direct p50 / p99 (ms) | " + " | ".join(f"{n} added p50 / p99 (ms)" for n in names)
          + " | added p50, LiteLLM ÷ smallfirst | req/s direct / " + " / ".join(names) + " | errors |")
    print("|---|---|---|" + "---|" * len(names) + "---|---|---|")
    for mode in MODES:
        for c in conns:
            sel = [r for r in rows if r["stream"] == mode and r["conns"] == c]
            rounds = sorted({r["round"] for r in sel})
            here = [n for n in names if any(r["target"] == n for r in sel)]

            def get(name, rnd, key):
                return next(r[key] for r in sel if r["target"] == name and r["round"] == rnd)

            added = {n: {k: med([get(n, i, k) - get("direct", i, k) for i in rounds]) / 1000
                         for k in ("p50_us", "p99_us")} for n in here}
            d50 = med([get("direct", i, "p50_us") for i in rounds]) / 1000
            d99 = med([get("direct", i, "p99_us") for i in rounds]) / 1000
            rps = {n: med([get(n, i, "rps") for i in rounds]) for n in ["direct"] + here}
            errors = sum(r["errors"] + r["non2xx"] for r in sel)
            cells = [f"{added[n]['p50_us']:.3f} / {added[n]['p99_us']:.3f}" if n in added else "—" for n in names]
            ratio = (f"{added['litellm']['p50_us'] / added['smallfirst']['p50_us']:.0f}×"
                     if "litellm" in added and added["smallfirst"]["p50_us"] > 0 else "—")
            print(f"| {mode} | {c} | {d50:.3f} / {d99:.3f} | " + " | ".join(cells) + f" | {ratio} | "
                  + " / ".join(f"{rps[n]:.0f}" if n in rps else "—" for n in ["direct"] + names) + f" | {errors} |")
    print()
    print("| mode | max req/s with p99 < 20 ms: direct | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for mode in ("json", "stream"):
        cells = []
        for name in ["direct"] + names:
            ok = [r for r in results["sweep"] if r["stream"] == mode and r["target"] == name and r["p99_us"] < 20_000]
            best = max(ok, key=lambda r: r["rps"], default=None)
            cells.append(f"{best['rps']:.0f} (c={best['conns']})" if best else "none (p99 ≥ 20 ms at every c)")
        print(f"| {mode} | " + " | ".join(cells) + " |")
    rss = results["rss_kib"]
    print()
    print(f"Peak RSS (VmHWM): smallfirst {rss['smallfirst'] / 1024:.0f} MiB (at idle {rss['smallfirst_before'] / 1024:.0f} MiB; "
          f"remote tiers only, no model loaded), LiteLLM {rss['litellm'] / 1024:.0f} MiB (at idle {rss['litellm_before'] / 1024:.0f} MiB).")


if __name__ == "__main__":
    main()
