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
    allow = core.load_allowlist()
    expected = {s["id"]: s["responses"] for s in scenarios}
    defs = [core.strip_responses(s) for s in scenarios]
    results = asyncio.run(Runner(target).run_all(defs, expected, progress=_progress(len(defs))))
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
    ls = sub.add_parser("list")
    ls.set_defaults(fn=list_)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
