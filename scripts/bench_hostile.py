#!/usr/bin/env python3
"""Hostile input against a live server: how it answers, how fast it refuses, and what slow
clients cost everyone else.

    .venv/bin/python scripts/bench_hostile.py [--model smollm2-135m-instruct] [--rounds 5]
        [--slow 40] [--json OUT]

1. Refusals. Every request of tests/python/hostile.py (schemas past the limits, 50,000 messages,
   prompts past the context, bad types, foreign Host and Origin headers, wrong content types, ...)
   is sent --rounds times to one server, over a keep-alive connection with TCP_NODELAY (so that
   the time is the server's, not a delayed ACK between a request's head and body). Reported: requests tried, crashes (the server gone or a
   connection dropped without an answer), the share answered with the expected 4xx in OpenAI's
   error shape, and the time to refuse (p50, p99, max), per request and over all.
2. Slow clients. A second server with header_timeout = body_timeout = 2 s. --slow connections
   trickle a request head a byte every 0.2 s, as many send a chunked body that never ends (a byte
   every 0.2 s). Reported: connections held past their deadline (by more than 1 s), and the latency
   of a normal request (8 tokens, greedy) during the attack against an idle baseline, alternating
   A/B over --rounds rounds of 5, medians and their ratio.

Loopback only; bounded counts.
"""

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
import benchlib  # noqa: E402
from hostile import cases  # noqa: E402

HELLO = [{"role": "user", "content": "Say hello."}]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def shaped(r, status, code):
    if r.status_code != status:
        return False
    try:
        e = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    keys = {"message", "type", "param", "code"}
    return keys <= set(e) and isinstance(e["message"], str) and (code is None or e["code"] == code)


def client():
    """Keep-alive, with Nagle's algorithm off: a request's head and body go out at once, so what
    is timed is the server, not a delayed ACK between them."""
    nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(transport=nodelay, timeout=120)


def refusals(base, rounds, proc):
    rows = []
    crashes = 0
    http = client()
    for name, (method, path, headers, body), status, code in cases():
        times, ok = [], 0
        for _ in range(rounds):
            start = time.perf_counter()
            try:
                r = http.request(method, f"{base}{path}", headers=headers, content=body)
            except httpx.HTTPError:
                crashes += 1
                continue
            times.append(time.perf_counter() - start)
            ok += shaped(r, status, code)
        rows.append({"name": name, "status": status, "tried": rounds, "shaped": ok,
                     "p50_ms": 1000 * pct(times, 0.5) if times else None,
                     "max_ms": 1000 * max(times) if times else None, "times": times})
    alive = proc.poll() is None
    if not alive:
        crashes += 1
    return rows, crashes, alive


def normal_latency(base):
    start = time.perf_counter()
    r = httpx.post(f"{base}/v1/chat/completions", timeout=120, json={
        "model": "local", "messages": HELLO, "max_tokens": 8, "temperature": 0, "ignore_eos": True})
    r.raise_for_status()
    return time.perf_counter() - start


def slow_head(addr, stop, closed_after):
    s = socket.create_connection(addr)
    start = time.monotonic()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n" + b"x-pad: " + b"a" * 10000
    try:
        for b in head:
            if stop.is_set():
                break
            s.send(bytes([b]))
            time.sleep(0.2)
    except OSError:
        pass
    closed_after.append(time.monotonic() - start)
    s.close()


def endless_body(addr, stop, closed_after):
    s = socket.create_connection(addr)
    start = time.monotonic()
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                  b"transfer-encoding: chunked\r\n\r\n")
        while not stop.is_set():
            s.sendall(b"1\r\n \r\n")
            time.sleep(0.2)
            s.settimeout(0.01)
            try:
                if s.recv(1 << 16) == b"":
                    break
            except socket.timeout:
                pass
            except OSError:
                break
    except OSError:
        pass
    closed_after.append(time.monotonic() - start)
    s.close()


def slow_clients(binary, model, n, rounds, tmp):
    config = Path(tmp) / "slow.toml"
    config.write_text(f'[server]\nheader_timeout = 2\nbody_timeout = 2\nmax_connections = {4 * n + 16}\n'
                      f'\n[tiers.local]\nbackend = "embedded"\nmodel = "{model}"\nthreads = 2\nctx = 512\n')
    port = benchlib.free_port()
    proc = benchlib.start([str(binary), "serve", "--config", str(config), "--port", str(port)], port)
    base, addr = f"http://127.0.0.1:{port}", ("127.0.0.1", port)
    try:
        for _ in range(3):
            normal_latency(base)
        idle, attacked, held, attackers = [], [], 0, 0
        for _ in range(rounds):
            idle += [normal_latency(base) for _ in range(5)]
            stop, closed = threading.Event(), []
            threads = [threading.Thread(target=f, args=(addr, stop, closed)) for f in (slow_head, endless_body)
                       for _ in range(n)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            attacked += [normal_latency(base) for _ in range(5)]
            time.sleep(3.5)
            stop.set()
            for t in threads:
                t.join()
            attackers += len(closed)
            held += sum(1 for c in closed if c > 2 + 1)
        return {"connections": attackers, "held_past_deadline": held,
                "idle_ms": 1000 * statistics.median(idle), "attacked_ms": 1000 * statistics.median(attacked),
                "ratio": statistics.median(attacked) / statistics.median(idle)}
    finally:
        benchlib.stop(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slow", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args()
    model = benchlib.model_path(args.model)
    port = benchlib.free_port()
    proc = benchlib.start([str(benchlib.SMALLFIRST), "serve", "--model", model, "--threads", "2", "--ctx", "512",
                           "--port", str(port)], port)
    try:
        rows, crashes, alive = refusals(f"http://127.0.0.1:{port}", args.rounds, proc)
        normal_latency(f"http://127.0.0.1:{port}")
    finally:
        benchlib.stop(proc)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        slow = slow_clients(benchlib.SMALLFIRST, model, args.slow, args.rounds, tmp)
    every = [t for r in rows for t in r["times"]]
    tried = sum(r["tried"] for r in rows)
    shaped_n = sum(r["shaped"] for r in rows)
    print(f"## Hostile requests ({len(rows)} kinds x {args.rounds})\n")
    print("| request | status | shaped | p50 ms | max ms |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
        mx = f"{r['max_ms']:.1f}" if r["max_ms"] is not None else "-"
        print(f"| {r['name']} | {r['status']} | {r['shaped']}/{r['tried']} | {p50} | {mx} |")
    print(f"\ntried {tried}, crashes {crashes}, server alive after: {alive}, answered with the expected 4xx in "
          f"OpenAI's shape {shaped_n}/{tried} ({100 * shaped_n / max(tried, 1):.1f}%), time to refuse "
          f"p50 {1000 * pct(every, 0.5):.1f} ms, p99 {1000 * pct(every, 0.99):.1f} ms, "
          f"max {1000 * max(every):.1f} ms")
    print(f"\n## Slow clients ({args.slow} trickled heads + {args.slow} endless bodies, deadlines 2 s, "
          f"{args.rounds} rounds)\n")
    print(f"connections {slow['connections']}, held past the deadline (+1 s) {slow['held_past_deadline']}; "
          f"normal request median {slow['idle_ms']:.1f} ms idle, {slow['attacked_ms']:.1f} ms under attack, "
          f"ratio {slow['ratio']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "crashes": crashes, "alive": alive, "slow": slow},
                                              indent=1))


if __name__ == "__main__":
    main()
