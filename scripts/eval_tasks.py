#!/usr/bin/env python3
"""How well the router infers a request's task when the client does not say it.

usage: scripts/eval_tasks.py [--rows 200]

Builds requests from ../shared/data/evals the way a client would send each task (the
instruction's phrasing rotated through a set, in three sets: those the rules were written
against, a second by the same author, and six per task written by someone who had not seen the
rules; tool and schema tasks carry their `tools` / `response_format`), runs them through `smallfirst route --json`
(no model, no network), and reports the share whose inferred task is right, per data set, with
the decision time per request.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALLFIRST = ROOT / "target" / "release" / "smallfirst"
DATA = Path(os.environ.get("SMALLFIRST_SHARED", ROOT.parent / "shared")) / "data" / "evals"

# Written by someone who had not seen the inference rules, and never used to change them.
INDEPENDENT = {
    "classify": ["Classify the customer-support message into exactly one intent from the provided label list.",
                 "Read the incoming support ticket and return the single category that best matches it.",
                 "Which one of the supplied intent labels best describes this customer's message? Respond with that label only.",
                 "Intent detection: assign one label per message, chosen strictly from the list provided.",
                 "Please categorize the user's support request using only one of the allowed categories.",
                 "You are a support-ticket router. Tag each inbound message with the single most appropriate intent from the given taxonomy."],
    "extract": ["Extract all named entities (people, places, organizations, products) from the social-media post.",
                "Identify every person, location, organization, and product mentioned in this tweet and list them by type.",
                "Could you pull out the named entities from the following post and group them by category?",
                "NER task: return each entity span found in the post along with its type (PER, LOC, ORG, PRODUCT, MISC).",
                "Please find any names of people, places, companies, or brands that appear in this short post.",
                "Scan the post and output a JSON list of the entities it mentions, labeling each as person, place, organization, or product."],
    "summarize": ["Summarize the following conversation between two people in two or three sentences.",
                  "Give a brief recap of this dialogue, noting what each speaker wanted and what they agreed on.",
                  "Can you condense this chat into a short paragraph capturing its main points?",
                  "Dialogue summarization: produce a concise, third-person summary of the exchange below.",
                  "Please write a one-line gist of what the two participants discussed.",
                  "Boil this two-person conversation down to its key decisions and action items, nothing more."],
}

# Written before the inference rules were last changed, by the rules' author.
HELD_OUT = {
    "classify": ["Tag this support ticket with the right intent.",
                 "Decide what kind of request this is.",
                 "Assign one category to the following text."],
    "extract": ["Pull the entities out of this tweet.",
                "Identify all locations, people and companies in the text.",
                "Return the proper nouns you find and their kinds."],
    "summarize": ["Give me a brief recap of this call.",
                  "Condense this chat into one paragraph.",
                  "What are the key points of this conversation?"],
}

# The phrasings the rules were written against.
PHRASES = {
    "classify": ["Classify the customer's message by its intent.",
                 "Which of our support categories does this message belong to?",
                 "What is the user asking about? Answer with the intent name only."],
    "extract": ["Extract the named entities (people, places, organizations, products) from the text.",
                "List every person, place and organization mentioned.",
                "Find the names in this sentence and give their types."],
    "summarize": ["Summarize the dialogue.",
                  "Write a short summary of this conversation.",
                  "What did they talk about? Give the gist in two sentences."],
}


def bfcl_tools(functions):
    def fix(s):
        if isinstance(s, dict):
            s = {k: fix(v) for k, v in s.items()}
            if s.get("type") == "dict":
                s["type"] = "object"
            if s.get("type") == "float":
                s["type"] = "number"
            if s.get("type") == "tuple":
                s["type"] = "array"
            if s.get("type") == "any":
                s.pop("type")
        elif isinstance(s, list):
            s = [fix(x) for x in s]
        return s
    return [{"type": "function", "function": {"name": f["name"].replace(".", "_"), "description": f.get("description", ""),
                                              "parameters": fix(f.get("parameters", {}))}} for f in functions]


def requests(rows_per_set, phrases):
    out = []  # (set, expected task, body)
    def sample(file):
        rows = [json.loads(line) for line in (DATA / file).read_text().splitlines()]
        return random.Random(0).sample(rows, min(rows_per_set, len(rows)))

    for file in ("banking77_test.jsonl", "clinc150_test_plus_oos.jsonl"):
        for i, r in enumerate(sample(file)):
            msgs = [{"role": "system", "content": phrases["classify"][i % len(phrases["classify"])]}, {"role": "user", "content": r["input"]}]
            out.append((file, "classify", {"model": "auto", "messages": msgs}))
    for i, r in enumerate(sample("wnut17_test.jsonl")):
        msgs = [{"role": "system", "content": phrases["extract"][i % len(phrases["extract"])]}, {"role": "user", "content": r["input"]}]
        out.append(("wnut17_test.jsonl", "extract", {"model": "auto", "messages": msgs}))
    for i, r in enumerate(sample("snips_test.jsonl")):
        msgs = [{"role": "user", "content": "Give the intent and the slots of this voice command as JSON: " + r["input"]}]
        out.append(("snips_test.jsonl", "extract", {"model": "auto", "messages": msgs,
                                                   "response_format": {"type": "json_object"}}))
    for i, r in enumerate(sample("dialogsum_test.jsonl")):
        msgs = [{"role": "system", "content": phrases["summarize"][i % len(phrases["summarize"])]}, {"role": "user", "content": r["input"]}]
        out.append(("dialogsum_test.jsonl", "summarize", {"model": "auto", "messages": msgs}))
    for i, r in enumerate(sample("sroie_receipts.jsonl")):
        msgs = [{"role": "user", "content": r["input"]}]
        out.append(("sroie_receipts.jsonl", "extract", {"model": "auto", "messages": msgs, "response_format": {
            "type": "json_schema", "json_schema": {"name": "receipt", "schema": r["schema"]}}}))
    for file in ("bfcl_simple_python.jsonl", "bfcl_multiple.jsonl"):
        for r in sample(file):
            out.append((file, "tool_call", {"model": "auto", "messages": r["messages"],
                                            "tools": bfcl_tools(r["functions"])}))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200)
    args = ap.parse_args()
    for title, phrases in (("phrasings the rules were written against", PHRASES),
                           ("phrasings written by the rules' author before their last change", HELD_OUT),
                           ("independent phrasings, written without seeing the rules", INDEPENDENT)):
        print(f"\n**{title}**\n")
        report(requests(args.rows, phrases))


def report(reqs):
    stdin = "\n".join(json.dumps(b) for _, _, b in reqs) + "\n"
    out = subprocess.run([str(SMALLFIRST), "route", "--json"], input=stdin, capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == len(reqs)
    by_set = {}
    for (name, want, _), got in zip(reqs, lines):
        ok, n, wrong = by_set.get(name, (0, 0, {}))
        if got["task"] == want:
            ok += 1
        else:
            wrong[got["task"]] = wrong.get(got["task"], 0) + 1
        by_set[name] = (ok, n + 1, wrong)
    print("| data set | expected task | rows | inferred right | inferred instead |")
    print("|---|---|---|---|---|")
    total_ok = total = 0
    for (name, want, _) in {(r[0], r[1], None): None for r in reqs}:
        ok, n, wrong = by_set[name]
        total_ok += ok
        total += n
        instead = ", ".join(f"{k} {v}" for k, v in sorted(wrong.items(), key=lambda kv: -kv[1])) or "—"
        print(f"| {name} | {want} | {n} | {ok / n:.1%} | {instead} |")
    print(f"| **all** | | {total} | **{total_ok / total:.1%}** | |")
    us = [l["decide_us"] for l in lines]
    print(f"\nDecision time (features + policy, in process, token count estimated): median {statistics.median(us):.1f} µs, "
          f"p99 {sorted(us)[int(len(us) * 0.99) - 1]:.1f} µs, max {max(us):.1f} µs over {len(us)} requests.")


if __name__ == "__main__":
    main()
