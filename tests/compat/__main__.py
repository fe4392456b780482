"""Command line of the compatibility harness.

    # where Healthchecks runs (../shared/healthchecks/run.sh prints the REF_* variables):
    python -m tests.compat record --hc-url http://127.0.0.1:18000 [--only PREFIX] [--no-slow]

    # anywhere: start `pingstream up` (or use --url and --keys-json) and compare with the recording
    python -m tests.compat replay [--only PREFIX] [--slow] [--report out.json]

    python -m tests.compat list      # scenario ids and request counts
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import sys
import time

from . import core
from .harness import Runner, Target, prepare


def _hc_keys(args) -> dict[str, str]:
    return {
        "API_KEY": args.api_key or os.environ.get("REF_API_KEY", "refrwkey00000000000000000000000a"),
        "RO_KEY": args.ro_key or os.environ.get("REF_READONLY_API_KEY", "refrokey00000000000000000000000b"),
        "OTHER_KEY": args.other_key or os.environ.get("REF_OTHER_API_KEY", "refotherkey000000000000000000000"),
        "PING_KEY": args.ping_key or os.environ.get("REF_PING_KEY", "refpingkey00000000000a"),
        "OTHER_PING_KEY": args.other_ping_key or os.environ.get("REF_OTHER_PING_KEY", "refotherping0000000000"),
    }


def _progress(total: int):
    done = [0]
    start = time.monotonic()

    def tick(res) -> None:
        done[0] += 1
        if done[0] % 50 == 0 or done[0] == total:
            print(f"  {done[0]}/{total} scenarios ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
    return tick


def record(args) -> int:
    from .scenarios import all_scenarios

    scenarios = prepare(all_scenarios())
    if args.no_slow:
        scenarios = [s for s in scenarios if not s.get("slow")]
    if args.only:
        scenarios = [s for s in scenarios if s["id"].startswith(args.only)]
    target = Target("healthchecks", args.hc_url.rstrip("/"), _hc_keys(args), settle_s=0, concurrency=args.concurrency)
    print(f"recording {len(scenarios)} scenarios from {target.base_url}", file=sys.stderr)
    results = asyncio.run(Runner(target).run_all(scenarios, progress=_progress(len(scenarios))))
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"ERROR {r.id}: {r.error}", file=sys.stderr)
    if failed:
        return 1
    recorded = []
    for s, r in zip(scenarios, results):
        recorded.append(dict(s, responses=[st.response for st in r.steps]))
    if args.only:  # merge into the existing recording
        _, old = core.load_recordings()
        new_ids = {s["id"] for s in recorded}
        recorded = [s for s in old if s["id"] not in new_ids] + recorded
    meta = {"healthchecks_commit": args.commit, "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "healthchecks_settings": "run.sh: DEBUG=False, PING_BODY_LIMIT=10000, SITE_ROOT=<base>, sendalerts running"}
    core.save_recordings(meta, recorded)
    print(f"recorded {len(recorded)} scenarios into {core.RECORDED}", file=sys.stderr)
    return 0


def replay_scenarios(target: Target, scenarios: list[dict]) -> dict[str, list[dict]]:
    """Runs recorded scenarios against a target; {scenario id: remaining differences}."""
    return asyncio.run(replay_scenarios_async(target, scenarios))


async def replay_scenarios_async(target: Target, scenarios: list[dict], progress: bool = True) -> dict[str, list[dict]]:
    """``replay_scenarios`` on the running loop; ``progress``: a line on stderr every 50 scenarios."""
    allow = core.load_allowlist()
    expected = {s["id"]: s["responses"] for s in scenarios}
    defs = [core.strip_responses(s) for s in scenarios]
    results = await Runner(target).run_all(defs, expected, progress=_progress(len(defs)) if progress else None)
    return {s["id"]: core.evaluate(s, r, allow) for s, r in zip(scenarios, results)}


def replay(args) -> int:
    from .pingstream_server import pingstream

    meta, scenarios = core.load_recordings()
    if not args.slow:
        scenarios = [s for s in scenarios if not s.get("slow")]
    if args.only:
        scenarios = [s for s in scenarios if s["id"].startswith(args.only)]
    print(f"replaying {len(scenarios)} scenarios recorded from Healthchecks {meta.get('healthchecks_commit')}", file=sys.stderr)
    t0 = time.monotonic()
    if args.url:
        target = Target("pingstream", args.url.rstrip("/"), json.loads(args.keys_json), settle_s=args.settle)
        out = replay_scenarios(target, scenarios)
    else:
        with pingstream() as target:
            out = replay_scenarios(target, scenarios)
    known = core.load_known()
    differing = {k: v for k, v in out.items() if v}
    for sid, diffs in differing.items():
        print(core.format_differences(sid, diffs))
    print(f"\n{len(differing)} of {len(out)} scenarios differ ({time.monotonic() - t0:.0f} s); "
          f"unlisted: {sorted(set(differing) - set(known))}; listed but now equal: {sorted(set(known) & (set(out) - set(differing)))}",
          file=sys.stderr)
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"meta": meta, "differences": differing,
                       "requests": {s["id"]: s["steps"] for s in scenarios if s["id"] in differing}}, f, indent=1, ensure_ascii=False)
    return 0


def remaining_after_rules(sid: str, diffs: list[dict], rules: list[dict]) -> list[dict]:
    out = []
    for step in diffs:
        left = [d for d in step["diffs"] if not any(core._allowed(r, sid, d) for r in rules)]
        if left:
            out.append(dict(step, diffs=left))
    return out


def known(args) -> int:
    """Replays, then rewrites known_differences.json's scenario list (rules kept) and DIFFERENCES.md."""
    from .classify import DESCRIPTIONS, cause
    from .pingstream_server import pingstream

    meta, scenarios = core.load_recordings()
    if not args.slow:
        scenarios = [s for s in scenarios if not s.get("slow")]
    with pingstream() as target:
        out = replay_scenarios(target, scenarios)
    data = json.loads(core.KNOWN.read_text())
    rules = data["rules"]
    listed = {}
    by_cause: dict[str, list] = {}
    used_rules: dict[str, list] = {}
    for sid, diffs in out.items():
        for step in diffs:
            for d in step["diffs"]:
                for r in rules:
                    if core._allowed(r, sid, d):
                        used_rules.setdefault(r["id"], []).append(sid)
        rem = remaining_after_rules(sid, diffs, rules)
        if not rem:
            continue
        causes = []
        for step in rem:
            for d in step["diffs"]:
                c = cause(sid, step["request"], d)
                if c not in causes:
                    causes.append(c)
                by_cause.setdefault(c, []).append((sid, step, d))
        listed[sid] = "; ".join(causes)
    if not args.slow:  # the slow scenarios were not replayed: their entries stay as they were
        listed = {**{k: v for k, v in data.get("scenarios", {}).items() if k.startswith("slow/")}, **listed}
    data["scenarios"] = dict(sorted(listed.items()))
    core.KNOWN.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    _write_differences(meta, scenarios, out, rules, used_rules, by_cause, DESCRIPTIONS)
    print(f"{len(listed)} scenarios listed; {len(used_rules)} of {len(rules)} rules used", file=sys.stderr)
    return 0


