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


def wait_http(url, seconds=10):
    """Waits until `url` answers at all (any status)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ece(conf, ok, bins=15):
    """Expected calibration error over equal-width bins."""
    total, n = 0.0, len(conf)
    for b in range(bins):
        idx = [i for i, c in enumerate(conf) if min(int(c * bins), bins - 1) == b]
        if idx:
            total += abs(sum(conf[i] for i in idx) - sum(ok[i] for i in idx)) / n
    return total


def auroc(conf, ok):
    """Area under the ROC curve of `conf` for "the answer is right" (scikit-learn's)."""
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(ok, conf) if 0 < sum(ok) < len(ok) else float("nan")


def apgr(conf, ok_small, ok_large):
    """RouteLLM's average performance gap recovered: the area under the cascade's accuracy
    (escalating to the large model below a threshold on `conf`), as a share of the gap, over
    escalation rates 0 to 1; random routing scores 0.5."""
    n = len(conf)
    acc_s, acc_l = sum(ok_small) / n, sum(ok_large) / n
    gap = acc_l - acc_s
    if gap <= 0:
        return float("nan")
    points = {(0.0, acc_s), (1.0, acc_l)}
    for t in sorted(set(conf)) + [1.01]:
        esc = [c < t for c in conf]
        points.add((sum(esc) / n, sum(ok_large[i] if esc[i] else ok_small[i] for i in range(n)) / n))
    curve = sorted(points)
    area = 0.0
    for (e0, a0), (e1, a1) in zip(curve, curve[1:]):
        area += (e1 - e0) * ((a0 - acc_s) / gap + (a1 - acc_s) / gap) / 2
    return area
