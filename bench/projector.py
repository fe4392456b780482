"""Projector throughput: a pre-filled log (SQLite, then Kafka) drained by one projector into embedded chdb.

    .venv/bin/python -m bench.projector [--pings 200000] [--checks 10000] [--partitions 4] [--logs sqlite,kafka[,kafka-aiokafka]]
                                        [--baseline DIR] [--rounds 2] [--quick] [--stages | --no-write]

Generates ``--pings`` pings (runs of start + success/fail with a rid, now and then a log
ping, small bodies) over ``--checks`` checks and writes them to a log once per log kind.
Each pass then drains that log from its start (SQLite: a copy of the file; Kafka: the
topics, in a consumer group of its own) with ``projector.service.run`` into a fresh
embedded chdb, in a process of its own, and reports events/s and where the time went (decode,
state load, fold, ClickHouse inserts, and the rest: reading the log, journal, commit), and the CPU
each of its threads used per event after the first batch (``/proc/self/task``): the event loop's,
the inserting threads', the log reader's, chdb's own.

``--stages`` measures instead, in a pass of its own, what each stage of the projector costs with nothing
overlapping (read the log, decode, load states, fold, write into ClickHouse, journal and commit; each stage over
every batch before the next stage begins), as CPU seconds of every thread of the process per event: the one-core
cost of an event, and the events/s one core would do (the issue's "on one core"; a drain overlaps the stages on
the cores it has).

``--no-write`` drains as ever but inserts nothing (``Projector.write`` counts the batch and returns): what reading,
decoding and folding reach alone, on the one interpreter lock they share, whatever ClickHouse does (saved apart,
``bench/results/projector-no-write.json``).

``--baseline DIR`` names another checkout of pingstream (for instance
``git worktree add --detach ../base main``): its passes run that checkout's projector,
interleaved with this one's (A, B, A, B, ... on the same log), and the ratios B/A of
each round are printed beside the absolute figures. On a shared machine only such
ratios mean much, and events per CPU-second (the process's, every thread) much more
than events per wall second. Kafka is PINGSTREAM_KAFKA, else a broker started from the project's
cached jars. Results go to ``bench/results/projector.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench/ is on the path, not the checkout holding it
    sys.path.append(str(ROOT))  # appended: a pass's checkout (--code) still comes first

from bench.checkout import describe  # noqa: E402 (the standard library only, as bench/cpu.py)
from bench.cpu import cpu_seconds  # noqa: E402 (the standard library only: see bench/cpu.py)

RESULTS = ROOT / "bench" / "results" / "projector.json"
STAGES_RESULTS = ROOT / "bench" / "results" / "projector-stages.json"
NO_WRITE_RESULTS = ROOT / "bench" / "results" / "projector-no-write.json"
_KAFKA_FILL_CHUNK = 5000
KAFKA_KINDS = ("kafka", "kafka-aiokafka")


def make_pings(n: int, checks: int, seed: int = 7) -> list:
    from schemas.events import PingEvent, stable_id, uuid7

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


async def fill(log, records: list[tuple[bytes, bytes]]) -> None:
    from schemas.events import TOPIC_PINGS

    for lo in range(0, len(records), _KAFKA_FILL_CHUNK):  # concurrent produces share one commit / request
        await asyncio.gather(*(log.produce(TOPIC_PINGS, value, key=key)
                               for key, value in records[lo:lo + _KAFKA_FILL_CHUNK]))


def open_log(kind: str, where: str, partitions: int):
    """``where``: the SQLite file, or ``bootstrap|prefix`` for Kafka (``kafka``: read as configured by default, with
    librdkafka; ``kafka-aiokafka``: read with aiokafka, ``PINGSTREAM_KAFKA_CONSUMER=aiokafka``)."""
    if kind in KAFKA_KINDS:
        from runtime.eventlog.kafka import KafkaEventLog

        bootstrap, prefix = where.split("|")
        return KafkaEventLog(bootstrap, default_partitions=partitions, prefix=prefix,
                             consumer_client="aiokafka" if kind == "kafka-aiokafka" else "librdkafka")
    from runtime.eventlog.sqlite import SqliteEventLog

    return SqliteEventLog(Path(where), default_partitions=partitions)


# --- one pass, in its own process --------------------------------------------------------------


async def _started(kind: str, where: str, partitions: int, tmp: Path):
    """A pass's log and embedded ClickHouse, started; clickhouse-connect's import of pandas (on a process's first
    insert, ~0.4 s, once) done, as it is not the steady state."""
    from runtime.clickhouse import ClickHouse

    log = open_log(kind, where, partitions)
    await log.start()
    clickhouse = ClickHouse(f"chdb:///{tmp / 'clickhouse'}", "bench")
    await clickhouse.start()
    from clickhouse_connect.driver import options

    options.pd  # noqa: B018
    return log, clickhouse


async def drain(kind: str, where: str, partitions: int, expected: int, tmp: Path, no_write: bool = False) -> dict:
    """Run one projector over the log until it processed ``expected`` records; its figures. ``no_write``: its
    batches are read, decoded and folded as ever, and written nowhere (``--no-write``)."""
    from projector import service
    from runtime.config import Config
    from schemas.events import uuid7

    service.GROUP = f"bench-{uuid7()}"  # a group of its own: every pass reads the log from its start

    log, clickhouse = await _started(kind, where, partitions, tmp)
    projectors = []

    class Observed(service.Projector):  # the run's own Projector, kept for its timings
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            projectors.append(self)

        if no_write:
            async def write(self, prepared, token, check=None) -> dict:
                """Nothing inserted: the batch counted as ``Projector.write`` counts one it wrote."""
                self.counts["records"] += prepared.n_records
                self.counts["pings"] += len(prepared.rows.ping_events)
                self.counts["batches"] += 1
                return {}

    service.Projector = Observed
    stop = asyncio.Event()
    config = Config.from_env({}, data_dir=tmp)
    started, cpu_started = time.perf_counter(), time.process_time()
    task = asyncio.create_task(service.run(config, log, clickhouse, stop))
    first = None  # (time, records) when the first batch was done: start-up (group join) is before it
    threads_first = {}
    while not projectors or projectors[0].counts["records"] < expected:
        if task.done():
            task.result()
        if first is None and projectors and projectors[0].counts["records"]:
            first = (time.perf_counter(), projectors[0].counts["records"])
            threads_first = thread_cpu()
        await asyncio.sleep(0.005)
    ended, cpu_s = time.perf_counter(), time.process_time() - cpu_started
    threads_last = thread_cpu()
    wall_s = ended - started
    steady = (expected - first[1]) / (ended - first[0]) if first and ended > first[0] else None
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
        "rows_in_pings": rows[0][0],
        "runs": runs[0][0],
        "batches": projector.counts["batches"],
        "batches_folded_ahead": projector.counts["folded ahead"],  # while the one before was written
        "wall_s": round(wall_s, 3),
        "events_per_s": round(expected / wall_s),
        "cpu_s": round(cpu_s, 3),  # every thread of the process: Python's, the log's, chdb's
        "events_per_cpu_s": round(expected / cpu_s),
        "events_per_s_after_first_batch": round(steady) if steady else None,
        # CPU per event after the first batch, by thread (the drain's threads all live to its end)
        "cpu_us_per_event_by_thread": per_event_by_thread(threads_first, threads_last, expected - first[1])
        if first and expected > first[1] else {},
        "seconds": {**{k: round(v, 3) for k, v in t.items()}, "other": round(wall_s - accounted, 3)},
        "share": {**{k: round(v / wall_s, 3) for k, v in t.items()}, "other": round(1 - accounted / wall_s, 3)},
    }
    assert result["rows_in_pings"] == (0 if no_write else expected), result
    return result


STAGES = ("read", "decode", "load", "fold", "write", "journal and commit")


async def stage_costs(kind: str, where: str, partitions: int, expected: int, tmp: Path) -> dict:
    """The projector's stages one after the other (``Projector``'s own steps, as ``handle`` runs them, on batches of
    ``BATCH_MAX``, without the shell's overlap; each stage over every batch before the next one): CPU seconds of the
    whole process per event in each (``time.process_time``: every thread, chdb's and the log's too), and what one
    core would do at that cost."""
    from projector import service
    from projector.fold import fold
    from projector.replay import BATCH_MAX, batch_token
    from runtime.consumer import Batch
    from schemas.events import utcnow, uuid7

    group = f"bench-{uuid7()}"
    log, clickhouse = await _started(kind, where, partitions, tmp)
    service._tune_gc()  # as service.run does
    projector = service.Projector(clickhouse, log, group)
    cpu = dict.fromkeys(STAGES, 0.0)
    clock = time.process_time
    async with log.consumer(service.TOPICS, group=group) as consumer:
        # Each stage over every batch before the next stage: no stage's CPU is counted in another's (chdb's
        # merges after an insert, say, while the log is read).
        records: list = []
        started = clock()
        while len(records) < expected:
            records += await consumer.getmany(max_records=min(BATCH_MAX, expected - len(records)), timeout_ms=1000)
        cpu["read"] += clock() - started
        batches = [Batch(records[at:at + BATCH_MAX]) for at in range(0, len(records), BATCH_MAX)]
        del records
        started = clock()
        decoded = [projector.decode(batch.records) for batch in batches]
        cpu["decode"] += clock() - started
        prepared = []
        for batch, (events, sources, _, _) in zip(batches, decoded):
            started = clock()
            await projector.load_states({event.check_id for event, _ in events})
            cpu["load"] += clock() - started
            started = clock()
            rows = fold(projector.states, events)
            prepared.append(service.Prepared(rows, rows.check_state_rows(utcnow()), [], [], len(batch.records),
                                             sources))
            cpu["fold"] += clock() - started
        for batch, folded in zip(batches, prepared):
            token = batch_token(batch.ranges)
            started = clock()
            await projector.write(folded, token)
            cpu["write"] += clock() - started
            started = clock()
            await projector.write_journal(batch.ranges, token)
            await consumer.commit(batch.next_offsets)
            cpu["journal and commit"] += clock() - started
    rows = await clickhouse.query("SELECT count() FROM pings FINAL")
    await clickhouse.close()
    await log.close()
    assert rows[0][0] == expected, rows
    us = {stage: round(seconds / expected * 1e6, 2) for stage, seconds in cpu.items()}
    return {"cpu_us_per_event": us, "one_core_events_per_s": round(expected / sum(cpu.values()))}


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Each thread of this process: its name and the CPU seconds it used so far (``/proc/self/task``).
    Python's threads by their Python name (the event loop's is ``main``; a pool's without its number),
    chdb's by the name ClickHouse gives them."""
    import threading

    named = {t.native_id: t.name.rsplit("_", 1)[0] for t in threading.enumerate() if t.native_id is not None}
    named[threading.main_thread().native_id] = "main (event loop)"
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:  # ended meanwhile
            continue
        cpu = cpu_seconds("self", tid)
        if cpu is not None:
            out[int(tid)] = (named.get(int(tid), f"chdb {comm}"), cpu)
    return out


