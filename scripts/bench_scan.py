#!/usr/bin/env python3
"""Runs model-file scanners over a corpus and compares what they flag.

    python3 scripts/scan_corpus.py /tmp/scan-corpus          # write the corpus
    python3 scripts/bench_scan.py /tmp/scan-corpus [--smallfirst PATH] [--json OUT]
                                  [--venv DIR] [--only NAME,...] [--timeout S]

CORPUS_DIR holds manifest.json (a list of {"file", "label", "kind", "why"}, as scan_corpus.py writes
it); without one, every file under CORPUS_DIR/malicious and CORPUS_DIR/benign is taken, labelled by
its folder. Each file goes through each scanner on its own (one subprocess per file and scanner,
each with a timeout; the files are never loaded here), and a markdown report is printed: each
tool's version and rule, per scanner malicious flagged / total, benign flagged (false positives) /
total, errors or "not scanned", and a table per file. --json writes the raw results too.

The tools other than smallfirst live in their own virtual environment (default
REPO/.venv-scanners, ignored by git):

    python3 -m venv .venv-scanners
    .venv-scanners/bin/pip install picklescan modelscan fickling py7zr typing_extensions 'numpy<2'

(py7zr is picklescan's optional `[7z]` extra: without it picklescan fails on 7z archives.
fickling 0.1.12 imports typing_extensions on Python < 3.12 without declaring it, and modelscan
0.8.8 calls numpy.lib.format._check_version, which numpy 2's numpy.lib.format no longer has, so
its .npy scanner fails on numpy 2.)

What counts as flagged. Each scanner gets two verdicts: "flagged" (the main columns, the tool's
own notion of a detection) and "any" (its loosest signal, also reported). A tool error, a timeout
or "unsupported / not scanned" is never flagged: it is a miss, counted in the errors column. A run
that reports a detection and also an error (a stream it could only partly parse) counts as flagged
and as an error.

- smallfirst: `smallfirst scan FILE --json` (exit 0 clean, 1 findings, 2 not scanned).
  flagged: a finding of severity error or critical (smallfirst's scale is info < warning < error <
  critical; "error" is its "high", and the engine's default --refuse-at). any: exit 1, i.e. a
  finding above info (warnings included). error: exit 2 (not scanned) or anything unexpected.
- smallfirst --strict: the same with `--strict` (globals on neither its denylist nor its
  known-safe list become critical rather than errors), shown so that its lists' effect on benign
  files is visible.
- picklescan: `picklescan -p FILE`. Its exit code is 2 whenever parsing hit an error, even when it
  also found dangerous globals, so its summary lines are read instead. flagged: "Dangerous
  globals: N" with N > 0 (its exit-1 condition). any: dangerous or "suspicious" (a global in neither
  its allow- nor denylist) > 0. error: exit 2, "Unhandled exception", or a "could not parse ... as
  pickle" / "ERROR: parsing" warning (picklescan reports a file it cannot parse as 1 clean scanned
  file otherwise).
- modelscan: `modelscan -p FILE -r json -o OUT.json` in an empty working directory (so no
  modelscan-settings.toml is picked up). It chooses scanners by file extension. flagged: an issue of
  severity CRITICAL or HIGH. any: any issue (its default settings have no MEDIUM or LOW globals).
  error: exit 2 / 3 / 4 (errors, nothing scanned, usage), errors in the report, or 0 files scanned.
- fickling: `fickling --check-safety --json-output OUT.json FILE` (its CLI reads FILE as one or
  more stacked pickles; it has no zip / 7z / npy handling in this mode). Each stacked pickle gets a
  severity: LIKELY_SAFE < POSSIBLY_UNSAFE < SUSPICIOUS < LIKELY_UNSAFE < LIKELY_OVERTLY_MALICIOUS <
  OVERTLY_MALICIOUS. flagged: the highest is SUSPICIOUS or above (threshold chosen here: above
  POSSIBLY_UNSAFE, which fickling gives to imports it merely does not know). any: fickling's own
  exit 1 (anything above LIKELY_SAFE). error: exit 2 (it could not parse the file), or no JSON
  (e.g. a traceback, which also exits 1).

Standard library only; the tools run as subprocesses.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FICKLING_LEVELS = ["LIKELY_SAFE", "POSSIBLY_UNSAFE", "SUSPICIOUS", "LIKELY_UNSAFE",
                   "LIKELY_OVERTLY_MALICIOUS", "OVERTLY_MALICIOUS"]

RULES = {
    "smallfirst": "flagged: a finding of severity error/critical; any: exit 1 (a finding above info)",
    "smallfirst-strict": "same, run with --strict",
    "picklescan": "flagged: Dangerous globals > 0; any: dangerous + suspicious > 0",
    "modelscan": "flagged: an issue of severity CRITICAL/HIGH; any: any issue",
    "fickling": "flagged: highest severity >= SUSPICIOUS; any: its exit 1 (> LIKELY_SAFE)",
}


def run(cmd, timeout, cwd=None):
    """(rc, stdout, stderr, seconds); rc None on a timeout, -1 when it could not start."""
    t = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"), time.monotonic() - t
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        err = (e.stderr or b"").decode("utf-8", "replace")
        return None, out, err, time.monotonic() - t
    except OSError as e:
        return -1, "", str(e), time.monotonic() - t


def result(flagged=False, any_=False, error=None, detail="", rc=None, secs=0.0):
    return {"flagged": bool(flagged), "any": bool(any_ or flagged), "error": error, "detail": detail,
            "rc": rc, "seconds": round(secs, 2)}


def short(text, n=90):
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Scanners: each takes a file path and returns result(...)


def scan_smallfirst(binary, path, timeout, strict=False):
    cmd = [binary, "scan", path, "--json"] + (["--strict"] if strict else [])
    rc, out, err, secs = run(cmd, timeout)
    if rc is None:
        return result(error="timeout", rc=rc, secs=secs)
    try:
        doc = json.loads(out)
        f = doc["files"][0]
    except (ValueError, KeyError, IndexError):
        return result(error="no JSON: " + short(err or out, 60), rc=rc, secs=secs)
    sevs = [x["severity"] for x in f["findings"]]
    high = [x for x in f["findings"] if x["severity"] in ("error", "critical")]
    above_info = [x for x in f["findings"] if x["severity"] != "info"]
    rules = []
    for x in high or above_info or f["findings"]:
        if x["rule"] not in rules:
            rules.append(x["rule"])
    worst = max(sevs, key=["info", "warning", "error", "critical"].index) if sevs else "none"
    detail = f"{f['format']}: {worst} {','.join(rules[:3])}".strip()
    error = None
    if rc == 2:
        error = f"not scanned ({f['format']})"
    elif rc not in (0, 1):
        error = f"exit {rc}"
    return result(flagged=bool(high), any_=rc == 1 and bool(above_info), error=error, detail=detail, rc=rc, secs=secs)


def scan_picklescan(venv, path, timeout):
    rc, out, err, secs = run([str(venv / "bin" / "picklescan"), "-p", path], timeout)
    text = out + err
    if rc is None:
        return result(error="timeout", rc=rc, secs=secs)

    def num(label):
        m = re.search(label + r":\s*(\d+)", text)
        return int(m.group(1)) if m else None

    dangerous, suspicious, scanned = num("Dangerous globals"), num("Suspicious globals"), num("Scanned files")
    found = re.findall(r"dangerous import '([^']+)' FOUND", text)
    error = None
    if "Unhandled exception" in text:
        error = "exception: " + short(text.strip().splitlines()[-1], 60)
    elif re.search(r"could not parse .* as pickle", text):
        error = "not parsed as pickle"
    elif "ERROR: parsing" in text:
        error = "parse error (partial)"
    elif rc == 2:
        error = "exit 2"
    elif dangerous is None:
        error = f"no summary (exit {rc})"
    elif scanned == 0:
        error = "0 files scanned"
    detail = ", ".join(dict.fromkeys(found)) if found else (f"{suspicious} suspicious" if suspicious else "")
    return result(flagged=bool(dangerous), any_=bool(dangerous or suspicious), error=error,
                  detail=short(detail, 80), rc=rc, secs=secs)


def scan_modelscan(venv, path, timeout):
    with tempfile.TemporaryDirectory(prefix="bench-modelscan-") as tmp:
        report = os.path.join(tmp, "report.json")
        rc, out, err, secs = run([str(venv / "bin" / "modelscan"), "-p", path, "-r", "json", "-o", report],
                                 timeout, cwd=tmp)
        if rc is None:
            return result(error="timeout", rc=rc, secs=secs)
        try:
            with open(report) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            doc = None
    if doc is None:
        return result(error=f"no report (exit {rc}): " + short(out + err, 50), rc=rc, secs=secs)
    issues = doc.get("issues") or []
    errors = doc.get("errors") or []
    scanned = doc.get("summary", {}).get("scanned", {}).get("total_scanned", 0)
    high = [i for i in issues if i.get("severity") in ("CRITICAL", "HIGH")]
    error = None
    if errors:
        error = short("; ".join(e.get("description", "") for e in errors), 60)
    elif rc == 3 or not scanned:
        error = "not scanned (extension)"
    elif rc not in (0, 1):
        error = f"exit {rc}"
    ops = [f"{i.get('module')}.{i.get('operator')} {i.get('severity', '')[:4]}" for i in issues]
    return result(flagged=bool(high), any_=bool(issues), error=error, detail=short(", ".join(dict.fromkeys(ops)), 80),
                  rc=rc, secs=secs)


def scan_fickling(venv, path, timeout):
    with tempfile.TemporaryDirectory(prefix="bench-fickling-") as tmp:
        report = os.path.join(tmp, "safety.json")
        rc, out, err, secs = run([str(venv / "bin" / "fickling"), "--check-safety", "--json-output", report, path],
                                 timeout, cwd=tmp)
        if rc is None:
            return result(error="timeout", rc=rc, secs=secs)
        docs = []
        try:
            with open(report) as f:
                text = f.read()
            dec = json.JSONDecoder()
            i = 0
            while i < len(text):
                while i < len(text) and text[i].isspace():
                    i += 1
                if i >= len(text):
                    break
                d, i = dec.raw_decode(text, i)
                docs.append(d)
        except (OSError, ValueError):
            pass
    if not docs:
        why = "could not parse" if rc == 2 else f"no JSON (exit {rc})"
        last = (err or out).strip().splitlines()
        return result(error=why + (": " + short(last[-1], 50) if last else ""), rc=rc, secs=secs)
    levels = [FICKLING_LEVELS.index(d["severity"]) if d.get("severity") in FICKLING_LEVELS else 0 for d in docs]
    worst = max(levels)
    error = None
    if rc not in (0, 1):
        error = f"exit {rc}"
    triggers = []
    for d in docs:
        for name, trig in (d.get("detailed_results", {}).get("AnalysisResult", {}) or {}).items():
            triggers.append(short(str(trig), 40))
    detail = FICKLING_LEVELS[worst] + (f" ({len(docs)} pickles)" if len(docs) > 1 else "")
    if triggers:
        detail += ": " + "; ".join(dict.fromkeys(triggers))
    else:
        notes = [short(d.get("analysis", ""), 60) for d in docs if d.get("severity") != "LIKELY_SAFE"]
        if notes:
            detail += ": " + "; ".join(dict.fromkeys(notes))
    return result(flagged=worst >= FICKLING_LEVELS.index("SUSPICIOUS"), any_=rc == 1 and worst > 0,
                  error=error, detail=short(detail, 90), rc=rc, secs=secs)


# ---------------------------------------------------------------------------------------------


def versions(binary, venv, timeout):
    out = {}
    if binary and os.access(binary, os.X_OK):
        rc, o, e, _ = run([binary, "--version"], timeout)
        out["smallfirst"] = (o or e).strip() or f"? (exit {rc})"
        out["smallfirst-strict"] = out["smallfirst"]
    py = venv / "bin" / "python"
    for tool in ("picklescan", "modelscan", "fickling", "py7zr", "numpy"):
        rc, o, e, _ = run([str(py), "-c", f"import importlib.metadata as m; print(m.version({tool!r}))"], timeout)
        out[tool] = o.strip() if rc == 0 else "missing"
    return out


def load_corpus(corpus):
    manifest = corpus / "manifest.json"
    if manifest.exists():
        with open(manifest) as f:
            return json.load(f)
    items = []
    for label in ("malicious", "benign"):
        for p in sorted((corpus / label).rglob("*")):
            if p.is_file():
                items.append({"file": str(p.relative_to(corpus)), "label": label, "kind": "", "why": ""})
    return items


def cell(r):
    if r is None:
        return "missing"
    if r["flagged"]:
        s = "**FLAG**"
    elif r["any"]:
        s = "low"
    elif r["error"]:
        s = "err"
    else:
        s = "clean"
    if r["error"] and (r["flagged"] or r["any"]):
        s += "+err"
    return s


def esc(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def report(items, names, vers, binary, venv, elapsed):
    lines = []
    n_mal = sum(1 for x in items if x["label"] == "malicious")
    n_ben = len(items) - n_mal
    lines.append(f"# Scanner comparison: {n_mal} malicious, {n_ben} benign files\n")
    lines.append("| scanner | version | rule |")
    lines.append("| --- | --- | --- |")
    for n in names:
        v = vers.get(n, "missing")
        lines.append(f"| {n} | {esc(v)} | {esc(RULES[n])} |")
    extra = ", ".join(f"{t} {vers.get(t, '?')}" for t in ("py7zr", "numpy"))
    lines.append(f"\nsmallfirst binary: `{binary}`; tool venv: `{venv}` ({extra}).\n")
    lines.append("## Summary\n")
    lines.append("| scanner | malicious flagged | benign flagged (FP) | errors / not scanned (mal + ben) "
                 "| malicious flagged, any | benign flagged, any | seconds |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for n in names:
        rs = [(x["label"], x["results"].get(n)) for x in items]
        if all(r is None for _, r in rs):
            lines.append(f"| {n} | missing | missing | missing | missing | missing | |")
            continue
        mf = sum(1 for lab, r in rs if lab == "malicious" and r and r["flagged"])
        bf = sum(1 for lab, r in rs if lab == "benign" and r and r["flagged"])
        ma = sum(1 for lab, r in rs if lab == "malicious" and r and r["any"])
        ba = sum(1 for lab, r in rs if lab == "benign" and r and r["any"])
        me = sum(1 for lab, r in rs if lab == "malicious" and r and r["error"])
        be = sum(1 for lab, r in rs if lab == "benign" and r and r["error"])
        secs = sum(r["seconds"] for _, r in rs if r)
        lines.append(f"| {n} | {mf} / {n_mal} | {bf} / {n_ben} | {me} + {be} | {ma} / {n_mal} | {ba} / {n_ben} "
                     f"| {secs:.0f} |")
    lines.append("\nCells below: **FLAG** = flagged; low = only the looser rule; err = error or not scanned "
                 "(a miss); clean; +err = flagged with an error too. \"wrong\" lists the scanners whose main "
                 "verdict is wrong for the label (a malicious file not flagged, a benign file flagged).\n")
    for label in ("malicious", "benign"):
        lines.append(f"## {label.capitalize()} files\n")
        lines.append("| file | kind | " + " | ".join(names) + " | wrong |")
        lines.append("| --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
        for x in items:
            if x["label"] != label:
                continue
            cells = [cell(x["results"].get(n)) for n in names]
            wrong = [n for n in names if x["results"].get(n) is not None
                     and (x["results"][n]["flagged"] != (label == "malicious"))]
            lines.append(f"| {esc(Path(x['file']).name)} | {esc(x['kind'])} | " + " | ".join(cells)
                         + f" | {', '.join(wrong)} |")
        lines.append("")
    lines.append("## Details\n")
    lines.append("What each scanner said (smallfirst: format, worst severity, rules; picklescan: dangerous "
                 "imports; modelscan: issues; fickling: severity and triggers), and errors.\n")
    lines.append("| file | " + " | ".join(names) + " |")
    lines.append("| --- | " + " | ".join("---" for _ in names) + " |")
    for x in items:
        cs = []
        for n in names:
            r = x["results"].get(n)
            if r is None:
                cs.append("missing")
                continue
            text = r["detail"] or ""
            if r["error"]:
                text = (text + " " if text else "") + f"[{r['error']}]"
            cs.append(esc(text))
        lines.append(f"| {esc(x['file'])} | " + " | ".join(cs) + " |")
    lines.append(f"\n{len(items)} files in {elapsed:.0f} s.")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--smallfirst", default=str(REPO / "target" / "release" / "smallfirst"))
    ap.add_argument("--venv", type=Path, default=REPO / ".venv-scanners")
    ap.add_argument("--json", dest="json_out", type=Path)
    ap.add_argument("--only", help="comma-separated scanners: " + ",".join(RULES))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per file and scanner (default 120)")
    args = ap.parse_args(argv)

    items = load_corpus(args.corpus)
    if not items:
        print(f"no files under {args.corpus}", file=sys.stderr)
        return 2
    names = list(RULES)
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    have_sf = os.path.isfile(args.smallfirst) and os.access(args.smallfirst, os.X_OK)
    if not have_sf:
        print(f"smallfirst not found at {args.smallfirst}: shown as missing", file=sys.stderr)
    for tool in ("picklescan", "modelscan", "fickling"):
        if tool in names and not (args.venv / "bin" / tool).exists():
            print(f"{tool} not found in {args.venv}: shown as missing", file=sys.stderr)
    vers = versions(args.smallfirst if have_sf else None, args.venv, 60)

    scanners = {
        "smallfirst": (lambda p: scan_smallfirst(args.smallfirst, p, args.timeout)) if have_sf else None,
        "smallfirst-strict": (lambda p: scan_smallfirst(args.smallfirst, p, args.timeout, strict=True)) if have_sf else None,
        "picklescan": lambda p: scan_picklescan(args.venv, p, args.timeout),
        "modelscan": lambda p: scan_modelscan(args.venv, p, args.timeout),
        "fickling": lambda p: scan_fickling(args.venv, p, args.timeout),
    }
    for tool in ("picklescan", "modelscan", "fickling"):
        if not (args.venv / "bin" / tool).exists():
            scanners[tool] = None

    t0 = time.monotonic()
    for k, x in enumerate(items, 1):
        path = str((args.corpus / x["file"]).resolve())
        x["results"] = {}
        for n in names:
            x["results"][n] = scanners[n](path) if scanners[n] else None
        print(f"[{k}/{len(items)}] {x['file']}: "
              + " ".join(f"{n}={cell(x['results'][n])}" for n in names), file=sys.stderr)
    elapsed = time.monotonic() - t0
    print(report(items, names, vers, args.smallfirst, args.venv, elapsed))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"versions": vers, "rules": {n: RULES[n] for n in names}, "files": items}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
