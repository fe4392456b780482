"""What only the embedded SQLite log has: its group-commit writer task."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from runtime.eventlog import sqlite, sqlite_consumer, sqlite_db
from runtime.eventlog.base import LogUnavailable
from runtime.eventlog.sqlite import SqliteEventLog


class WriterCrash(BaseException):
    """Not an Exception: escapes the writer's handling of failed writes, as a bug would."""


async def test_a_dead_writer_fails_waiting_produces_instead_of_hanging(tmp_path, monkeypatch):
    log = SqliteEventLog(tmp_path / "log.sqlite3")
    await log.start()
    try:
        assert await log.produce("t", b"kept") == (0, 0)

        def crash(batch):
            raise WriterCrash("boom")

        monkeypatch.setattr(log, "_write_batch", crash)
        waiting = [asyncio.ensure_future(log.produce("t", f"{i}".encode())) for i in range(50)]
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
        assert all(isinstance(r, LogUnavailable) for r in results), results
        with pytest.raises(LogUnavailable, match="writer stopped"):
            await log.produce("t", b"after")
    finally:
        await log.close()
    reopened = SqliteEventLog(tmp_path / "log.sqlite3")
    async with reopened:
        consumer = reopened.consumer(["t"], group=None)
        await consumer.start()
        records = await consumer.getmany(timeout_ms=100)
        await consumer.close()
    assert [r.value for r in records] == [b"kept"]  # what was acknowledged is there, nothing else


async def test_other_work_on_the_connection_gets_turns_under_sustained_produce_load(tmp_path):
    """The writer thread commits batch after batch on its own while produces keep coming; it still
    yields the connection regularly, so a compaction or a new topic does not wait for the load to stop."""
    log = SqliteEventLog(tmp_path / "log.sqlite3")
    await log.start()
    stop = asyncio.Event()
    acked = 0

    async def producer(n: int) -> None:
        nonlocal acked
        while not stop.is_set():
            await log.produce("t", b"x", key=f"k{n}".encode())
            acked += 1

    producers = [asyncio.create_task(producer(n)) for n in range(64)]
    try:
        await asyncio.sleep(0.3)
        before = acked
        assert await asyncio.wait_for(log.partitions("another-topic"), 2) == [0]
        assert await asyncio.wait_for(log.compact("t"), 2) >= 0
        assert acked > before  # the load was really going on meanwhile
    finally:
        stop.set()
        await asyncio.gather(*producers)
        await log.close()
    reopened = SqliteEventLog(tmp_path / "log.sqlite3")
    async with reopened:
        consumer = reopened.consumer(["t"], group=None)
        await consumer.start()
        end = await consumer.end_offsets()
        await consumer.close()
    assert sum(end.values()) == acked  # offsets run on past compaction: every acknowledged record was written



async def test_close_during_a_commit_with_more_queued_still_writes_all_and_returns(tmp_path, monkeypatch):
    """close() arriving while the writer thread is busy, with a produce queued behind that commit,
    writes the produce and returns: the writer loop must not sleep through the close."""
    log = SqliteEventLog(tmp_path / "log.sqlite3")
    await log.start()
    gate = threading.Event()
    drain = log._drain

    def held_drain(loop):
        drain(loop)
        gate.wait(5)  # the writer thread is still busy while the test queues more and closes

    monkeypatch.setattr(log, "_drain", held_drain)
    first = asyncio.ensure_future(log.produce("t", b"a"))
    assert await asyncio.wait_for(first, 5) == (0, 0)
    queued = asyncio.ensure_future(log.produce("t", b"b"))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(log.close())
    await asyncio.sleep(0)
    gate.set()
    await asyncio.wait_for(closing, 5)
    assert await queued == (0, 1)


async def _produce_in_turns(a: SqliteEventLog, b: SqliteEventLog, rounds: int) -> dict:
    """Both logs produce into one partition at once, round after round; where each record went."""
    placed = {}
    for rnd in range(rounds):
        values = [f"{w}{rnd}:{i}".encode() for w in "ab" for i in range(8)]
        logs = [a if v.startswith(b"a") else b for v in values]
        results = await asyncio.gather(*(log.produce("t", v, key=b"k") for log, v in zip(logs, values)))
        placed.update(zip(results, values))
    return placed


async def _all_records(log: SqliteEventLog) -> list:
    consumer = log.consumer(["t"], group=None)
    await consumer.start()
    records = []
    while batch := await consumer.getmany(timeout_ms=0):
        records += batch
    await consumer.close()
    return records


def _count_locked(monkeypatch) -> list[int]:
    locked = []
    original = SqliteEventLog._write_locked
    monkeypatch.setattr(SqliteEventLog, "_write_locked", lambda self, batch: locked.append(len(batch)) or original(self, batch))
    return locked