def per_event_by_thread(before: dict, after: dict, events: int) -> dict[str, float]:
    """Microseconds of CPU per event, summed by thread name, between two ``thread_cpu`` readings."""
    sums: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        sums[name] = sums.get(name, 0.0) + cpu - before.get(tid, (name, 0.0))[1]
    return {name: round(s / events * 1e6, 2) for name, s in sorted(sums.items(), key=lambda x: -x[1]) if s > 0}


def run_pass(code: Path, kind: str, where: str, args, tmp: Path) -> dict:
    """One drain (or with ``--stages``, one measure of the stages) in a fresh process whose ``projector``,
    ``runtime`` and ``schemas`` come from ``code``."""
    command = [sys.executable, "-m", "bench.projector", "--drain", kind, "--where", where, "--code", str(code),
               "--pings", str(args.pings), "--partitions", str(args.partitions), "--tmp", str(tmp)]
    if args.stages:
        command.append("--stages")
    if args.no_write:
        command.append("--no-write")
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"pass ({code}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the comparison, in the parent -------------------------------------------------------------


async def prepare(kind: str, records: list[tuple[bytes, bytes]], tmp: Path, partitions: int,
                  bootstrap: str | None) -> str:
    """Where the passes read the log (SQLite: the file each pass gets a copy of)."""
    from schemas.events import uuid7

    where = str(tmp / "filled.sqlite3") if kind == "sqlite" else f"{bootstrap}|bench{uuid7()[-8:]}."
    log = open_log(kind, where, partitions)
    await log.start()
    await fill(log, records)
    await log.close()
    return where