def _write_differences(meta, scenarios, out, rules, used_rules, by_cause, descriptions) -> None:
    lines = [
        "# Where pingstream answers differently from Healthchecks",
        "",
        f"Generated by `python -m tests.compat known` from a replay of the recording of Healthchecks "
        f"`{meta.get('healthchecks_commit')}` (recorded {meta.get('recorded_at')}). "
        f"{sum(1 for v in out.values() if v)} of {len(out)} replayed scenarios differ in something; "
        "the sections below are the work list. Values are normalised (see normalise.py): `<absent>` = key not sent, "
        "`<ts[s]:now+1440m>` = a timestamp 1440 minutes after the request, `<dur:~1s,2dp>` = a duration of about 1 s "
        "with 2 decimals.",
        "",
        "## A. Differences in many scenarios (rules in known_differences.json)",
        "",
    ]
    for r in rules:
        sids = sorted(set(used_rules.get(r["id"], [])))
        lines.append(f"- **{r['id']}** — {r['reason']}. Source: `{r['hc_source']}`. "
                     f"{len(sids)} scenarios, e.g. {', '.join('`' + s + '`' for s in sids[:4])}.")
    lines += ["", "## B. Behaviour differences, by cause", ""]
    order = [c for c in descriptions if c in by_cause]
    for c in order:
        items = by_cause[c]
        sids = sorted({sid for sid, _, _ in items})
        lines += [f"### {c} ({len(sids)} scenarios)", "", descriptions[c], ""]
        shown = 0
        seen_sids = set()
        for sid, step, d in items:
            if sid in seen_sids and shown > 3:
                continue
            if shown >= 14:
                break
            seen_sids.add(sid)
            req = step["request"] or {}
            url = re.sub(r"https?://127\.0\.0\.1:\d+", "", req.get("url", ""))
            body = f" body `{req['body'][:60]!r}`" if req.get("body") else ""
            lines.append(f"- `{sid}` step {step['step']}: `{req.get('method', '')} {url}`{body} — `{d['where']}`: "
                         f"Healthchecks `{json.dumps(d['expected'], ensure_ascii=False)[:160]}`, "
                         f"pingstream `{json.dumps(d['actual'], ensure_ascii=False)[:160]}`")
            shown += 1
        rest = [s for s in sids if s not in seen_sids]
        if rest:
            lines.append(f"- also: {', '.join('`' + s + '`' for s in rest)}")
        lines.append("")
    (core.HERE / "DIFFERENCES.md").write_text("\n".join(lines) + "\n")