@contextlib.asynccontextmanager
async def _two_writers(path):
    """Two logs on one file, as two processes writing it (the edges of `up`); both closed at the end."""
    a, b = SqliteEventLog(path), SqliteEventLog(path)
    await a.start()
    try:
        await b.start()
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


async def test_two_writers_taking_turns_append_where_the_other_stopped(tmp_path, monkeypatch):
    """Each log writes a batch as one INSERT after the partition head the last writer published in
    the write lock's file: logs taking turns never collide, and only each log's first batch (whose
    partition count it does not know yet) goes the locked way. Both logs' records end up contiguous,
    each once, where produce said."""
    locked = _count_locked(monkeypatch)
    path = tmp_path / "log.sqlite3"
    async with _two_writers(path) as (a, b):
        placed = await _produce_in_turns(a, b, 30)
        records = await _all_records(a)
    assert len(placed) == len(records) == 30 * 16
    assert sorted(r.offset for r in records) == list(range(30 * 16))
    assert {(r.partition, r.offset): r.value for r in records} == placed
    assert len(locked) <= 2


async def test_a_writer_that_did_not_publish_its_heads_costs_a_collision_not_an_offset(tmp_path, monkeypatch):
    """A writer killed between its commit and the publication of its heads leaves them behind the
    log: the next writer's INSERT collides on the primary key, writes nothing, and the batch goes
    the locked way, counting from the log."""
    locked = _count_locked(monkeypatch)
    path = tmp_path / "log.sqlite3"
    async with _two_writers(path) as (a, b):
        await _produce_in_turns(a, b, 2)
        before = len(locked)
        monkeypatch.setattr(b._write_lock, "publish_heads", lambda heads: None)
        placed = {await b.produce("t", f"b-unpublished-{i}".encode(), key=b"k"): f"b-unpublished-{i}" for i in range(3)}
        placed[await a.produce("t", b"a-after", key=b"k")] = "a-after"
        records = await _all_records(a)
    assert len(locked) > before  # a's batch collided with b's records and was written the locked way
    assert sorted(r.offset for r in records) == list(range(2 * 16 + 4))
    assert {(r.partition, r.offset): r.value.decode() for r in records if r.offset >= 32} == placed


async def test_unreadable_heads_in_the_lock_file_are_ignored(tmp_path):
    """The heads are a hint: a lock file whose heads do not check out (torn, overwritten) is read as
    no heads, and the log counts from its records."""
    path = tmp_path / "log.sqlite3"
    async with _two_writers(path) as (a, b):
        await _produce_in_turns(a, b, 2)
        with open(sqlite_db.lock_file(path), "r+b") as lock_file:
            lock_file.seek(30)
            lock_file.write(b"garbage")
        placed = {await b.produce("t", b"b-next", key=b"k"): "b-next", await a.produce("t", b"a-next", key=b"k"): "a-next"}
        records = await _all_records(b)
    assert sorted(r.offset for r in records) == list(range(2 * 16 + 2))
    assert {(r.partition, r.offset): r.value.decode() for r in records if r.offset >= 32} == placed


async def test_a_waiting_consumer_wakes_for_its_topics_only(tmp_path, monkeypatch):
    """A consumer waiting for records wakes when this process commits to one of its topics, and
    sleeps through commits to others (the edge's registry follower through its pings) until its
    next poll for other processes' records."""
    monkeypatch.setattr(sqlite_consumer, "_POLL_S", 1.0)
    log = SqliteEventLog(tmp_path / "log.sqlite3")
    await log.start()
    try:
        await log.produce("checks", b"c0", key=b"k")
        await log.produce("pings", b"p0", key=b"k")
        consumer = log.consumer(["checks"], group=None)
        await consumer.start()
        assert [r.value for r in await consumer.getmany(timeout_ms=0)] == [b"c0"]
        reads = []
        original = consumer._read
        monkeypatch.setattr(consumer, "_read", lambda wanted, n: reads.append(n) or original(wanted, n))

        async def pings() -> None:
            for i in range(100):
                await log.produce("pings", b"p%d" % i, key=b"k")  # one commit each

        producing = asyncio.ensure_future(pings())
        assert await consumer.getmany(timeout_ms=300) == []
        await producing
        assert len(reads) <= 2, reads  # the first look and the one at the timeout: none per commit to "pings"
        waiting = asyncio.ensure_future(consumer.getmany(timeout_ms=5_000))
        await asyncio.sleep(0.1)
        started = asyncio.get_running_loop().time()
        await log.produce("checks", b"c1", key=b"k")
        assert [r.value for r in await waiting] == [b"c1"]
        assert asyncio.get_running_loop().time() - started < 0.04  # woken by the commit, not the next poll
        await consumer.close()
    finally:
        await log.close()


