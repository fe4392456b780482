"""The embedded log's retention pass on a big log: how long it holds SQLite's write lock, and what a ping waits.

    .venv/bin/python -m bench.retention [--pings 2000000] [--checks 10000] [--versions 3] [--partitions 4]
                                        [--baseline DIR] [--rounds 2] [--no-save]

Fills a SQLite log once: ``--pings`` pings (all younger than the week of retention, as in a log that
retention keeps trimmed) and, in the compacted topics ``pingstream.checks`` and
``pingstream.monitor-state``, ``--versions`` records of each of ``--checks`` checks. Each pass then
runs one retention pass (``runtime.eventlog.retention.enforce``, the default policy, every group
caught up) on a copy of that file, in a process of its own, while a ping is produced every 10 ms.
It prints the pass's time, the longest single call on the log's writer thread (while it runs,
every process's pings wait: SQLite has one writer) and the longest produce. ``--baseline DIR`` runs
another checkout's pass interleaved with this one's (``git worktree add --detach ../base <rev>``).
Results go to ``bench/results/retention.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench/ is on the path, not the checkout holding it
    sys.path.append(str(ROOT))

from bench.checkout import describe  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "retention.json"

# One pass, in the checkout given as the working directory (its own runtime package).
_PASS = r"""
import asyncio, json, sys, time
from runtime import config as cfg
from runtime.eventlog.retention import enforce, policy_for
from runtime.eventlog.sqlite import SqliteEventLog

async def main(path):
    log = SqliteEventLog(path, default_partitions=int(sys.argv[2]))
    await log.start()
    calls = []
    on_writer = log.on_writer

    async def timed(fn, *args):
        started = time.perf_counter()
        try:
            return await on_writer(fn, *args)
        finally:
            calls.append(time.perf_counter() - started)

    log.on_writer = timed
    waits, done = [], asyncio.Event()

    async def pinging():
        while not done.is_set():
            started = time.perf_counter()
            await log.produce("pingstream.pings", b"x" * 300, key=b"bench-check")
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    pinger = asyncio.create_task(pinging())
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    result = await enforce(log, policy_for(cfg.Config.from_env({})))
    took = time.perf_counter() - started
    done.set()
    await pinger
    await log.close()
    print(json.dumps({"pass_s": took, "writer_calls": len(calls), "longest_call_s": max(calls),
                      "longest_produce_s": max(waits), "produces": len(waits),
                      "deleted": result.deleted, "compacted": result.compacted}))

asyncio.run(main(sys.argv[1]))
"""


def fill(path: Path, pings: int, checks: int, versions: int, partitions: int) -> None:
    sys.path.insert(0, str(ROOT))
    from runtime.eventlog.sqlite_db import SCHEMA

    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA)
    now_ms = int(time.time() * 1000)
    conn.execute("BEGIN")
    topics = [("pingstream.pings", pings)] + [(t, checks * versions)
                                               for t in ("pingstream.checks", "pingstream.monitor-state")]
    for topic, _ in topics:
        conn.execute("INSERT INTO topics VALUES (?, ?)", (topic, partitions))
    value = b"x" * 300
    for topic, count in topics:
        offsets = [0] * partitions
        rows = []
        for i in range(count):
            key = f"check-{i % checks}".encode()
            partition = i % checks % partitions
            rows.append((topic, partition, offsets[partition], key, value, now_ms - (count - i)))
            offsets[partition] += 1
            if len(rows) == 50_000:
                conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
                rows.clear()
        conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
        print(f"  filled {topic}: {count:,} records", flush=True)
    conn.execute("COMMIT")
    conn.close()


def one_pass(checkout: Path, filled: Path, work: Path, partitions: int) -> dict:
    copy = work / "pass.sqlite3"
    shutil.copyfile(filled, copy)
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, "-c", _PASS, str(copy), str(partitions)], cwd=checkout, env=env,
                         capture_output=True, text=True, timeout=3600)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    if out.returncode != 0:
        raise SystemExit(f"a retention pass failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=2_000_000)
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", help="another checkout whose retention pass runs interleaved with this one's")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    variants = ([("baseline", Path(args.baseline).resolve())] if args.baseline else []) + [("this", ROOT)]
    work = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    try:
        filled = work / "filled.sqlite3"
        print(f"filling a log: {args.pings:,} pings, {args.checks:,} checks x {args.versions} versions "
              f"in 2 compacted topics, {args.partitions} partitions", flush=True)
        fill(filled, args.pings, args.checks, args.versions, args.partitions)
        runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
        for round_ in range(1, args.rounds + 1):
            for name, checkout in variants:
                r = one_pass(checkout, filled, work, args.partitions)
                runs[name].append(r)
                print(f"round {round_} {name:8}: pass {r['pass_s']:.3f} s in {r['writer_calls']} writer calls, "
                      f"longest call {r['longest_call_s'] * 1e3:.1f} ms, longest produce "
                      f"{r['longest_produce_s'] * 1e3:.1f} ms ({r['produces']} produces), "
                      f"{r['compacted']:,} superseded deleted", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {name: {k: statistics.median(r[k] for r in rs) for k in ("pass_s", "longest_call_s", "longest_produce_s")}
               for name, rs in runs.items()}
    if args.baseline:
        for k in ("pass_s", "longest_call_s", "longest_produce_s"):
            ratios = [b[k] / a[k] for a, b in zip(runs["baseline"], runs["this"])]
            print(f"this/baseline {k}: per round {[round(x, 3) for x in ratios]}")
    if not args.no_save:
        RESULTS.write_text(json.dumps({
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "args": {**vars(args), "baseline": describe(variants[0][1]) if args.baseline else None},
            "this": describe(ROOT), "runs": runs, "medians": summary,
        }, indent=2) + "\n")
        print(f"saved {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
