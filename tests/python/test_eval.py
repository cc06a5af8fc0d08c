"""`smallfirst eval` and `smallfirst calibrate` end to end: a slice of banking77 (a classification
task with its labels) and of BFCL simple_python (tool calls) answered on the embedded model and
on a second smallfirst as the frontier tier, through the gateway core; the report's figures;
stored results reused on a second run; a calibration that cannot meet its α written as a
threshold that escalates everything, which the server then applies (its reason header shows
the threshold); the HTML report opened in headless Chromium, its screenshot kept among the test
artifacts; free text graded by a judge tier, checked against human grades (Cohen's κ), and kept
out of calibration until it agrees."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from openai import OpenAI

from conftest import ROOT, frontier_tier, model_path, spawn, stop

DATA = ROOT / "tests" / "data"
BANKING = DATA / "banking77_slice_test.jsonl"
LABELS = sorted({json.loads(line)["expected"] for line in BANKING.read_text().splitlines() if line.strip()})


@pytest.fixture(scope="module")
def upstream(binary, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval-upstream")
    proc, base = spawn(binary, ["--model", model_path(), "--threads", "1", "--ctx", "1024"], d)
    yield base
    stop(proc, d)


@pytest.fixture(scope="module")
def setup(upstream, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    config = d / "smallfirst.toml"
    config.write_text(f"""[tiers.local]
backend = "embedded"
model = "{model_path()}"
threads = 1
ctx = 1024
{frontier_tier(upstream)}price = {{ input = 2.5, output = 10.0 }}

[tasks.banking]
labels = {json.dumps(LABELS)}

