"""The embedded log's consumers in one process share their reads of the file (sqlite_reads.py):
one SELECT serves the groups close behind each other, and each group still reads every record,
in order, from its own committed offsets."""

from __future__ import annotations

import asyncio
import random

from runtime.eventlog import sqlite_reads
from runtime.eventlog.base import TopicPartition
from runtime.eventlog.sqlite import SqliteEventLog

TOPIC = "pings"
PARTITIONS = 4


def _count_selects(monkeypatch) -> list[int]:
    """How many SELECTs of records the consumers ran (the rows each asked for)."""
    selects = []
    original = sqlite_reads.select
    monkeypatch.setattr(sqlite_reads, "select", lambda conn, tp, position, limit: selects.append(limit)
                        or original(conn, tp, position, limit))
    return selects


async def _produce(log: SqliteEventLog, n: int, start: int = 0) -> None:
    await asyncio.gather(*(log.produce(TOPIC, b"v%d" % i, key=b"k%d" % (i % 13)) for i in range(start, start + n)))


def _by_partition(records) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r.value)
    return out


async def _all(log: SqliteEventLog) -> dict[int, list[bytes]]:
    consumer = log.consumer([TOPIC], group=None)
    await consumer.start()
    records = []
    while batch := await consumer.getmany(timeout_ms=0):
        records += batch
    await consumer.close()
    return _by_partition(records)


async def test_it_reads_each_new_record_once_for_three_groups(tmp_path, monkeypatch):
    selects = _count_selects(monkeypatch)
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=PARTITIONS)
    async with log:
        await log.partitions(TOPIC)
        consumers = [log.consumer([TOPIC], group=f"g{n}") for n in range(3)]
        for consumer in consumers:
            await consumer.start()
        got = [[] for _ in consumers]
        for round_ in range(20):
            await _produce(log, 50, round_ * 50)
            before = len(selects)
            for consumer, records in zip(consumers, got):
                records += await consumer.getmany(timeout_ms=0)
            # The first consumer reads each partition for all three: one SELECT a partition, not three.
            assert len(selects) - before == PARTITIONS
        for consumer in consumers:
            await consumer.close()
        expected = await _all(log)
    assert sum(map(len, expected.values())) == 1000
    for records in got:
        assert _by_partition(records) == expected


async def test_a_slow_group_and_a_restart_skip_nothing_and_repeat_only_the_uncommitted(tmp_path, monkeypatch):
    """Three groups read while records keep coming: one reads small batches and commits only every
    third, one is closed and started again in the middle (it reads again what it had not
    committed, from its committed offsets), one reads at full speed. Each sees every record of each
    partition in order; the restarted one sees again exactly what it had read but not committed."""
    monkeypatch.setattr(sqlite_reads, "WINDOW_MAX", 300)  # the slow group falls behind the window too
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=PARTITIONS)
    rng = random.Random(7)
    total = 3000
    async with log:
        await log.partitions(TOPIC)
        producing = asyncio.ensure_future(_produce_slowly(log, total))

        async def group(name: str, max_records: int, commit_every: int, restart_after: int | None) -> list:
            seen, batches, restarted = [], 0, False
            consumer = log.consumer([TOPIC], group=name)
            await consumer.start()
            committed_at = 0  # records in seen up to the last commit
            while True:
                ends = await consumer.end_offsets()
                positions = await consumer.positions()
                if producing.done() and positions == ends:
                    break
                batch = await consumer.getmany(max_records=max_records, timeout_ms=50)
                seen += batch
                if batch:
                    batches += 1
                    if batches % commit_every == 0:
                        await consumer.commit()
                        committed_at = len(seen)
                if restart_after is not None and not restarted and len(seen) >= restart_after:
                    restarted = True
                    uncommitted = seen[committed_at:]
                    await consumer.close()  # not committed: read again by the next consumer of the group
                    consumer = log.consumer([TOPIC], group=name)
                    await consumer.start()
                    # Read until each partition gave back as many as it had uncommitted: partitions are read
                    # in no order, so one may already give records produced since while another has not begun.
                    want = _by_partition(uncommitted)
                    again: dict[int, list] = {}
                    while any(len(again.get(p, ())) < len(values) for p, values in want.items()):
                        for r in await consumer.getmany(max_records=rng.randint(1, 200), timeout_ms=50):
                            again.setdefault(r.partition, []).append(r)
                    # Exactly what was read and not committed, partition by partition, then on as before.
                    assert {p: [r.value for r in again[p][:len(values)]] for p, values in want.items()} == want
                    seen += [r for p, records in again.items() for r in records[len(want.get(p, ())):]]
                await asyncio.sleep(rng.random() * 0.01 if name == "slow" else 0)
            await consumer.commit()
            await consumer.close()
            return seen

        results = await asyncio.gather(
            group("fast", 10_000, 1, None),
            group("slow", 37, 3, None),
            group("restarted", 500, 2, 1200),
        )
        await producing
        expected = await _all(log)
    assert sum(map(len, expected.values())) == total
    for seen in results:
        assert _by_partition(seen) == expected  # all, in order, once (the re-read is checked above)


