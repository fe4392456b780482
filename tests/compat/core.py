"""Recordings, the allow-list, the known-differences list, and evaluating a replay against them."""

from __future__ import annotations

import re
import json
from pathlib import Path

from .harness import ScenarioResult
from .normalise import compare

HERE = Path(__file__).parent
RECORDED = HERE / "recorded"
ALLOWLIST = HERE / "allowlist.json"
KNOWN = HERE / "known_differences.json"


def load_recordings() -> tuple[dict, list[dict]]:
    """(meta, scenarios with their recorded "responses"), in recorded order."""
    meta_path = RECORDED / "meta.json"
    if not meta_path.exists():
        return {}, []
    meta = json.loads(meta_path.read_text())
    scenarios = []
    for name in meta["files"]:
        scenarios += json.loads((RECORDED / name).read_text())["scenarios"]
    return meta, scenarios


def save_recordings(meta: dict, scenarios: list[dict]) -> None:
    RECORDED.mkdir(exist_ok=True)
    groups: dict[str, list[dict]] = {}
    for s in scenarios:
        groups.setdefault(s["id"].split("/")[0], []).append(s)
    files = []
    for group, items in sorted(groups.items()):
        name = f"{group}.json"
        files.append(name)
        (RECORDED / name).write_text(json.dumps({"healthchecks_commit": meta["healthchecks_commit"],
                                                 "scenarios": items}, indent=1, ensure_ascii=False) + "\n")
    for old in RECORDED.glob("*.json"):
        if old.name not in files and old.name != "meta.json":
            old.unlink()
    meta = dict(meta, files=files, scenarios=len(scenarios),
                requests=sum(len(s["responses"]) for s in scenarios))
    (RECORDED / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_allowlist() -> list[dict]:
    return json.loads(ALLOWLIST.read_text())["allowed"] if ALLOWLIST.exists() else []


def load_known() -> dict[str, str]:
    return json.loads(KNOWN.read_text())["scenarios"] if KNOWN.exists() else {}


def glob(pattern: str, text: str) -> bool:
    """``*`` matches anything (other characters, '[' included, are literal); "a|b" is either."""
    return any(re.fullmatch(".*".join(map(re.escape, p.split("*"))), text, re.S) for p in pattern.split("|"))


def _allowed(rule: dict, sid: str, d: dict) -> bool:
    if not glob(rule.get("scenarios", "*"), sid):
        return False
    if not glob(rule.get("where", "*"), d["where"]):
        return False
    for k in ("expected", "actual"):
        if k in rule and rule[k] != d[k]:
            return False
    return True


def evaluate(scenario: dict, result: ScenarioResult, allowlist: list[dict]) -> list[dict]:
    """The differences that remain after the allow-list: [{"step", "request", "diffs"}]."""
    if result.error:
        return [{"step": None, "request": None, "diffs": [{"where": "harness", "expected": None, "actual": result.error}]}]
    out = []
    expected = scenario["responses"]
    for i, (exp, got) in enumerate(zip(expected, result.steps)):
        diffs = [d for d in compare(exp, got.response, got.settled_s, got.late_s) if not any(_allowed(r, scenario["id"], d) for r in allowlist)]
        if diffs:
            out.append({"step": i, "request": got.request, "diffs": diffs, "attempts": got.attempts})
    if len(expected) != len(result.steps):
        out.append({"step": None, "request": None,
                    "diffs": [{"where": "steps", "expected": len(expected), "actual": len(result.steps)}]})
    return out


def strip_responses(scenario: dict) -> dict:
    return {k: v for k, v in scenario.items() if k != "responses"}


def format_differences(sid: str, diffs: list[dict]) -> str:
    lines = [f"{sid}:"]
    for step in diffs:
        req = step["request"] or {}
        lines.append(f"  step {step['step']}: {req.get('method', '')} {req.get('url', '')}"
                     + (f"  body={req['body'][:80]!r}" if req.get("body") else ""))
        for d in step["diffs"]:
            lines.append(f"    {d['where']}: healthchecks={json.dumps(d['expected'], ensure_ascii=False)[:300]}"
                         f"  pingstream={json.dumps(d['actual'], ensure_ascii=False)[:300]}")
    return "\n".join(lines)