[tasks.free]
""".replace("context_window = 512", "context_window = 1024"))
    # The set copied beside the configuration, so its results are kept there too.
    (d / "banking.jsonl").write_text(BANKING.read_text())
    (d / "tools.jsonl").write_text((DATA / "bfcl_simple_python_slice.jsonl").read_text())
    env = {**os.environ, "XDG_CACHE_HOME": str(d / "cache")}
    return d, config, env


def smallfirst(binary, env, *args, timeout=600):
    out = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, env=env)
    return out


def eval_json(binary, setup, *args):
    d, config, env = setup
    out = smallfirst(binary, env, "eval", *args, "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_classification_set_is_reported_per_tier(binary, setup):
    d, _, _ = setup
    report = eval_json(binary, setup, str(d / "banking.jsonl"), "--task", "banking", "--limit", "16",
                       "--tiers", "local,frontier,auto")
    assert report["rows"] == 16 and len(report["set_sha256"]) == 64
    tiers = {t["tier"]: t for t in report["tiers"]}
    assert list(tiers) == ["local", "frontier", "auto"]
    local, frontier, auto = tiers["local"], tiers["frontier"], tiers["auto"]
    for t in tiers.values():
        assert t["rows"] == 16 and t["graded"] == 16 and t["errors"] == 0
        assert 0 <= t["quality"] <= 1
        assert 0 < t["p50_ms"] <= t["p95_ms"]
        assert t["prompt_tokens"] > 0 and t["completion_tokens"] > 0
        assert t["schema_validity"] is None and t["executable_call_rate"] is None
    # The embedded tier is free and judged; the frontier is priced and not.
    assert local["cost"] == 0 and local["judged"] == 16 and local["escalation_rate"] == 0
    assert 0 <= local["ece"] <= 1
    assert frontier["cost"] > 0 and frontier["judged"] == 0 and frontier["auroc"] is None
    if frontier["quality"] > 0:
        assert frontier["cost_per_success"] == pytest.approx(frontier["cost"] / (frontier["quality"] * 16))
    # The cascade at the default threshold escalates some rows, and pays for them.
    assert 0 < auto["escalation_rate"] <= 1 and auto["cost"] > 0
    results = d / "banking.results.jsonl"
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 48
    for r in lines:
        if r["tier"] == "local":
            assert r["answer"] in LABELS and r["method"] == "label_probability"
            # The slice's rows have no `id`: they are named by their line.
            expected = json.loads(BANKING.read_text().splitlines()[int(r["id"].removeprefix("line-")) - 1])["expected"]
            assert r["grade"]["right"] == (r["answer"] == expected)


def test_a_second_run_answers_only_what_is_missing(binary, setup):
    d, _, _ = setup
    results = d / "banking.results.jsonl"
    before = len(results.read_text().splitlines())
    report = eval_json(binary, setup, str(d / "banking.jsonl"), "--task", "banking", "--limit", "16",
                       "--tiers", "local")
    assert len(results.read_text().splitlines()) == before, "stored results were answered again"
    assert report["tiers"][0]["rows"] == 16
    # A floor the tier is below fails the run, after its report.
    d_, config, env = setup
    out = smallfirst(binary, env, "eval", str(d / "banking.jsonl"), "--config", str(config), "--task", "banking",
                     "--limit", "16", "--tiers", "local", "--fail-below", "quality=1.0", "--json")
    assert out.returncode == 1 and "tier `local`: quality" in out.stderr and "below 1" in out.stderr, out.stderr
    assert json.loads(out.stdout)["tiers"][0]["rows"] == 16
    out = smallfirst(binary, env, "eval", str(d / "banking.jsonl"), "--config", str(config), "--fail-below", "speed=2")
    assert out.returncode != 0 and "unknown figure `speed`" in out.stderr, out.stderr
    # Two more rows: only those are answered.
    eval_json(binary, setup, str(d / "banking.jsonl"), "--task", "banking", "--limit", "18", "--tiers", "local")
    assert len(results.read_text().splitlines()) == before + 2


def chromium(*args):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed (scripts/setup.sh installs it)"
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--user-data-dir=" + tempfile.mkdtemp(prefix="chromium-"), *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_html_report_renders_in_a_browser(binary, setup):
    d, config, env = setup
    page = d / "report.html"
    # Stored results only: the rows were answered by the first test.
    out = smallfirst(binary, env, "eval", str(d / "banking.jsonl"), "--config", str(config), "--task", "banking",
                     "--limit", "16", "--tiers", "local,frontier", "--html", str(page))
    assert out.returncode == 0, out.stderr
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.count('<tr><td>') == 2, "one table row per tier"
    curve = dom[dom.index('<figure id="curve">'):dom.index('<figure id="reliability">')]
    # 101 thresholds drawn, and the configured threshold (the default, 0.70) marked.
    assert curve.count("<circle") == 102, curve.count("<circle")
    assert "The configured threshold, 0.70, is marked." in curve
    reliability = dom[dom.index('<figure id="reliability">'):]
    assert reliability.count("<circle") >= 1 and "16 answers" in reliability
    assert "src=" not in dom and "<link" not in dom, "the page loads nothing"
    artifacts = Path(os.environ.get("SMALLFIRST_TEST_ARTIFACTS", ROOT / "target" / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "eval-report.png"
    chromium("--screenshot=" + str(shot), "--window-size=900,1500", page.as_uri())
    assert shot.stat().st_size > 10_000, "the screenshot is empty"


def test_a_tool_calling_set_reports_executable_calls(binary, setup):
    d, _, _ = setup
    report = eval_json(binary, setup, str(d / "tools.jsonl"), "--tiers", "local", "--max-tokens", "128")
    t = report["tiers"][0]
    assert t["rows"] == t["call_rows"] == 6 and t["errors"] == 0
    assert 0 <= t["executable_call_rate"] <= 1 and 0 <= t["quality"] <= 1
    lines = [json.loads(line) for line in (d / "tools.results.jsonl").read_text().splitlines()]
    assert all(r["grade"]["executable"] is not None for r in lines)


FREE = [
    {"id": "f1", "input": "What is the capital of France?", "rubric": "The answer names Paris."},
    {"id": "f2", "input": "Name a primary colour.", "expected": ["red", "blue", "yellow"]},
    {"id": "f3", "input": "How many legs does a spider have?", "rubric": "The answer says eight."},
    {"id": "f4", "input": "Say hello.", "rubric": "The answer is a greeting."},
]


def test_a_judge_grades_free_text_and_is_checked_against_people(binary, setup):
    d, config, env = setup
    free = d / "free.jsonl"
    free.write_text("".join(json.dumps(r) + "\n" for r in FREE))
    # Without a judge, free text is not graded.
    report = eval_json(binary, setup, str(free), "--tiers", "local", "--max-tokens", "24")
    assert report["tiers"][0]["graded"] == 0 and report["judge"] is None
    human = d / "human.jsonl"
    human.write_text("".join(json.dumps({"id": r["id"], "tier": "local", "right": i % 2 == 0}) + "\n"
                             for i, r in enumerate(FREE)))
    report = eval_json(binary, setup, str(free), "--tiers", "local", "--max-tokens", "24",
                       "--judge", "frontier", "--human", str(human))
    t = report["tiers"][0]
    # Every answer graded pass or fail by the frontier tier (a constrained label), none lost.
    assert t["graded"] == 4 and t["errors"] == 0, t
    j = report["judge"]
    assert j["tier"] == "frontier" and j["min_kappa"] == 0.6
    a = j["human"]["local"]["agreement"]
    assert a["rows"] == 4 and 0 <= a["agreement"] <= 1
    lo, hi = a["agreement_ci"]
    assert 0 <= lo <= a["agreement"] <= hi <= 1
    assert j["human"]["local"]["trusted"] == (a["kappa"] is not None and a["kappa"] >= 0.6)
    # The table says it in words.
    out = smallfirst(binary, env, "eval", str(free), "--config", str(config), "--tiers", "local", "--max-tokens",
                     "24", "--judge", "frontier", "--human", str(human))
    assert out.returncode == 0 and "judge `frontier` on tier `local`'s answers, against 4 human grades" in out.stdout
    # Calibrating on a judge's grades needs the human grades, and a κ over the bar.
    base = ["calibrate", "free", "--set", str(free), "--config", str(config), "--max-tokens", "24",
            "--max-error", "0.1", "--judge", "frontier", "--tier", "local", "--frontier", "none"]
    out = smallfirst(binary, env, *base)
    assert out.returncode == 1 and "--human GRADES.jsonl" in out.stderr, out.stderr
    out = smallfirst(binary, env, *base, "--human", str(human))
    assert "against 4 human grades" in out.stderr, out.stderr
    if not j["human"]["local"]["trusted"]:
        assert out.returncode == 1 and "not trusted for calibration" in out.stderr, out.stderr
    # A judge that is not a tier, and grades that are not grades, are refused.
    out = smallfirst(binary, env, "eval", str(free), "--config", str(config), "--judge", "nope")
    assert out.returncode == 1 and "--judge: no tier is named `nope`" in out.stderr, out.stderr
    bad = d / "bad-human.jsonl"
    bad.write_text('{"id": "f1", "right": "yes"}\n')
    out = smallfirst(binary, env, "eval", str(free), "--config", str(config), "--judge", "frontier",
                     "--human", str(bad))
    assert out.returncode == 1 and "bad-human.jsonl:1" in out.stderr and "`right`" in out.stderr, out.stderr


def test_bad_input_gets_a_clear_error(binary, setup, tmp_path):
    d, config, env = setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "expected": "b"}\n{"input": "no expectation"}\n')
    out = smallfirst(binary, env, "eval", str(bad), "--config", str(config))
    assert out.returncode == 1 and "line 2" in out.stderr and "needs an expectation" in out.stderr, out.stderr
    out = smallfirst(binary, env, "eval", str(d / "banking.jsonl"), "--config", str(config), "--tiers", "nope")
    assert out.returncode == 1 and "no tier is named `nope`" in out.stderr, out.stderr
    out = smallfirst(binary, env, "eval", str(d / "banking.jsonl"), "--config", str(config), "--task", "nope")
    assert out.returncode == 1 and "task `nope` is not configured" in out.stderr, out.stderr
    out = smallfirst(binary, env, "calibrate", "banking", "--set", str(d / "banking.jsonl"), "--max-error", "0.05")
    assert out.returncode == 1 and "needs --config" in out.stderr, out.stderr
    out = smallfirst(binary, env, "calibrate", "banking", "--set", str(d / "banking.jsonl"), "--config", str(config),
                     "--max-error", "1.5")
    assert out.returncode == 1 and "--max-error" in out.stderr, out.stderr


def test_calibrate_writes_a_threshold_the_server_applies(binary, setup):
    d, config, env = setup
    out = smallfirst(binary, env, "calibrate", "banking", "--set", str(d / "banking.jsonl"), "--config", str(config),
                     "--limit", "16", "--max-error", "0.05", "--confidence", "0.9", "--write", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["method"] == "learn-then-test" and report["alpha"] == 0.05
    assert report["delta"] == pytest.approx(0.1)
    # Sixteen rows of a 135M model cannot certify 5% error: nothing is kept, and it says so.
    assert report["threshold"] is None and report["certified"] is False
    cal, held = report["calibration"], report["held_out"]
    assert cal["rows"] + held["rows"] == 16 and held["kept"] == 0 and held["escalation"] == 1
    assert held["frontier_cost"] > 0 and held["cascade_cost"] == pytest.approx(held["frontier_cost"])
    text = config.read_text()
    assert "threshold = 1.0" in text and 'method = "learn-then-test"' in text and "certified = false" in text
    proc, base = spawn(binary, ["--config", str(config)], d)
    try:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Where is my new card?"}], temperature=0,
            extra_headers={"x-smallfirst-task": "banking"})
        h = raw.headers
        assert h["x-smallfirst-escalated"] == "true" and h["x-smallfirst-tier"] == "frontier"
        assert h["x-smallfirst-reason"].startswith("low_confidence ") and "<1.00" in h["x-smallfirst-reason"]
    finally:
        stop(proc, d)