async def _produce_slowly(log: SqliteEventLog, total: int) -> None:
    for start in range(0, total, 100):
        await _produce(log, 100, start)
        await asyncio.sleep(0.005)


async def test_the_window_is_bounded_and_a_consumer_far_behind_reads_on_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_reads, "WINDOW_MAX", 100)
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=1)
    async with log:
        await _produce(log, 1000)
        ahead = log.consumer([TOPIC], group="ahead")
        behind = log.consumer([TOPIC], group="behind")
        await ahead.start()
        await behind.start()
        read_ahead = []
        while batch := await ahead.getmany(max_records=250, timeout_ms=0):
            read_ahead += batch
        window = log.shared_reads._windows[TopicPartition(TOPIC, 0)]
        assert len(window.records) <= 100  # not the 1000 the other consumer has not read yet
        read_behind = []
        while batch := await behind.getmany(max_records=64, timeout_ms=0):
            read_behind += batch
        await ahead.close()
        await behind.close()
        assert window.records == []  # nobody left to keep records for
    assert [r.value for r in read_ahead] == [r.value for r in read_behind] == [b"v%d" % i for i in range(1000)]


async def test_a_group_starting_at_the_end_shares_the_reads_of_one_catching_up(tmp_path, monkeypatch):
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=1)
    async with log:
        await _produce(log, 500)
        history = log.consumer([TOPIC], group="history")
        fresh = log.consumer([TOPIC], group="fresh", from_end=True)
        await history.start()
        await fresh.start()
        await _produce(log, 20, 500)
        new = await fresh.getmany(timeout_ms=0)
        old = []
        while batch := await history.getmany(max_records=128, timeout_ms=0):
            old += batch
        await _produce(log, 5, 520)
        new += await fresh.getmany(timeout_ms=0)
        old += await history.getmany(timeout_ms=0)
        await history.close()
        await fresh.close()
    assert [r.value for r in new] == [b"v%d" % i for i in range(500, 525)]
    assert [r.value for r in old] == [b"v%d" % i for i in range(525)]


async def test_a_commit_of_every_partition_is_one_statement_and_survives_a_restart(tmp_path):
    """The offsets of all a consumer's partitions go in one statement: one transaction and one fsync
    with the write lock held, not one per partition (the connection is in autocommit)."""
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=PARTITIONS)
    topics = [TOPIC, "transitions", "checks"]
    async with log:
        for topic in topics:
            await log.produce(topic, b"x", key=b"k")
        consumer = log.consumer(topics, group="g")
        await consumer.start()
        await consumer.getmany(timeout_ms=0)
        statements = []
        consumer._conn.set_trace_callback(statements.append)
        offsets = {tp: 7 + n for n, tp in enumerate(sorted(consumer.assignment()))}
        await consumer.commit(offsets)
        consumer._conn.set_trace_callback(None)
        await consumer.close()
        assert len(offsets) == 3 * PARTITIONS
        assert [s.split()[0] for s in statements] == ["INSERT"]
        again = log.consumer(topics, group="g")
        await again.start()
        assert await again.positions() == offsets
        await again.close()
