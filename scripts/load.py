#!/usr/bin/env python3
"""A bounded load run on loopback: N requests from C concurrent clients against one
`smallfirst serve`, half of them streamed; counts outcomes and reports latency and peak RSS.

usage: scripts/load.py [--requests 2000] [--clients 32] [--max-queue 64] [MODEL]
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SMALLFIRST = ROOT / "target" / "release" / "smallfirst"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def client(base, queue, results):
    async with httpx.AsyncClient(timeout=600) as http:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            stream = i % 2 == 1
            body = {"model": "local", "max_tokens": 8, "temperature": 0,
                    "messages": [{"role": "user", "content": f"Say a word about the number {i}."}]}
            start = time.monotonic()
            try:
                if stream:
                    body["stream"] = True
                    done = False
                    async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
                        status = r.status_code
                        async for line in r.aiter_lines():
                            done |= line == "data: [DONE]"
                    ok = status == 200 and done
                else:
                    r = await http.post(f"{base}/v1/chat/completions", json=body)
                    status = r.status_code
                    ok = status == 200 and r.json()["choices"][0]["message"]["content"] is not None
                results.append((status, ok, stream, time.monotonic() - start))
            except httpx.HTTPError as e:
                results.append((0, False, stream, time.monotonic() - start))
                print(f"request {i}: {e!r}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen([str(SMALLFIRST), "serve", "--model", args.model, "--port", str(port),
                             "--max-queue", str(args.max_queue)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        queue = asyncio.Queue()
        for i in range(args.requests):
            queue.put_nowait(i)
        results = []
        start = time.monotonic()

        async def run():
            await asyncio.gather(*(client(base, queue, results) for _ in range(args.clients)))

        asyncio.run(run())
        wall = time.monotonic() - start
        hwm = next(int(l.split()[1]) for l in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                   if l.startswith("VmHWM:"))
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    by_status = {}
    for status, ok, _, _ in results:
        by_status[status] = by_status.get(status, 0) + 1
    failures = [r for r in results if not r[1] and r[0] != 429]
    lat = sorted(r[3] for r in results if r[1])
    print(json.dumps({
        "requests": len(results), "clients": args.clients, "wall_s": round(wall, 1),
        "req_per_s": round(len(results) / wall, 1), "by_status": by_status,
        "failures_other_than_429": len(failures), "streamed": sum(1 for r in results if r[2]),
        "latency_p50_s": round(statistics.median(lat), 3), "latency_p95_s": round(lat[int(len(lat) * 0.95) - 1], 3),
        "peak_rss_mib": round(hwm / 1024, 1), "exit_code": proc.returncode,
    }, indent=1))
    print("\n".join(l for l in metrics.splitlines() if l.startswith(("smallfirst_requests_total", "smallfirst_rejected"))))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