def compare(args, kind: str, bootstrap: str | None) -> dict:
    from schemas.events import encode

    variants = [("baseline", Path(args.baseline).resolve())] if args.baseline else []
    variants.append(("this", ROOT))
    passes = [(name, code) for _ in range(args.rounds) for name, code in variants]
    pings = make_pings(args.pings, args.checks)
    records = [(p.check_id.encode(), encode(p)) for p in pings]
    with tempfile.TemporaryDirectory(prefix="bench-projector-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        filled = asyncio.run(prepare(kind, records, tmp, args.partitions, bootstrap))
        print(f"{kind}: filled the log with {len(pings)} pings in {time.perf_counter() - started:.1f}s", flush=True)
        results: dict[str, list[dict]] = {name: [] for name, _ in variants}
        for i, (name, code) in enumerate(passes):
            run_dir = tmp / f"pass{i}"
            run_dir.mkdir()
            where = filled
            if kind == "sqlite":  # every pass starts from the same log, as it was filled
                where = str(shutil.copy(filled, run_dir / "eventlog.sqlite3"))
            r = run_pass(code, kind, where, args, run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)
            results[name].append(r)
            if args.stages:
                print(f"  {kind} {name:8s} pass {i // len(variants) + 1}: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_us_per_event"].items())
                      + f" us/event: one core {r['one_core_events_per_s']} events/s", flush=True)
                continue
            print(f"  {kind} {name:8s} pass {i // len(variants) + 1}: {r['events_per_s']:7d} events/s "
                  f"({r['events_per_s_after_first_batch']}/s after the first batch, {r['wall_s']:.2f}s; "
                  f"{r['batches']} batches, {r.get('batches_folded_ahead', 0)} folded ahead), "
                  f"{r['events_per_cpu_s']} events per CPU-second; time: "
                  + ", ".join(f"{k} {v:.0%}" for k, v in r["share"].items()), flush=True)
            if r.get("cpu_us_per_event_by_thread"):
                print("    CPU per event after the first batch, by thread (us): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_us_per_event_by_thread"].items()), flush=True)
    if args.stages:
        return stage_summary(args, kind, results)
    summary = {
        "note": f"{kind} log -> embedded chdb, one projector process per pass; passes interleaved on one log; "
                "pandas import (once per process) done before timing"
                + ("; nothing inserted (--no-write)" if args.no_write else ""),
        "log": kind,
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "args": {**vars(args), "baseline": describe(args.baseline)},
        "passes": results,
        "events_per_s": {name: round(statistics.median(r["events_per_s"] for r in rs)) for name, rs in results.items()},
        "events_per_cpu_s": {name: round(statistics.median(r["events_per_cpu_s"] for r in rs))
                             for name, rs in results.items()},
    }
    line = ", ".join(f"{name} {v} events/s ({summary['events_per_cpu_s'][name]} per CPU-second)"
                     for name, v in summary["events_per_s"].items())
    if args.baseline:
        for figure in ("events_per_s", "events_per_cpu_s"):
            ratios = [b[figure] / a[figure] for a, b in zip(results["baseline"], results["this"])]
            summary[f"ratios_{figure}"] = [round(x, 2) for x in ratios]
            summary[f"ratio_{figure}_median"] = round(statistics.median(ratios), 2)
        line += (f"; this/baseline per round: events/s {summary['ratios_events_per_s']} "
                 f"(median {summary['ratio_events_per_s_median']}x), per CPU-second {summary['ratios_events_per_cpu_s']} "
                 f"(median {summary['ratio_events_per_cpu_s_median']}x)")
    where_to = "nowhere (--no-write)" if args.no_write else "chdb"
    print(f"projector, {kind} -> {where_to} (median of {args.rounds}): {line}", flush=True)
    return summary


