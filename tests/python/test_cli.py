"""The CLI as a user meets it: one-line errors with a hint, non-zero exit."""

import json
import socket
import subprocess

from conftest import model_path


def run(binary, *args, input=None):
    return subprocess.run([str(binary), *args], capture_output=True, text=True, input=input, timeout=120)


def test_unknown_model_is_one_line_with_hint(binary, tmp_path):
    r = run(binary, "pull", "no-such-model")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "hint:" in lines[0], r.stderr


def test_port_in_use_is_one_line_with_hint(binary):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run(binary, "serve", "--model", model_path(), "--port", str(port))
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "hint:" in last and "--port" in last, r.stderr


def test_chat_streams_to_stdout(binary):
    r = run(binary, "chat", "--model", model_path(), "--temperature", "0", "--max-tokens", "8", "Say hi.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_chat_reads_stdin_when_no_prompt(binary):
    r = run(binary, "chat", "--model", model_path(), "--temperature", "0", "--max-tokens", "4", input="Say hi.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_models_json_lists_the_catalog(binary):
    import json

    r = run(binary, "models", "--json")
    assert r.returncode == 0, r.stderr
    names = {m["name"] for m in json.loads(r.stdout)}
    assert {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "gemma-3-270m"} <= names


def test_chat_schema_and_tools(binary, tmp_path):
    import json

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                                  "required": ["city"]}))
    r = run(binary, "chat", "--model", model_path(), "--temperature", "0", "--max-tokens", "48", "--schema", str(schema),
            "Name a city.")
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout)["city"], str)

    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]))
    r = run(binary, "chat", "--model", model_path(), "--temperature", "0", "--max-tokens", "48", "--tools", str(tools),
            "Weather in Oslo?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()

    schema.write_text(json.dumps({"type": "array", "uniqueItems": True}))
    r = run(binary, "chat", "--model", model_path(), "--schema", str(schema), "x")
    assert r.returncode != 0
    assert "uniqueItems" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_config_check_explains_mistakes(binary, tmp_path):
    good = tmp_path / "smallfirst.toml"
    good.write_text('[tiers.local]\nbackend = "embedded"\n\n[tiers.frontier]\nbackend = "openai"\nmodel = "m"\n'
                    'base_url = "http://127.0.0.1:9/v1"\ncontext_window = 8192\nfallback = "local"\n'
                    'retry = { attempts = 2 }\ntimeouts = { first_byte = 30 }\n')
    r = run(binary, "config", "check", str(good))
    assert r.returncode == 0, r.stderr
    assert "2 tiers" in r.stdout and "falls back to `local`" in r.stdout
    assert "2 tries, deadlines 10/30/600 s" in r.stdout, r.stdout
    r = run(binary, "config", "check", str(good), "--json")
    frontier = next(t for t in json.loads(r.stdout)["tiers"] if t["name"] == "frontier")
    assert frontier["faults"]["retry"]["attempts"] == 2 and frontier["faults"]["timeouts"]["first_byte"] == 30

    bad = tmp_path / "bad.toml"
    bad.write_text('[tiers.local]\nbackend = "embedded"\n\n[tiers.frontier]\nbackend = "openai"\nmodel = "m"\n'
                   'base_url = "http://127.0.0.1:9/v1"\ncontext_windw = 8192\n')
    r = run(binary, "config", "check", str(bad))
    assert r.returncode != 0
    line = r.stderr.strip()
    assert line.count("\n") == 0 and f"{bad}:8:" in line and "tiers.frontier.context_windw" in line, line

    bad.write_text('[tiers.frontier]\nbackend = "anthropic"\nmodel = "m"\nbase_url = "https://x.test/v1"\n'
                   'context_window = 8192\n\n[tiers.frontier.breaker]\nfailures = 3\ncooldown = 0\n')
    r = run(binary, "config", "check", str(bad))
    line = r.stderr.strip()
    assert r.returncode != 0 and f"{bad}:9:" in line and "tiers.frontier.breaker.cooldown" in line, line
    assert "positive number of seconds" in line, line


def test_scan_reports_clean_findings_and_unscannable_with_exit_codes(binary, tmp_path):
    clean = run(binary, "scan", "--json", model_path())
    assert clean.returncode == 0, clean.stdout + clean.stderr
    doc = json.loads(clean.stdout)
    assert doc["version"] == 1
    [f] = doc["files"]
    assert f["format"] == "gguf" and f["complete"] and len(f["sha256"]) == 64
    # Nothing but a note that its chat template is the family's published one.
    assert [(x["rule"], x["severity"]) for x in f["findings"]] == [("template.known", "info")]
    # Half a model: its tensors run past the end of the file.
    cut = tmp_path / "cut.bin"
    with open(model_path(), "rb") as src:
        cut.write_bytes(src.read(4 << 20))
    found = run(binary, "scan", "--json", str(cut))
    assert found.returncode == 1
    rules = {x["rule"] for x in json.loads(found.stdout)["files"][0]["findings"]}
    assert "gguf.tensor-bounds" in rules, rules
    sarif = json.loads(run(binary, "scan", "--sarif", str(cut)).stdout)
    assert sarif["version"] == "2.1.0"
    assert any(r["ruleId"] == "gguf.tensor-bounds" and r["level"] == "error" for r in sarif["runs"][0]["results"])
    # A pickle that calls os.system on load, written byte by byte (never loaded here).
    evil = tmp_path / "weights.pt"
    evil.write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02R.")
    denied = run(binary, "scan", "--json", str(evil))
    assert denied.returncode == 1
    [f] = json.loads(denied.stdout)["files"]
    assert f["format"] == "pickle" and f["findings"][0]["rule"] == "pickle.global-denied"
    other = tmp_path / "notes.bin"
    other.write_bytes(b"just some text")
    unscanned = run(binary, "scan", str(other))
    assert unscanned.returncode == 2, unscanned.stdout
    assert "not scanned" in unscanned.stdout


def test_serve_refuses_a_model_that_fails_its_scan(binary, tmp_path):
    cut = tmp_path / "cut.gguf"
    with open(model_path(), "rb") as src:
        cut.write_bytes(src.read(4 << 20))
    r = run(binary, "serve", "--model", str(cut), "--port", "0")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "gguf.tensor-bounds" in last and "smallfirst scan" in last, r.stderr
