"""What a restarted projector pays to read back the keyed pings it counted (``ping_keys``, real embedded chdb).

    .venv/bin/python -m bench.keys_restart [--checks 300] [--days 7] [--every-s 120] [--rounds 2] [--no-save]

Fills ``ping_keys`` as a fleet keying every ping leaves it: ``--checks`` checks, a keyed ping every
``--every-s`` seconds for ``--days`` days (the table keeps a week). Then, interleaved, two ways of
reading it back into the checks' ``RecentIds``:

- ``window``: ``Projector._load_keys``: the rows of the day before each check's newest key, at most
  ``MAX_KEYS_PER_CHECK`` per check, streamed block by block;
- ``all``: every row of the checks at once (``result_rows``), as the projector read them until
  December 2026, kept here as the reference.

Printed per round: ids remembered (both hold every key of the last 24 h), seconds, and the peak of Python's allocations during the
read (``tracemalloc``; it slows both the same way); then the ratios window/all.
Results go to ``bench/results/keys_restart.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from bench.checkout import save  # noqa: E402
from checks import idempotency  # noqa: E402
from checks.idempotency import RecentIds  # noqa: E402
from projector.fold import CheckFold  # noqa: E402
from projector.service import Projector  # noqa: E402
from runtime.clickhouse import ClickHouse, id_chunks  # noqa: E402
from schemas.events import stable_id  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "keys_restart.json"
PROJECT = str(stable_id("bench-project"))


async def load_all(ch: ClickHouse, states: dict[str, CheckFold]) -> int:
    """The reference: every row of the checks, then packed."""

    def query(client):
        return [row for ids in id_chunks(states) for row in client.query(
            "SELECT toString(check_id), toString(event_id), toFloat64(received_at), n FROM ping_keys "
            "WHERE check_id IN {ids:Array(UUID)} ORDER BY check_id, received_at, n",
            parameters={"ids": ids},
        ).result_rows]

    rows = await ch.run(query)
    for check_id, event_id, at, n in rows:
        state = states[check_id]
        if n <= state.n_pings:
            if state.recent is None:
                state.recent = RecentIds()
            state.recent.add(event_id, at)
    return len(rows)


async def one(kind: str, ch: ClickHouse, checks: list[str], n_pings: int) -> dict:
    states = {c: CheckFold(check_id=c, project_id=PROJECT, n_pings=n_pings) for c in checks}
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    if kind == "window":
        await Projector(ch, None)._load_keys(states)
        rows = None
    else:
        rows = await load_all(ch, states)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ids = sum(len(s.recent) for s in states.values() if s.recent is not None)
    return {"seconds": elapsed, "peak_mb": peak / 1e6, "ids": ids, "rows": rows}


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="keys-restart-") as tmp:
        ch = ClickHouse(f"chdb:///{Path(tmp) / 'clickhouse'}", "bench")
        await ch.start()
        try:
            checks = [str(stable_id("bench", str(i))) for i in range(args.checks)]
            per_check = int(args.days * 86400 / args.every_s)
            started = time.perf_counter()
            await ch.run(lambda client: client.command(
                "INSERT INTO ping_keys (event_id, check_id, received_at, n) SELECT generateUUIDv4(number), "
                "arrayElement({checks:Array(UUID)}, (number % {k:UInt64}) + 1), "
                "now64(6) - toIntervalMicrosecond(intDiv(number, {k:UInt64}) * {step:UInt64}), "
                "{per:UInt64} - intDiv(number, {k:UInt64}) FROM numbers({total:UInt64})",
                parameters={"checks": checks, "k": args.checks, "step": int(args.every_s * 1e6), "per": per_check,
                            "total": per_check * args.checks}))
            [(total,)] = await ch.query("SELECT count() FROM ping_keys")
            print(f"{total:,} rows in ping_keys ({args.checks:,} checks x {per_check:,}), "
                  f"{time.perf_counter() - started:.1f} s to fill", flush=True)
            rounds = []
            for r in range(args.rounds):
                got = {}
                for kind in ("window", "all"):
                    got[kind] = g = await one(kind, ch, checks, per_check)
                    print(f"round {r + 1} {kind:6}: {g['ids']:,} ids remembered, {g['seconds']:.2f} s, "
                          f"Python's peak {g['peak_mb']:.0f} MB", flush=True)
                # Both hold every key of the last 24 h; ``all`` also up to an hour more, which its hourly
                # prunes while adding a week had not reached yet.
                day = len(checks) * min(per_check, int(86400 / args.every_s), idempotency.MAX_KEYS_PER_CHECK)
                assert day <= got["window"]["ids"] <= got["all"]["ids"], got
                rounds.append({**got, "time_ratio": got["window"]["seconds"] / got["all"]["seconds"],
                               "peak_ratio": got["window"]["peak_mb"] / got["all"]["peak_mb"]})
                print(f"round {r + 1} window/all: time {rounds[-1]['time_ratio']:.2f}x, "
                      f"peak {rounds[-1]['peak_ratio']:.2f}x", flush=True)
        finally:
            await ch.close()
    summary = {"time_ratio": statistics.median(x["time_ratio"] for x in rounds),
               "peak_ratio": statistics.median(x["peak_ratio"] for x in rounds), "rows": total}
    print(f"median window/all: time {summary['time_ratio']:.2f}x, peak {summary['peak_ratio']:.2f}x")
    if not args.no_save:
        save(RESULTS, ROOT, args, rounds, summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=300)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--every-s", type=float, default=120.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-save", action="store_true")
    asyncio.run(main(parser.parse_args()))