def stage_summary(args, kind: str, results: dict[str, list[dict]]) -> dict:
    """``--stages``: the median CPU per event of each stage and of them all, per checkout."""
    summary = {"note": f"{kind} log -> embedded chdb, the projector's stages one after the other, each over every "
                       "batch before the next; CPU of every thread of the process per event", "log": kind,
               "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "args": {**vars(args), "baseline": describe(args.baseline)}, "passes": results, "median": {}}
    for name, rs in results.items():
        stages = {stage: round(statistics.median(r["cpu_us_per_event"][stage] for r in rs), 2) for stage in STAGES}
        one_core = round(statistics.median(r["one_core_events_per_s"] for r in rs))
        summary["median"][name] = {"cpu_us_per_event": stages, "one_core_events_per_s": one_core}
        print(f"projector stages, {kind} -> chdb, {name} (median of {len(rs)}): "
              + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()) + f" us/event; one core {one_core} events/s",
              flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=200_000)
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--logs", default="sqlite,kafka")
    parser.add_argument("--baseline", help="another checkout whose projector runs interleaved with this one's")
    parser.add_argument("--rounds", type=int, default=2, help="passes per variant (A, B, A, B, ...)")
    parser.add_argument("--quick", action="store_true", help="100,000 pings, one round: about half the time")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--stages", action="store_true",
                        help="each stage's CPU per event, one after the other (one core), instead of drains")
    parser.add_argument("--no-write", action="store_true",
                        help="drains that insert nothing: what reading, decoding and folding alone reach")
    parser.add_argument("--drain", help=argparse.SUPPRESS)  # one pass, in its own process (run_pass)
    parser.add_argument("--where", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain:
        sys.path.insert(0, args.code)  # that checkout's projector, runtime and schemas
        # On uvloop where it is installed, as `pingstream projector` runs (pingstream.cli).
        try:
            from uvloop import run as run_loop
        except ImportError:
            run_loop = asyncio.run
        if args.stages:
            measure = stage_costs(args.drain, args.where, args.partitions, args.pings, Path(args.tmp))
        else:
            measure = drain(args.drain, args.where, args.partitions, args.pings, Path(args.tmp), args.no_write)
        result = run_loop(measure)
        print(json.dumps(result))
        return
    if args.quick:
        args.pings, args.rounds = 100_000, 1
    broker, bootstrap = None, os.environ.get("PINGSTREAM_KAFKA")
    kinds = args.logs.split(",")
    if set(KAFKA_KINDS) & set(kinds) and not bootstrap:
        from bench.procs import scratch_broker

        broker = scratch_broker(partitions=args.partitions)
        bootstrap = broker.bootstrap
    try:
        results = {kind: compare(args, kind, bootstrap) for kind in kinds}
    finally:
        if broker is not None:
            broker.stop()
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        saved = STAGES_RESULTS if args.stages else NO_WRITE_RESULTS if args.no_write else RESULTS
        saved.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
