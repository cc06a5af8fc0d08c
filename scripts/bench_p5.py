#!/usr/bin/env python3
"""P5: what the gateway path adds. The same request, sent by `wrk` straight to a static nginx
upstream (shared/bench/upstream-nginx.sh), through smallfirst, and through LiteLLM
(shared/bench/litellm-proxy.sh), targets alternating within each round (BENCHMARKING.md).

usage: scripts/bench_p5.py [--duration 10] [--rounds 3] [--json FILE]

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


def body(model, stream):
    b = {"model": model, "messages": [{"role": "user", "content": "Classify: I was charged twice for my card."}],
         "max_tokens": 8}
    if stream:
        b["stream"] = True
    return json.dumps(b)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", default="1,32")
    ap.add_argument("--sweep", default="1,2,4,8,16,32,64")
    ap.add_argument("--json")
    args = ap.parse_args()

    procs = []
    up_port, sf_port, ll_port, ll_stream_port = free_port(), free_port(), free_port(), free_port()
    nginx = SHARED / "bench" / "upstream-nginx.sh"
    subprocess.run(["bash", str(nginx), "start", str(up_port)], check=True)
    direct = f"http://127.0.0.1:{up_port}"
    wait_ready(f"{direct}/v1/models", None)
    tmp = Path(tempfile.mkdtemp(prefix="bench-p5-"))
    try:
        config = tmp / "smallfirst.toml"
        config.write_text(
            f'[tiers.bench]\nbackend = "openai"\nmodel = "bench-upstream"\nbase_url = "{direct}/v1"\n'
            f'context_window = 8192\n\n'
            f'[tiers.bench-stream]\nbackend = "openai"\nmodel = "bench-upstream"\n'
            f'base_url = "{direct}/stream/v1"\ncontext_window = 8192\n')
        sf = subprocess.Popen([str(SMALLFIRST), "serve", "--config", str(config), "--port", str(sf_port)],
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "smallfirst.log", "wb"))
        procs.append(sf)
        litellm = SHARED / "bench" / "litellm-proxy.sh"
        ll = subprocess.Popen(["bash", str(litellm), str(ll_port), f"{direct}/v1"], stdout=subprocess.DEVNULL,
                              stderr=open(tmp / "litellm.log", "wb"), start_new_session=True)
        ll_s = subprocess.Popen(["bash", str(litellm), str(ll_stream_port), f"{direct}/stream/v1"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "litellm-stream.log", "wb"),
                                start_new_session=True)
        procs += [ll, ll_s]
        wait_ready(f"http://127.0.0.1:{sf_port}/health", sf)
        auth = {"Authorization": "Bearer sk-bench"}
        wait_ready(f"http://127.0.0.1:{ll_port}/v1/models", ll, 600, auth)
        wait_ready(f"http://127.0.0.1:{ll_stream_port}/v1/models", ll_s, 600, auth)
        base_rss = {"smallfirst": tree_hwm_kib(sf.pid), "litellm": tree_hwm_kib(ll.pid)}
        lua = tmp / "post.lua"
        lua.write_text(WRK_LUA)

        def targets(stream):
            path = "/stream/v1/chat/completions" if stream else "/v1/chat/completions"
            return {
                "direct": (f"{direct}{path}", body("bench-upstream", stream)),
                "smallfirst": (f"http://127.0.0.1:{sf_port}/v1/chat/completions",
                               body("bench-stream" if stream else "bench", stream)),
                "litellm": (f"http://127.0.0.1:{ll_stream_port if stream else ll_port}/v1/chat/completions",
                            body("bench", stream)),
            }

        # Every target answers correctly before anything is timed.
        for stream in (False, True):
            for name, (url, b) in targets(stream).items():
                r = httpx.post(url, content=b, headers={**auth, "content-type": "application/json"}, timeout=30)
                assert r.status_code == 200 and "billing" in r.text, f"{name} stream={stream}: {r.status_code} {r.text[:200]}"
                wrk(url, b, 8, 3, lua)  # warm-up

        results = {"latency": [], "sweep": [], "rss_kib": {}}
        conns = [int(c) for c in args.conns.split(",")]
        for stream in (False, True):
            for c in conns:
                for rnd in range(args.rounds):
                    order = list(targets(stream).items())
                    if rnd % 2:
                        order.reverse()
                    for name, (url, b) in order:
                        row = wrk(url, b, c, args.duration, lua)
                        row.update(target=name, stream=stream, conns=c, round=rnd)
                        results["latency"].append(row)
                        print(f"  {'stream' if stream else 'json  '} c={c:<3} r{rnd} {name:<10} "
                              f"p50 {row['p50_us']:>7} us p99 {row['p99_us']:>7} us {row['rps']:>8.0f} req/s "
                              f"err {row['errors']}+{row['non2xx']}", file=sys.stderr)
        sweep = [int(c) for c in args.sweep.split(",")]
        for stream in (False, True):
            for c in sweep:
                for name, (url, b) in targets(stream).items():
                    row = wrk(url, b, c, max(3, args.duration // 2), lua)
                    row.update(target=name, stream=stream, conns=c)
                    results["sweep"].append(row)
                    print(f"  sweep {'stream' if stream else 'json  '} c={c:<3} {name:<10} p99 {row['p99_us']:>7} us "
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


def report(results, conns):
    rows = results["latency"]
    print("| mode | c | direct p50 / p99 (ms) | smallfirst added p50 / p99 (ms) | LiteLLM added p50 / p99 (ms) "
          "| added p50 LiteLLM ÷ smallfirst | req/s direct / smallfirst / LiteLLM | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for stream in (False, True):
        for c in conns:
            sel = [r for r in rows if r["stream"] == stream and r["conns"] == c]
            rounds = sorted({r["round"] for r in sel})

            def get(name, rnd, key):
                return next(r[key] for r in sel if r["target"] == name and r["round"] == rnd)

            added = {n: {k: med([get(n, i, k) - get("direct", i, k) for i in rounds]) / 1000
                         for k in ("p50_us", "p99_us")} for n in ("smallfirst", "litellm")}
            d50 = med([get("direct", i, "p50_us") for i in rounds]) / 1000
            d99 = med([get("direct", i, "p99_us") for i in rounds]) / 1000
            rps = {n: med([get(n, i, "rps") for i in rounds]) for n in ("direct", "smallfirst", "litellm")}
            errors = sum(r["errors"] + r["non2xx"] for r in sel)
            ratio = added["litellm"]["p50_us"] / added["smallfirst"]["p50_us"] if added["smallfirst"]["p50_us"] > 0 else float("inf")
            print(f"| {'stream' if stream else 'JSON'} | {c} | {d50:.3f} / {d99:.3f} "
                  f"| {added['smallfirst']['p50_us']:.3f} / {added['smallfirst']['p99_us']:.3f} "
                  f"| {added['litellm']['p50_us']:.2f} / {added['litellm']['p99_us']:.2f} | {ratio:.0f}× "
                  f"| {rps['direct']:.0f} / {rps['smallfirst']:.0f} / {rps['litellm']:.0f} | {errors} |")
    print()
    print("| mode | max req/s with p99 < 20 ms: direct | smallfirst | LiteLLM |")
    print("|---|---|---|---|")
    for stream in (False, True):
        cells = []
        for name in ("direct", "smallfirst", "litellm"):
            ok = [r for r in results["sweep"] if r["stream"] == stream and r["target"] == name and r["p99_us"] < 20_000]
            best = max(ok, key=lambda r: r["rps"], default=None)
            cells.append(f"{best['rps']:.0f} (c={best['conns']})" if best else "none (p99 ≥ 20 ms at every c)")
        print(f"| {'stream' if stream else 'JSON'} | " + " | ".join(cells) + " |")
    rss = results["rss_kib"]
    print()
    print(f"Peak RSS (VmHWM): smallfirst {rss['smallfirst'] / 1024:.0f} MiB (at idle {rss['smallfirst_before'] / 1024:.0f} MiB; "
          f"remote tiers only, no model loaded), LiteLLM {rss['litellm'] / 1024:.0f} MiB (at idle {rss['litellm_before'] / 1024:.0f} MiB).")


if __name__ == "__main__":
    main()
