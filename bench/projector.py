"""Projector throughput: a pre-filled log (SQLite, then Kafka) drained by one projector into embedded chdb.

    .venv/bin/python -m bench.projector [--pings 200000] [--checks 10000] [--partitions 4] [--logs sqlite,kafka]

For each log, fills a fresh one with ``--pings`` pings (runs of start + success/fail with a
rid, now and then a log ping, small bodies) over ``--checks`` checks, then runs
``projector.service.run`` over it until it has processed every record,
and prints events/s and where the time went in that one run (decode, state
load, fold, ClickHouse inserts, and the rest: reading the log, journal, commit).
Kafka is PINGSTREAM_KAFKA, else a broker started from the project's cached jars.
Results go to ``bench/results/projector.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from runtime.clickhouse import ClickHouse
from runtime.config import Config
from runtime.eventlog.sqlite import SqliteEventLog
from projector import service
from schemas.events import TOPIC_PINGS, PingEvent, encode, stable_id, uuid7

RESULTS = Path(__file__).resolve().parent / "results" / "projector.json"


def make_pings(n: int, checks: int, seed: int = 7) -> list[PingEvent]:
    rng = random.Random(seed)
    check_ids = [stable_id("bench", str(i)) for i in range(checks)]
    project = stable_id("bench-project")
    t0 = datetime.now(timezone.utc) - timedelta(days=1)
    open_rid: dict[str, str] = {}
    out = []
    for i in range(n):
        check = check_ids[rng.randrange(checks)]
        at = t0 + timedelta(milliseconds=i)
        rid = open_rid.pop(check, None)
        if rid is None:
            kind, rid = "start", str(stable_id("rid", str(i)))
            open_rid[check] = rid
        elif rng.random() < 0.05:
            kind, open_rid[check] = "log", rid
        else:
            kind = "fail" if rng.random() < 0.1 else "success"
        body = b"" if rng.random() < 0.7 else b"job output line\n" * rng.randrange(1, 8)
        out.append(PingEvent(
            event_id=uuid7(), check_id=check, project_id=project, kind=kind, received_at=at, rid=rid,
            exit_status=(1 if kind == "fail" else 0) if kind in ("success", "fail") else None,
            method="POST", scheme="https", remote_addr="10.0.0.1", user_agent="bench/1.0",
            body=body, body_size=len(body),
        ))
    return out


async def fill(log: SqliteEventLog, pings: list[PingEvent]) -> None:
    for lo in range(0, len(pings), 5000):  # concurrent produces share one commit (group commit)
        await asyncio.gather(*(log.produce(TOPIC_PINGS, encode(p), key=p.check_id.encode())
                               for p in pings[lo:lo + 5000]))


def open_log(kind: str, tmp: Path, partitions: int, bootstrap: str | None):
    if kind == "kafka":
        from runtime.eventlog.kafka import KafkaEventLog

        return KafkaEventLog(bootstrap, default_partitions=partitions, prefix=f"bench{uuid7()[-8:]}.")
    return SqliteEventLog(tmp / "eventlog.sqlite3", default_partitions=partitions)


async def main(args, kind: str = "sqlite", bootstrap: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-projector-") as tmp:
        tmp = Path(tmp)
        log = open_log(kind, tmp, args.partitions, bootstrap)
        await log.start()
        pings = make_pings(args.pings, args.checks)
        started = time.perf_counter()
        await fill(log, pings)
        fill_s = time.perf_counter() - started
        print(f"filled the log with {len(pings)} pings in {fill_s:.1f}s", flush=True)

        clickhouse = ClickHouse(f"chdb:///{tmp / 'clickhouse'}", "bench")
        await clickhouse.start()
        projectors = []

        class Observed(service.Projector):  # the run's own Projector, kept for its timings
            def __init__(self, *a, **kw) -> None:
                super().__init__(*a, **kw)
                projectors.append(self)

        service.Projector = Observed
        # clickhouse-connect imports pandas on a process's first insert (~0.4 s, once): not the steady state.
        from clickhouse_connect.driver import options

        options.pd  # noqa: B018
        stop = asyncio.Event()
        config = Config.from_env({}, data_dir=tmp)
        started = time.perf_counter()
        task = asyncio.create_task(service.run(config, log, clickhouse, stop))
        first = None  # (time, records) when the first batch was done: start-up (group join) is before it
        while not projectors or projectors[0].counts["records"] < len(pings):
            if task.done():
                task.result()
            if first is None and projectors and projectors[0].counts["records"]:
                first = (time.perf_counter(), projectors[0].counts["records"])
            await asyncio.sleep(0.005)
        ended = time.perf_counter()
        wall_s = ended - started
        steady = (len(pings) - first[1]) / (ended - first[0]) if first and ended > first[0] else None
        stop.set()
        await task
        [projector] = projectors
        rows = await clickhouse.query("SELECT count() FROM pings FINAL")
        runs = await clickhouse.query("SELECT count() FROM runs FINAL")
        await clickhouse.close()
        await log.close()

    t = dict(projector.timings)
    accounted = sum(t.values())
    result = {
        "note": f"{kind} log -> embedded chdb, one process, one core for Python; pandas import (once per process) done before timing",
        "log": kind,
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "args": vars(args),
        "pings": len(pings),
        "rows_in_pings": rows[0][0],
        "runs": runs[0][0],
        "batches": projector.counts["batches"],
        "wall_s": round(wall_s, 3),
        "events_per_s": round(len(pings) / wall_s),
        "events_per_s_after_first_batch": round(steady) if steady else None,
        "seconds": {**{k: round(v, 3) for k, v in t.items()}, "other": round(wall_s - accounted, 3)},
        "share": {**{k: round(v / wall_s, 3) for k, v in t.items()}, "other": round(1 - accounted / wall_s, 3)},
    }
    print(f"projector, {kind} -> chdb: {result['events_per_s']} events/s "
          f"({result['events_per_s_after_first_batch']}/s after the first batch) ({len(pings)} pings, {result['batches']} batches, "
          f"{wall_s:.2f}s); time: " + ", ".join(f"{k} {v:.0%}" for k, v in result["share"].items()))
    assert result["rows_in_pings"] == len(pings), result
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=200_000)
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--logs", default="sqlite,kafka")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    broker, bootstrap = None, os.environ.get("PINGSTREAM_KAFKA")
    kinds = args.logs.split(",")
    if "kafka" in kinds and not bootstrap:
        from runtime import kafkabroker

        broker = kafkabroker.start_broker(tempfile.mkdtemp(prefix="bench-kafka-"), partitions=args.partitions)
        bootstrap = broker.bootstrap
    try:
        results = {kind: asyncio.run(main(args, kind, bootstrap)) for kind in kinds}
    finally:
        if broker is not None:
            broker.stop()
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
