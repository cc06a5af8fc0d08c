"""What the benchmark scripts share: the binary, the reference tools, models, loopback servers."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SMALLFIRST = ROOT / "target" / "release" / "smallfirst"
SHARED = Path(os.environ.get("SMALLFIRST_SHARED", ROOT.parent / "shared"))


def llama_bin(arg):
    """The reference llama.cpp tools: `arg`, or built (once, cached) by the shared script."""
    if arg:
        return Path(arg)
    out = subprocess.run(["bash", str(SHARED / "bench" / "build-llama-reference.sh")], check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def model_path(name):
    """A catalog model's file, pulled first."""
    subprocess.run([str(SMALLFIRST), "pull", name], check=True)
    rows = json.loads(subprocess.run([str(SMALLFIRST), "models", "--json"], check=True, capture_output=True,
                                     text=True).stdout)
    return next(r["path"] for r in rows if r["name"] == name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, port, stderr=subprocess.DEVNULL):
    """Starts a server and waits for its /health."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start: {cmd}")


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
