"""Starts `smallfirst serve` on a free loopback port for the session and stops it after."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Servers started here keep their ledgers in a directory of the test run's own.
if not os.environ.get("SMALLFIRST_DATA_DIR"):
    import tempfile

    os.environ["SMALLFIRST_DATA_DIR"] = tempfile.mkdtemp(prefix="smallfirst-data-")
BINARY = ROOT / "target" / "release" / "smallfirst"
MODEL_ID = "smollm2-135m-instruct"


def model_path() -> str:
    path = os.environ.get("SMALLFIRST_TEST_MODEL")
    if not path:
        cache = os.environ.get("SMALLFIRST_MODELS_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smallfirst", "models"
        )
        path = os.path.join(cache, f"{MODEL_ID}.gguf")
    assert os.path.isfile(path), f"test model missing at {path}: run scripts/test.sh"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def binary() -> Path:
    assert BINARY.is_file(), f"{BINARY} missing: build with cargo build --release"
    return BINARY


def spawn(binary, args, log_dir):
    """Starts `smallfirst serve ARGS --port P` and waits until it is healthy; returns the
    process and its base URL."""
    port = free_port()
    log = log_dir / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), "serve", *args, "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not become healthy:\n{log.read_text()}")
        time.sleep(0.1)


def stop(proc, log_dir):
    """SIGTERM, and the server must exit cleanly."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("server did not stop on SIGTERM")
    assert proc.returncode == 0, (log_dir / "serve.log").read_text()


@pytest.fixture(scope="session")
def server(binary, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("server")
    proc, base = spawn(binary, ["--model", model_path(), "--threads", "2", "--ctx", "512"], log_dir)
    yield base
    stop(proc, log_dir)


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


def frontier_tier(upstream_base: str) -> str:
    """A `frontier` tier that is another smallfirst (OpenAI protocol) serving the test model."""
    return f"""
[tiers.frontier]
backend = "openai"
model = "{MODEL_ID}"
base_url = "{upstream_base}/v1"
context_window = 512
"""


def spawn_with_config(binary, log_dir, toml: str):
    """`smallfirst serve --config` on a configuration written from `toml`."""
    config = log_dir / "smallfirst.toml"
    config.write_text(toml)
    return spawn(binary, ["--config", str(config)], log_dir)
