"""`smallfirst fit` and the fit check before every load, through the binary."""

import json
import os
import subprocess

from conftest import model_path

# SmolLM2-135M at the defaults (4096 tokens × 4 sequences): 30 layers × 3 KV heads × (64 + 64)
# × 2 bytes per cell, as llama.cpp allocates it.
SMOLLM2_KV = 30 * 3 * 128 * 2 * 4096 * 4


def fit(binary, tmp_path, *args):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    return subprocess.run([str(binary), "fit", *args], capture_output=True, text=True, timeout=120, env=env)


def test_fit_reports_memory_speed_and_machine(binary, tmp_path):
    r = fit(binary, tmp_path, model_path(), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["version"] == 1
    m = doc["machine"]
    assert m["cores"] >= 1 and 1 <= m["usable_cores"] <= m["cores"]
    assert 0 < m["memory"]["available"] <= m["memory"]["total"]
    assert doc["bandwidth"]["bytes_per_s"] > 1e8
    [model] = doc["models"]
    assert model["architecture"] == "llama" and model["verdict"] in ("fits", "tight")
    assert model["settings"]["ctx"] == 4096 and model["settings"]["parallel"] == 4
    mem = model["memory"]
    assert mem["kv"] == SMOLLM2_KV
    assert mem["file"] == os.path.getsize(model_path())
    parts = ("file", "repacked", "kv", "compute", "output", "tokenizer", "process")
    assert mem["total"] == sum(mem[p] for p in parts)
    start, end = model["decode_tokens_per_s"]
    assert start > end > 0, "reading more keys and values per token is slower"
    # The bandwidth was measured once and kept.
    cached = json.loads((tmp_path / "smallfirst" / "machine.json").read_text())
    assert cached["bandwidth"] == doc["bandwidth"]
    again = json.loads(fit(binary, tmp_path, model_path(), "--json").stdout)
    assert again["bandwidth"] == doc["bandwidth"]
    # Half the context, half the cache.
    half = json.loads(fit(binary, tmp_path, model_path(), "--ctx", "2048", "--json").stdout)
    assert half["models"][0]["memory"]["kv"] == SMOLLM2_KV // 2


def test_fit_says_what_does_not_fit_and_what_would(binary, tmp_path):
    # A million tokens for each of 64 sequences: about 1.4 TB of KV cache.
    r = fit(binary, tmp_path, model_path(), "--ctx", "1000000", "--parallel", "64", "--json")
    assert r.returncode == 1, r.stderr
    [model] = json.loads(r.stdout)["models"]
    assert model["verdict"] == "does_not_fit"
    largest = model["largest_ctx"]
    assert largest is not None and largest % 256 == 0 and 256 <= largest <= 8192
    text = fit(binary, tmp_path, model_path(), "--ctx", "1000000", "--parallel", "64")
    assert text.returncode == 1
    assert "does not fit" in text.stdout and "fits" in text.stdout


def test_fit_errors_are_one_line(binary, tmp_path):
    r = fit(binary, tmp_path, "no-such-model")
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error:") and "smallfirst pull" in line, line
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    r = fit(binary, tmp_path, str(text))
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "smallfirst scan" in line, line


def test_serve_refuses_a_model_that_would_not_fit(binary):
    r = subprocess.run([str(binary), "serve", "--model", model_path(), "--port", "0", "--ctx", "1000000",
                        "--parallel", "64"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "needs about" in last and "is available" in last, r.stderr
    assert "a context of" in last and "--no-fit-check" in last, last


def test_fit_counts_models_already_running(binary, tmp_path, server):
    # The session's server has the test model mapped: fit lists it as in use.
    r = fit(binary, tmp_path, model_path(), "--json")
    assert r.returncode == 0, r.stderr
    running = {m["path"]: m for m in json.loads(r.stdout)["running"]}
    mine = running.get(os.path.realpath(model_path()))
    assert mine is not None, running
    assert mine["bytes"] >= os.path.getsize(model_path()) * 0.98 and mine["pids"]
    text = fit(binary, tmp_path, model_path())
    assert "running: " + os.path.realpath(model_path()) in text.stdout


def test_one_unreadable_model_does_not_hide_the_others(binary, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(8))
    r = fit(binary, tmp_path, model_path(), str(bad), "--json")
    assert r.returncode == 2
    good, broken = json.loads(r.stdout)["models"]
    assert good["verdict"] in ("fits", "tight")
    assert broken["path"] == str(bad) and "error" in broken
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error:") and "broken.gguf" in line, line