async def test_a_consumer_asks_only_for_partitions_the_published_heads_say_have_records_for_it(tmp_path,
                                                                                              monkeypatch):
    """Between its reads of every partition (``FULL_READ_S``), a consumer asks SQLite only for the partitions
    whose published head is past its position: pings to one partition of four cost reads of that one (an
    idle ``up`` made hundreds of empty SELECTs a second), and partitions nobody wrote to are not asked."""
    monkeypatch.setattr(sqlite_consumer, "FULL_READ_S", 3600.0)
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=4)
    await log.start()
    try:
        await log.produce("pings", b"p0", partition=2)
        consumer = log.consumer(["pings", "checks"], group=None)
        await consumer.start()
        assert [r.value for r in await consumer.getmany(timeout_ms=0)] == [b"p0"]  # the first read: every partition
        asked = []
        original = log.shared_reads.read
        monkeypatch.setattr(log.shared_reads, "read",
                            lambda conn, reader, tp, position, limit: asked.append(tp) or original(
                                conn, reader, tp, position, limit))
        assert await consumer.getmany(timeout_ms=0) == [] and asked == []
        await log.produce("pings", b"p1", partition=2)
        await log.produce("pings", b"p2", partition=2)
        assert [r.value for r in await consumer.getmany(timeout_ms=0)] == [b"p1", b"p2"]
        assert asked == [("pings", 2)]
        await log.produce("checks", b"c0", partition=1)
        assert [r.value for r in await consumer.getmany(timeout_ms=200)] == [b"c0"]
        assert asked == [("pings", 2), ("checks", 1)]
        await consumer.close()
    finally:
        await log.close()


async def test_records_the_heads_do_not_show_are_read_within_a_full_read(tmp_path, monkeypatch):
    """A writer killed between its commit and the publication of its heads leaves records the heads do not
    show: the consumer still reads them at its next read of every partition."""
    monkeypatch.setattr(sqlite_consumer, "FULL_READ_S", 0.3)
    path = tmp_path / "log.sqlite3"
    async with _two_writers(path) as (a, b):
        await a.produce("t", b"a0", partition=0)
        consumer = a.consumer(["t"], group=None)
        await consumer.start()
        assert [r.value for r in await consumer.getmany(timeout_ms=0)] == [b"a0"]
        monkeypatch.setattr(b._write_lock, "publish_heads", lambda heads: None)
        await b.produce("t", b"b-unpublished", partition=0)
        got = await consumer.getmany(timeout_ms=0)
        got += await consumer.getmany(timeout_ms=2_000)
        assert [r.value for r in got] == [b"b-unpublished"]
        await consumer.close()


async def test_consumers_waiting_on_another_writer_share_one_reader_of_its_heads(tmp_path, monkeypatch):
    """Consumers waiting for records another process writes (the engine's, for the edges' pings) are woken by
    one watcher of the published heads per log object, which reads the lock file every ``WATCH_S``: not by
    each consumer looking for itself (an idle engine read it about 200 times a second). A consumer of a topic
    the other process writes to is woken within about ``WATCH_S``; one of another topic sleeps on."""
    monkeypatch.setattr(sqlite_consumer, "FULL_READ_S", 3600.0)
    path = tmp_path / "log.sqlite3"
    async with _two_writers(path) as (a, b):
        await a.produce("pings", b"p0", partition=0)
        await a.produce("checks", b"c0", partition=0)
        consumers = [b.consumer(["pings"] if i else ["checks"], group=None) for i in range(6)]
        for consumer in consumers:
            await consumer.start()
            assert len(await consumer.getmany(timeout_ms=0)) == 1
        reads = []
        original = b.published_heads.get
        monkeypatch.setattr(b.published_heads, "get", lambda: reads.append(1) or original())
        waiting = [asyncio.ensure_future(c.getmany(timeout_ms=3_000)) for c in consumers]
        await asyncio.sleep(1.0)
        assert not any(w.done() for w in waiting)
        assert len(reads) <= 1.0 / sqlite.WATCH_S + 3 * len(consumers) + 5, len(reads)  # 120 before
        started = asyncio.get_running_loop().time()
        await a.produce("pings", b"p1", partition=0)
        got = await asyncio.gather(*waiting[1:])
        assert asyncio.get_running_loop().time() - started < 0.5
        assert [[r.value for r in records] for records in got] == [[b"p1"]] * 5
        assert not waiting[0].done()  # "checks": nothing for it
        assert await waiting[0] == []
        for consumer in consumers:
            await consumer.close()