def list_(args) -> int:
    from .scenarios import all_scenarios

    scenarios = prepare(all_scenarios())
    for s in scenarios:
        print(s["id"], sum(1 for st in s["steps"] if "method" in st), "slow" if s.get("slow") else "")
    print(f"{len(scenarios)} scenarios, {sum(1 for s in scenarios for st in s['steps'] if 'method' in st)} requests", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.compat")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run every scenario against the real Healthchecks and write tests/compat/recorded/")
    r.add_argument("--hc-url", default=os.environ.get("REF_BASE_URL", "http://127.0.0.1:8000"))
    r.add_argument("--commit", required=True, help="the Healthchecks commit that is running (written into the recording)")
    r.add_argument("--api-key"), r.add_argument("--ro-key"), r.add_argument("--other-key")
    r.add_argument("--ping-key"), r.add_argument("--other-ping-key")
    r.add_argument("--only", help="only scenario ids with this prefix (merged into the existing recording)")
    r.add_argument("--no-slow", action="store_true")
    r.add_argument("--concurrency", type=int, default=6)
    r.set_defaults(fn=record)
    q = sub.add_parser("replay", help="replay the recording against pingstream and print the differences")
    q.add_argument("--url", help="an already running pingstream (default: start one)")
    q.add_argument("--keys-json", help='{"API_KEY": ..., "RO_KEY": ..., "OTHER_KEY": ..., "PING_KEY": ..., "OTHER_PING_KEY": ...}')
    q.add_argument("--settle", type=float, default=4.0)
    q.add_argument("--only")
    q.add_argument("--slow", action="store_true", help="also the scenarios that wait for real time (minutes)")
    q.add_argument("--report", help="write the differences as JSON here")
    q.set_defaults(fn=replay)
    k = sub.add_parser("known", help="replay, then rewrite known_differences.json (scenario list) and DIFFERENCES.md")
    k.add_argument("--slow", action="store_true")
    k.set_defaults(fn=known)
    ls = sub.add_parser("list")
    ls.set_defaults(fn=list_)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
